"""Shared benchmark helpers: machine facts, the matmul peak, alternating timed rounds."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from rnnkit.precision import bf16_supported


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"cpu": cpu, "isa": torch.backends.cpu.get_cpu_capability(),
           "bf16": bf16_supported(),
           "cores": os.cpu_count(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "python": platform.python_version(),
           "ld_preload": os.environ.get("LD_PRELOAD", "")}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(m: int, k: int, n: int, repeats: int = 20,
                device: torch.device = torch.device("cpu")) -> float:
    """Float32 GFLOP/s of an (m x k) @ (k x n) matmul: the best of `repeats` timings, since it
    serves as a ceiling (on a shared machine the median drifts with the neighbours' load)."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / min(times) / 1e9


def matmul_peak(size: int = 1024, repeats: int = 50,
                device: torch.device = torch.device("cpu")) -> float:
    """Achieved float32 GFLOP/s of a square matmul: the ceiling to compare against. (On a GPU,
    TF32 settings apply as torch has them: off by default for matmuls.)"""
    if device.type == "cuda":
        size = max(size, 8192)  # a GPU needs a large product to reach its rate
    return matmul_rate(size, size, size, repeats, device)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def alternate(variants: dict[str, Callable[[], int]], rounds: int, warmup: int = 1
              ) -> dict[str, dict]:
    """Run each variant's `work()` (returns items done) in turn, `rounds` times after warm-up;
    report median items/s per variant and the process peak RSS after its warm-up."""
    rates: dict[str, list[float]] = {name: [] for name in variants}
    rss: dict[str, float] = {}
    for name, work in variants.items():
        for _ in range(warmup):
            work()
        rss[name] = peak_rss_mib()
    for _ in range(rounds):
        for name, work in variants.items():
            start = time.perf_counter()
            items = work()
            rates[name].append(items / (time.perf_counter() - start))
    return {name: {"rate": statistics.median(r), "rates": r, "peak_rss_mib": rss[name]}
            for name, r in rates.items()}


def print_table(title: str, unit: str, rows: list[dict], reference: str) -> None:
    base = next(r["rate"] for r in rows if r["name"] == reference)
    print(f"\n{title}")
    print(f"| variant | {unit} | vs reference | GFLOP/s | % of matmul peak | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        gflops = r.get("gflops")
        peak = r.get("peak")
        print(f"| {r['name']} | {r['rate']:,.0f} | {r['rate'] / base:.2f}x | "
              f"{'' if gflops is None else f'{gflops:.1f}'} | "
              f"{'' if gflops is None else f'{100 * gflops / peak:.0f}%'} | "
              f"{r['peak_rss_mib']:,.0f} |")


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1))
