"""Training in several processes with torch.distributed (`torchrun`, or `rnnkit train --nproc`).

Each process holds the whole model and a share of every global batch; `--batch-size` is per
process, so the global batch is batch_size x world size. The shares are cut so that N
processes compute what one process computes with the global batch:

- language models (fairseq's truncated-BPTT sharding): the training text is batchified into
  batch_size x world streams and process r takes its own contiguous block of streams,
  carrying its own hidden state; every window has the same tokens in every process;
- classifiers: every process builds the same length-bucketed plan of global batches (by seed
  and epoch, no broadcast) and takes its part of each batch.

Each process's loss is weighted by its share of the batch's examples or tokens and the
gradients are summed across processes, so the update is the global batch's mean gradient,
a ragged last batch included. Dropout draws per process (seeded by rank), so equality with
one process holds for dropout 0. Everything a process decides on its own clock (time budget,
time-based checkpoints, the learning rate of a time-budgeted schedule) is agreed on through
the same per-step reduction, so the processes never part ways. Only rank 0 writes the run
directory and prints; every process evaluates the whole validation split (same weights, same
numbers).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

from rnnkit.errors import UsageError


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Whether this process was started by torchrun (or another torch.distributed launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def restarted() -> bool:
    """Whether torchrun restarted this worker group after a failure (--max-restarts)."""
    return launched() and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def init_from_environment(device: str = "auto") -> None:
    """Join the process group torchrun describes in the environment: gloo on the CPU, NCCL
    when this process trains on a CUDA GPU (one GPU per process, LOCAL_RANK)."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise UsageError("this torch build has no torch.distributed; train in one process")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def backend() -> str:
    return dist.get_backend() if active() else "none"


def barrier() -> None:
    if active():
        dist.barrier()


def sum_floats(values: Sequence[float]) -> list[float]:
    """The sums of `values` over all processes (float64, identical in every process)."""
    if not active():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def sum_gradients(model: nn.Module) -> None:
    """Sum every trainable parameter's gradient over the processes (a missing gradient counts
    as zeros), in one flat buffer per dtype and device."""
    if not active():
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        elif p.grad.is_sparse:
            raise UsageError("sparse gradients (the n-gram branch) cannot be trained in "
                             "several processes; set --ngram-order 0 or train in one")
    groups: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset: offset + n].view_as(g))
            offset += n


def gather_objects(value: object) -> list[object]:
    """`value` of every process, by rank (a one-element list in one process)."""
    if not active():
        return [value]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
