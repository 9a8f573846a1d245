"""The training loop, shared by classifiers and language models.

A task object supplies what differs: the epoch's batches, the loss of one batch (and, for
language models, the recurrent state carried to the next), and evaluation. The loop owns the
rest: optimizer, learning-rate schedule, gradient clipping, validation each epoch, early
stopping, checkpoints, the time budget and exact resume.

Resume is exact: the epoch's batch order comes from (seed, epoch); the torch RNG (dropout),
the optimizer, the position inside the epoch and the carried LM state are saved in
`trainer.pt`, so an interrupted run continues as if it never stopped.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from rnnkit.config import RunConfig
from rnnkit.errors import UsageError
from rnnkit.plots import plot_curve
from rnnkit.precision import bf16_available, resolve_device
from rnnkit.rundir import RunDir


class Task(Protocol):
    metric: str
    higher_is_better: bool

    def build_model(self) -> nn.Module: ...
    def prepare(self, model: nn.Module) -> None: ...
    def train_batches(self, epoch: int) -> list[Any]: ...
    def train_step(self, model: nn.Module, batch: Any, state: Any) -> tuple[torch.Tensor, int, Any]: ...
    def evaluate(self, model: nn.Module, split: str) -> dict: ...


class NonFiniteLoss(UsageError):
    pass


@dataclass
class Progress:
    """What `trainer.pt` holds besides tensors' owners."""

    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # next batch index inside the epoch
    step: int = 0  # optimizer steps so far
    best: float | None = None
    bad_epochs: int = 0
    lr: float = 0.0
    elapsed: float = 0.0  # seconds of training so far, over all sessions
    finished: bool = False
    history: list[dict] = field(default_factory=list)


class Optimizers:
    """The main optimizer and, for sparse tables (sparse embeddings), Adagrad: it updates only
    the rows a batch touched. The learning-rate schedule drives the main one."""

    def __init__(self, main: torch.optim.Optimizer, sparse: torch.optim.Optimizer | None):
        self.main, self.sparse = main, sparse
        self.param_groups = main.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in (self.main, self.sparse):
            if opt is not None:
                opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.main.step()
        if self.sparse is not None:
            self.sparse.step()

    def state_dict(self) -> dict:
        return {"main": self.main.state_dict(),
                "sparse": self.sparse.state_dict() if self.sparse is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.main.load_state_dict(state["main"])
        if self.sparse is not None:
            self.sparse.load_state_dict(state["sparse"])


def _is_sparse(model: nn.Module, param: nn.Parameter) -> bool:
    return any(isinstance(m, nn.Embedding) and m.sparse and m.weight is param
               for m in model.modules())


def make_optimizer(model: nn.Module, cfg: RunConfig) -> Optimizers:
    params = [p for p in model.parameters() if p.requires_grad]
    sparse = [p for p in params if _is_sparse(model, p)]
    dense = [p for p in params if not any(p is q for q in sparse)]
    t = cfg.train
    kind = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}.get(t.optimizer, torch.optim.Adam)
    try:
        # One fused kernel for all parameters: the same update, a third of the time of the
        # per-tensor loop for a small model (0.22 against 0.62 ms for imdb-seed's Adam step).
        main = kind(dense, lr=t.lr, weight_decay=t.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        main = kind(dense, lr=t.lr, weight_decay=t.weight_decay)
    if not sparse:
        return Optimizers(main, None)
    torch.sparse.check_sparse_tensor_invariants.disable()  # torch's own gradients: valid
    return Optimizers(main, torch.optim.Adagrad(sparse, lr=t.sparse_lr))


def clip_gradients(model: nn.Module, max_norm: float) -> None:
    """Exploding gradients are the classic RNN failure: cap the global norm of the dense
    gradients (sparse n-gram tables are linear and left alone)."""
    grads = [p for p in model.parameters() if p.grad is not None and not p.grad.is_sparse]
    nn.utils.clip_grad_norm_(grads, max_norm)


def epoch_lr(cfg: RunConfig, epoch: int, current: float) -> float:
    """Learning rate at the start of `epoch` for the per-epoch schedules."""
    t = cfg.train
    if t.schedule == "step":
        # Zaremba: full rate for `decay_start` epochs, then times lr_decay each epoch.
        return t.lr * t.lr_decay ** max(0, epoch + 1 - t.decay_start)
    if t.schedule == "plateau":
        return current or t.lr
    return t.lr


def cosine_lr(cfg: RunConfig, step: int, total_steps: int) -> float:
    return cfg.train.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between batches, so a stop always leaves a
    consistent checkpoint."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupt":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop = True
        print("\nstopping after this batch (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(run: RunDir, cfg: RunConfig, task: Task, resume: bool = False,
          max_steps: int = 0, log: Any = print, log_every: int = 0) -> dict:
    """Train until the schedule ends, early stopping, the time budget or an interrupt.

    Returns the final progress record. `max_steps` (tests) stops after that many updates as if
    interrupted.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    if device.type == "cuda":
        log(f"training on {device} ({torch.cuda.get_device_name(device)})")
    if cfg.train.precision == "bf16" and not bf16_available(device):
        needs = ("compute capability 8.0 or later" if device.type == "cuda"
                 else "AVX-512 BF16 or AMX")
        log(f"note: this {'GPU' if device.type == 'cuda' else 'CPU'} has no native bfloat16 "
            f"({needs}); --precision bf16 falls back to fp32")
    model = task.build_model()
    saved = run.load_trainer() if resume else None
    if saved is None:
        task.prepare(model)  # pretrained rows, n-gram ratios (a resume loads them instead)
    model.to(device)  # before the optimizer: its state follows the parameters' device
    optimizer = make_optimizer(model, cfg)
    progress = Progress(lr=cfg.train.lr)
    state: Any = None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        progress = Progress(**saved["progress"])
        state = tuple(s.to(device) for s in saved["state"]) if saved.get("state") else None
        torch.set_rng_state(saved["rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        if progress.finished:
            log(f"{run.path}: training already finished; nothing to resume")
            return progress.__dict__
        log(f"resuming at epoch {progress.epoch + 1}, batch {progress.batch}")
    elif resume:
        raise UsageError(f"{run.path}: nothing to resume (no trainer.pt)")

    def checkpoint() -> None:
        run.save_trainer({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "progress": progress.__dict__, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "state": list(state) if state is not None else None,
        })

    budget = cfg.train.max_minutes * 60
    clock = time.monotonic() - progress.elapsed
    steps_total = cfg.train.epochs * len(task.train_batches(0))
    stop_reason = ""
    with _Interrupt() as interrupt:
        while progress.epoch < cfg.train.epochs and not stop_reason:
            epoch = progress.epoch
            batches = task.train_batches(epoch)
            if progress.batch == 0:
                torch.manual_seed(cfg.train.seed * 1000 + epoch)
                progress.lr = epoch_lr(cfg, epoch, progress.lr)
                state = None
            model.train()
            totals = [0.0, 0]  # summed token/example loss, count
            started = time.monotonic()
            bar = tqdm(total=len(batches), initial=progress.batch, desc=f"epoch {epoch + 1}",
                       leave=False, disable=None, file=sys.stderr)
            report_every = log_every or max(1, len(batches) // 10)
            for index in range(progress.batch, len(batches)):
                lr = (cosine_lr(cfg, progress.step, steps_total) if cfg.train.schedule == "cosine"
                      else progress.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, count, state = task.train_step(model, batches[index], state)
                if not torch.isfinite(loss):
                    kept = (f"the last good checkpoint is kept in {run.trainer_path}"
                            if run.trainer_path.exists() else "no checkpoint was written yet")
                    raise NonFiniteLoss(
                        f"non-finite loss at epoch {epoch + 1}, step {progress.step + 1}; "
                        f"{kept} (try a lower --lr or a --clip)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.train.clip:
                    clip_gradients(model, cfg.train.clip)
                optimizer.step()
                progress.step += 1
                progress.batch = index + 1
                token_loss = getattr(task, "token_loss", float)(loss.detach())
                totals[0] += token_loss * count
                totals[1] += count
                rate = totals[1] / max(1e-9, time.monotonic() - started)
                bar.update(1)
                if index % 20 == 0:
                    bar.set_postfix(_live(task, totals, rate), refresh=False)
                if (bar.disable or log_every) and (index + 1) % report_every == 0:
                    log(f"epoch {epoch + 1} {index + 1}/{len(batches)} "
                        + " ".join(f"{k} {v}" for k, v in _live(task, totals, rate).items()),
                        flush=True)
                progress.elapsed = time.monotonic() - clock
                if interrupt.stop:
                    stop_reason = "interrupted"
                elif budget and progress.elapsed >= budget:
                    stop_reason = f"time budget of {cfg.train.max_minutes:g} min reached"
                elif max_steps and progress.step >= max_steps:
                    stop_reason = f"stopped after {max_steps} steps"
                if stop_reason and progress.batch < len(batches):
                    break
            bar.close()
            if progress.batch < len(batches):  # stopped inside the epoch
                checkpoint()
                if not run.weights_path.exists():
                    run.save_weights(model)  # something to evaluate and predict with
                break
            train_loss = totals[0] / max(1, totals[1])
            metrics = task.evaluate(model, "valid")
            value = metrics[task.metric]
            improved = progress.best is None or (
                value > progress.best if task.higher_is_better else value < progress.best)
            if improved:
                progress.best, progress.bad_epochs = value, 0
                run.save_weights(model)
            else:
                progress.bad_epochs += 1
                if cfg.train.schedule == "plateau":
                    progress.lr *= cfg.train.lr_decay
            record = {"epoch": epoch + 1, "step": progress.step, "lr": lr,
                      "train_loss": train_loss, "valid_loss": metrics["loss"],
                      f"valid_{task.metric}": value,
                      "seconds": round(time.monotonic() - clock, 1)}
            if task.metric == "perplexity":
                record["train_perplexity"] = math.exp(min(train_loss, 700))
            progress.history.append(record)
            run.append_metrics(record)
            log(f"epoch {epoch + 1}: train loss {train_loss:.4f}  valid {task.metric} "
                f"{value:.4f}{'  (best)' if improved else ''}  lr {lr:.4g}  "
                f"{record['seconds']:.0f}s", flush=True)
            progress.epoch, progress.batch = epoch + 1, 0
            if cfg.train.patience and progress.bad_epochs >= cfg.train.patience:
                stop_reason = f"early stop: no improvement for {progress.bad_epochs} epochs"
            if progress.epoch >= cfg.train.epochs or stop_reason.startswith("early"):
                progress.finished = True
            checkpoint()
            plot_curve(progress.history, task.metric, run.curve_path)
    if stop_reason:
        log(f"{stop_reason}; resume with `rnnkit train --resume {run.path}`"
            if not progress.finished else stop_reason)
    return progress.__dict__


def _live(task: Task, totals: list, rate: float) -> dict[str, str]:
    loss = totals[0] / max(1, totals[1])
    unit = "tok/s" if task.metric == "perplexity" else "ex/s"
    out = {"loss": f"{loss:.3f}", unit: f"{rate:,.0f}"}
    if task.metric == "perplexity":
        out["ppl"] = f"{math.exp(min(loss, 700)):.1f}"
    return out
