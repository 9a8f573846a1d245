"""A native LSTM recurrence for small hidden sizes on CPU, built on first use.

oneDNN's fused LSTM runs the recurrent product of a small model (24 x 64 @ 64 x 256 for
imdb-seed) at a fraction of the machine's speed, and autograd computes the gradient of its
input even when that input is a frozen embedding. `lstm_layer` keeps only the step-by-step
part in C (lstm.c): the product with the inputs, the weight gradients and the input gradient
are whole-sequence matrix products done by torch, the input gradient only when needed. Rows of
the batch run on separate threads (torch's own OpenMP pool) for the whole sequence.

The C file is compiled with the system's C compiler (`cc`, or $CC) for the host CPU the first
time it is needed and cached under $RNNKIT_HOME/kernels (default ~/.cache/rnnkit/kernels, or
the temporary folder where that is not writable) by a hash of the source, compiler, flags and
the CPU's feature flags. Without a compiler, or with RNNKIT_NATIVE=0,
`available()` is False and the encoder uses nn.LSTM as before: same function, same parameters.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("lstm.c")
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno")
MAX_HIDDEN = 96  # above this torch's kernels are as fast (measured: 1.33x at 64, 1.0x at 128)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def cache_dir() -> Path:
    home = os.environ.get("RNNKIT_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "rnnkit"
    return base / "kernels"


def _cpu_signature() -> str:
    """What -march=native compiles for: a library built on another CPU (a shared home
    folder) must not be loaded here."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def build(flags: tuple[str, ...] = FLAGS, directory: Path | None = None) -> Path | None:
    """Compile lstm.c (cached); the library's path, or None without a working compiler or a
    writable cache folder."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(flags).encode(),
                                     _cpu_signature().encode()])).hexdigest()[:16]
    folders = [directory] if directory else [cache_dir(),
                                             Path(tempfile.gettempdir()) / "rnnkit-kernels"]
    for folder in folders:
        target = folder / f"lstm-{key}.so"
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        except OSError:
            continue  # not writable: try the next folder
        os.close(fd)
        try:
            done = subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp, "-lm"],
                                  capture_output=True, timeout=120)
            if done.returncode != 0:
                return None
            os.replace(tmp, target)  # whole file or nothing, also with concurrent builders
            return target
        except (OSError, subprocess.SubprocessError):
            return None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return None


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    lib.rk_lstm_forward.argtypes = [i32, i32, i32] + [ptr] * 6 + [i32]
    lib.rk_lstm_backward.argtypes = [i32, i32, i32] + [ptr] * 9 + [i32]
    lib.rk_vector_width.restype = i32
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel, building it once per process; None where it cannot be built."""
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            if os.environ.get("RNNKIT_NATIVE", "1") != "0":
                path = build()
                try:
                    _lib = load(path) if path is not None else None
                except OSError:  # a library that does not load here: use torch's LSTM
                    _lib = None
            _tried = True
    return _lib


def available() -> bool:
    return library() is not None


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


class _LSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lib):  # type: ignore[override]
        B, T, _ = x.shape
        H = w_hh.shape[1]
        gates = torch.addmm(b_ih + b_hh, x.reshape(B * T, -1), w_ih.t()).view(B, T, 4 * H)
        out, cs = x.new_empty(B, T, H), x.new_empty(B, T, H)
        h0, c0 = h0.contiguous(), c0.contiguous()
        w_t = w_hh.t().contiguous()
        lib.rk_lstm_forward(B, T, H, _p(gates), _p(w_t), _p(h0), _p(c0), _p(out), _p(cs),
                            torch.get_num_threads())
        ctx.lib = lib
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
        ctx.lib.rk_lstm_backward(B, T, H, _p(gates), _p(w), _p(c0), _p(cs), _p(d_out),
                                 _p(dgates), _p(dh), _p(dc), _p(work), torch.get_num_threads())
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
                dh if needs[5] else None, dc if needs[6] else None, None)


def lstm_layer(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
               b_hh: torch.Tensor, h0: torch.Tensor | None = None,
               c0: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch-first LSTM layer, as nn.LSTM's: x (B, T, I) -> outputs (B, T, H), h_T, c_T
    (B, H each). Check `usable` first."""
    lib = library()
    assert lib is not None, "native LSTM kernel not available"
    B, H = x.shape[0], w_hh.shape[1]
    if h0 is None:
        h0 = x.new_zeros(B, H)
    if c0 is None:
        c0 = x.new_zeros(B, H)
    return _LSTMLayer.apply(x.contiguous(), w_ih, w_hh, b_ih, b_hh, h0, c0, lib)
