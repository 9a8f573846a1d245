"""Numeric precision of training: fp32, or bfloat16 autocast where the CPU supports it."""

from __future__ import annotations

import contextlib
import functools

import torch


@functools.cache
def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX-512 BF16 or AMX). Without it oneDNN has no
    bf16 LSTM kernel at all, and bf16 matmuls are emulated, slower than fp32. Asked once:
    autocast() runs at every training step."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """bf16: matmuls and the RNN run in bfloat16 on CPU; weights and the loss stay fp32. On a
    CPU without native bf16 it falls back to fp32 (train() says so once)."""
    if precision == "bf16" and bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
