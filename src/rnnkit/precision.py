"""Where and in what precision training runs: the device (CPU or a CUDA GPU), and fp32 or
bfloat16 autocast where the hardware runs bfloat16 natively."""

from __future__ import annotations

import contextlib
import functools

import torch

from rnnkit.config import check_device_name
from rnnkit.errors import UsageError


@functools.cache
def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX-512 BF16 or AMX). Without it oneDNN has no
    bf16 LSTM kernel at all, and bf16 matmuls are emulated, slower than fp32. Asked once:
    autocast() runs at every training step."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name: str) -> torch.device:
    """`auto`: the first CUDA GPU if torch sees one, else the CPU. An explicit `cuda` that is
    not there is a usage error, not a silent fallback."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: torch {torch.__version__} sees no CUDA GPU on "
                             "this machine; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) "
                             "are visible")
    return device


def evaluation_device(name: str) -> torch.device:
    """Where to evaluate a run trained with `--device name`: there if that device is here,
    else on the CPU (a GPU run evaluates anywhere; the metrics agree to float rounding)."""
    try:
        return resolve_device(name)
    except UsageError:
        return torch.device("cpu")


def bf16_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bf16_supported()


def autocast(precision: str, device: torch.device | None = None
             ) -> contextlib.AbstractContextManager:
    """bf16: matmuls and the RNN run in bfloat16 (oneDNN on CPU, cuDNN on GPU); weights and the
    loss stay fp32. Without native bf16 it falls back to fp32 (train() says so once)."""
    device = device or torch.device("cpu")
    if precision == "bf16" and bf16_available(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
