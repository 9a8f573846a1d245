"""A native LSTM recurrence for small hidden sizes on CPU, compiled when rnnkit is installed.

oneDNN's fused LSTM runs the recurrent product of a small model (24 x 64 @ 64 x 256 for
imdb-seed) at a fraction of the machine's speed, and autograd computes the gradient of its
input even when that input is a frozen embedding. `lstm_layer` keeps only the step-by-step
part in C (lstm.c): the product with the inputs, the weight gradients and the input gradient
are whole-sequence matrix products done by torch, the input gradient only when needed. Rows of
the batch run on separate threads (torch's own OpenMP pool) for the whole sequence.

Installing rnnkit compiles lstm.c into a library beside this file (`_lstm.<python tag>.so`,
an optional extension in setup.py: an install without a C compiler still succeeds). The
library holds plain-C, AVX2+FMA and AVX-512F versions of the loops; the widest one the CPU
runs is used, or the one RNNKIT_NATIVE_ISA=plain|avx2|avx512 names; `variant()` says which.
Nothing is compiled at run time, and the library is loaded from this package's folder only,
and only when it is a regular file (not a symbolic link) owned by the current user or root,
and neither it nor the folder is writable by group or others.

Where the library is missing, refused, does not load, or RNNKIT_NATIVE=0, `available()` is
False and the encoder uses nn.LSTM: same function, same parameters. The first time the kernel
is asked for (an input it would serve, or `available()`), one line on stderr (logger
"rnnkit.kernels", level WARNING) says why it is off; inputs it never serves (larger layers,
GPUs, bf16) do not ask.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import logging
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger("rnnkit.kernels")

PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARY_NAME = "_lstm"  # setup.py's Extension("rnnkit.kernels._lstm")
MAX_HIDDEN = 96  # above this torch's kernels are as fast (measured: 1.33x at 64, 1.0x at 128)
VARIANTS = ("plain", "avx2", "avx512")  # position = the variant's number in lstm.c

_lock = threading.Lock()


@dataclass
class _Kernel:
    """What loading found, once per process: the library and the variant in use, or why
    there is none."""
    lib: ctypes.CDLL | None = None
    variant: str | None = None
    supported: tuple[str, ...] = ()
    path: Path | None = None
    reason: str | None = None  # why the fast path is off
    notes: list[str] = field(default_factory=list)


_kernel: _Kernel | None = None


def library_path(folder: Path | None = None) -> Path | None:
    """The installed library in `folder` (the package's), whatever its state; None if the
    install did not build it."""
    folder = PACKAGE_DIR if folder is None else folder
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / (LIBRARY_NAME + suffix)
        if os.path.lexists(path):
            return path
    return None


def _unsafe(st: os.stat_result, what: str) -> str | None:
    if st.st_uid not in (os.geteuid(), 0):
        return f"{what} is owned by uid {st.st_uid}, neither this user nor root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def refusal(path: Path, folder: Path | None = None) -> str | None:
    """Why the library at `path` must not be loaded, or None when it may be: it must be a
    regular file (not a symbolic link) directly in `folder` (the package's), and the file and
    the folder must be owned by this user or root and writable by no one else."""
    folder = (PACKAGE_DIR if folder is None else folder).resolve()
    if Path(os.path.abspath(path)).parent.resolve() != folder:
        return "it is not in rnnkit's package folder"
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return "it is a symbolic link"
        if not stat.S_ISREG(st.st_mode):
            return "it is not a regular file"
        return _unsafe(st, "it") or _unsafe(os.stat(folder), "its folder")
    except OSError as exc:
        return f"it cannot be checked ({exc.strerror})"


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    lib.rk_variants.argtypes, lib.rk_variants.restype = [], i32
    lib.rk_vector_width.argtypes, lib.rk_vector_width.restype = [i32], i32
    lib.rk_lstm_forward.argtypes = [i32] * 4 + [ptr] * 6 + [i32]
    lib.rk_lstm_backward.argtypes = [i32] * 4 + [ptr] * 9 + [i32]
    lib.rk_lstm_forward.restype = lib.rk_lstm_backward.restype = i32
    return lib


def _choose(supported: tuple[str, ...], notes: list[str]) -> str:
    """The variant to use: RNNKIT_NATIVE_ISA's where this CPU runs it, else the widest."""
    best = supported[-1]
    wanted = os.environ.get("RNNKIT_NATIVE_ISA", "").strip().lower()
    if wanted in ("", "auto") or wanted == best:
        return best
    if wanted in supported:
        return wanted
    why = "is not one of " + ", ".join(VARIANTS) if wanted not in VARIANTS else \
        "is not supported by this CPU"
    notes.append(f"rnnkit: RNNKIT_NATIVE_ISA={wanted} {why}; the native LSTM kernel uses "
                 f"{best}")
    return best


def _load(folder: Path | None = None) -> _Kernel:
    folder = PACKAGE_DIR if folder is None else folder
    kernel = _Kernel()
    if os.environ.get("RNNKIT_NATIVE", "1") == "0":
        kernel.reason = "it is disabled (RNNKIT_NATIVE=0)"
        return kernel
    path = kernel.path = library_path(folder)
    if path is None:
        kernel.reason = (f"no library was built in {folder} when rnnkit was installed (was a "
                         "C compiler missing?); reinstall with gcc present")
        return kernel
    refused = refusal(path, folder)
    if refused is not None:
        kernel.reason = f"refused to load {path}: {refused}"
        return kernel
    try:
        lib = _declare(ctypes.CDLL(str(path)))
        mask = lib.rk_variants()
    except (OSError, AttributeError) as exc:
        kernel.reason = f"{path} failed to load ({exc})"
        return kernel
    kernel.supported = tuple(v for i, v in enumerate(VARIANTS) if mask & (1 << i))
    if not kernel.supported:
        kernel.reason = f"{path} runs none of its variants on this CPU"
        return kernel
    kernel.lib = lib
    kernel.variant = _choose(kernel.supported, kernel.notes)
    return kernel


def _state() -> _Kernel:
    """Load the library once per process, saying once why the fast path is off."""
    global _kernel
    kernel = _kernel
    if kernel is None:
        with _lock:
            if _kernel is None:
                kernel = _load()
                if kernel.reason is not None:
                    log.warning("rnnkit: native LSTM kernel off, using torch's LSTM: %s",
                                kernel.reason)
                for note in kernel.notes:
                    log.warning("%s", note)
                _kernel = kernel
            kernel = _kernel
    return kernel


def library() -> ctypes.CDLL | None:
    """The installed kernel library, loaded once per process; None where it is off."""
    return _state().lib


def available() -> bool:
    return library() is not None


def variant() -> str | None:
    """The variant `lstm_layer` uses ("avx512", "avx2" or "plain"); None when it is off."""
    return _state().variant


def variants() -> tuple[str, ...]:
    """The variants this CPU runs, narrowest first; empty when the kernel is off."""
    return _state().supported


def usable(x: torch.Tensor, hidden_size: int) -> bool:
    """Whether `lstm_layer` serves this input: CPU float32 without autocast, small hidden, and
    not while tracing or compiling (ONNX export, torch.jit, torch.compile see nn.LSTM: a
    foreign C call cannot be recorded)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and hidden_size <= MAX_HIDDEN
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and not torch.onnx.is_in_onnx_export()
            and not torch.compiler.is_compiling() and available())


def _p(t: torch.Tensor) -> int:
    return t.data_ptr()


def _call(status: int, variant: str) -> None:
    if status < 0:
        raise RuntimeError(f"the native LSTM kernel cannot run variant {variant!r} here")


class _LSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lib, variant):  # type: ignore[override]
        B, T, _ = x.shape
        H = w_hh.shape[1]
        number = VARIANTS.index(variant)
        gates = torch.addmm(b_ih + b_hh, x.reshape(B * T, -1), w_ih.t()).view(B, T, 4 * H)
        out, cs = x.new_empty(B, T, H), x.new_empty(B, T, H)
        w_t = w_hh.t().contiguous()
        _call(lib.rk_lstm_forward(number, B, T, H, _p(gates), _p(w_t), _p(h0), _p(c0),
                                  _p(out), _p(cs), torch.get_num_threads()), variant)
        ctx.lib, ctx.number, ctx.variant = lib, number, variant
        ctx.save_for_backward(x, w_ih, w_hh, h0, c0, gates, out, cs)
        return out, out[:, -1].clone(), cs[:, -1].clone()

    @staticmethod
    def backward(ctx, d_out, d_h, d_c):  # type: ignore[override]
        x, w_ih, w_hh, h0, c0, gates, out, cs = ctx.saved_tensors
        B, T, H = out.shape
        d_out = d_out.contiguous()
        dh = d_h.clone(memory_format=torch.contiguous_format)  # the kernel overwrites them
        dc = d_c.clone(memory_format=torch.contiguous_format)
        dgates = torch.empty_like(gates)
        work = torch.empty_like(dh)
        w = w_hh.contiguous()
        _call(ctx.lib.rk_lstm_backward(ctx.number, B, T, H, _p(gates), _p(w), _p(c0), _p(cs),
                                       _p(d_out), _p(dgates), _p(dh), _p(dc), _p(work),
                                       torch.get_num_threads()), ctx.variant)
        flat = dgates.view(B * T, 4 * H)
        needs = ctx.needs_input_grad
        d_x = (flat @ w_ih).view_as(x) if needs[0] else None
        d_wih = flat.t() @ x.reshape(B * T, -1) if needs[1] else None
        d_whh = None
        if needs[2]:
            h_prev = torch.cat([h0.unsqueeze(1), out[:, :-1]], 1).view(B * T, H)
            d_whh = flat.t() @ h_prev
        d_b = flat.sum(0) if needs[3] or needs[4] else None
        return (d_x, d_wih, d_whh, d_b if needs[3] else None, d_b if needs[4] else None,
                dh if needs[5] else None, dc if needs[6] else None, None, None)


def _check(name: str, t: object, shape: tuple[int, ...], layout: str) -> None:
    """A clear ValueError unless `t` is a contiguous CPU float32 tensor of `shape`: the C code
    reads and writes raw memory by these sizes."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"lstm_layer: {name} must be a tensor, not {type(t).__name__}")
    if t.dtype != torch.float32:
        raise ValueError(f"lstm_layer: {name} must be float32, not {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"lstm_layer: {name} must be on the CPU, not {t.device}")
    if tuple(t.shape) != shape:
        raise ValueError(f"lstm_layer: {name} must have shape {layout} = {shape}, "
                         f"not {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"lstm_layer: {name} must be contiguous (call .contiguous())")


def lstm_layer(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
               b_hh: torch.Tensor, h0: torch.Tensor | None = None,
               c0: torch.Tensor | None = None, variant: str | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch-first LSTM layer, as nn.LSTM's: x (B, T, I) -> outputs (B, T, H), h_T, c_T
    (B, H each), from the state h0, c0 (B, H each; zeros if None). Every tensor must be
    contiguous CPU float32 of nn.LSTM's shapes (ValueError otherwise); `variant` picks one of
    `variants()` (default `variant()`). Check `usable` first."""
    kernel = _state()
    if kernel.lib is None:
        raise RuntimeError(f"the native LSTM kernel is off: {kernel.reason}")
    variant = kernel.variant if variant is None else variant
    if variant not in kernel.supported:
        raise ValueError(f"lstm_layer: variant {variant!r} is not one this CPU runs "
                         f"({', '.join(kernel.supported)})")
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError("lstm_layer: x must be a 3-dimensional (B, T, I) tensor")
    if not isinstance(w_hh, torch.Tensor) or w_hh.dim() != 2:
        raise ValueError("lstm_layer: w_hh must be a 2-dimensional (4H, H) tensor")
    B, T, I = x.shape
    H = w_hh.shape[1]
    if T < 1:
        raise ValueError("lstm_layer: x must have at least one time step")
    if H < 1:
        raise ValueError("lstm_layer: w_hh must have at least one unit (H >= 1)")
    if max(B, T, I, 4 * H) >= 2 ** 31:
        raise ValueError(f"lstm_layer: sizes B={B}, T={T}, I={I}, H={H} exceed a C int")
    if h0 is None:
        h0 = x.new_zeros(B, H)
    if c0 is None:
        c0 = x.new_zeros(B, H)
    for name, t, shape, layout in (("x", x, (B, T, I), "(B, T, I)"),
                                   ("w_hh", w_hh, (4 * H, H), "(4H, H)"),
                                   ("w_ih", w_ih, (4 * H, I), "(4H, I)"),
                                   ("b_ih", b_ih, (4 * H,), "(4H,)"),
                                   ("b_hh", b_hh, (4 * H,), "(4H,)"),
                                   ("h0", h0, (B, H), "(B, H)"),
                                   ("c0", c0, (B, H), "(B, H)")):
        _check(name, t, shape, layout)
    return _LSTMLayer.apply(x, w_ih, w_hh, b_ih, b_hh, h0, c0, kernel.lib, variant)
