"""Corpora bigger than memory, and training in one and two processes.

    python benchmarks/scale.py [--tokens 50000000] [--steps 150] [--json out.json]

Makes a plain-text corpus of at least `--tokens` tokens from IMDB's reviews in the mirror (the
training and unlabelled reviews, repeated as needed, one review a line) in a temporary
folder, then reports:
- preparation, first run: reading, tokenizing and caching the corpus into memory-mapped ids
  and building the vocabulary (`rnnkit.data.splits.load_corpus`, a fresh RNNKIT_HOME), in a
  process of its own: wall time, tokens/s and the peak resident memory the OS reports for it;
- the second run: the same, reading the cache (start-up time and peak memory);
- LM training speed: `rnnkit train --preset lm --softmax adaptive` (adaptive softmax, bf16
  where the CPU has it) on that corpus for `--steps` optimizer steps, in 1 process and in 2
  (`--nproc 2`, the same global batch), one torch thread per process, tokens/s over the
  steps after the first tenth.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.data.sources import resolve  # noqa: E402

PREPARE = """
import json, sys, time
from rnnkit.config import DataConfig
from rnnkit.data.splits import load_corpus
start = time.perf_counter()
data = load_corpus(DataConfig(train=sys.argv[1], tokenizer="basic", max_vocab=50000),
                   ("train", "valid"))
print(json.dumps({"seconds": time.perf_counter() - start,
                  "tokens": sum(len(t) for t in data.splits.values()),
                  "vocab": len(data.vocab)}))
"""


def make_corpus(path: Path, tokens: int) -> int:
    """Write IMDB reviews (train, then unlabelled, repeated) one per line until the corpus
    holds `tokens` whitespace-separated words or more; returns the words written."""
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < tokens:
            for split in ("train", "unsup"):
                with gzip.open(resolve("imdb", split), "rt", encoding="utf-8") as f:
                    for line in f:
                        text = " ".join(json.loads(line)["text"].split())
                        out.write(text + "\n")
                        written += text.count(" ") + 1
                        if written >= tokens:
                            return written
    return written


def run_child(command: list[str], env: dict) -> tuple[str, str, float, float]:
    """stdout, stderr, wall seconds and the child's own peak resident memory in GB (wait4's
    ru_maxrss, KiB on Linux)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} failed:\n{stderr[-2000:]}")
    return stdout, stderr, seconds, usage.ru_maxrss / 1024 ** 2


def train_speed(corpus: Path, home: Path, steps: int, nproc: int) -> float:
    """Tokens/s of `rnnkit train --preset lm` over the logged steps after the first tenth."""
    env = dict(os.environ, RNNKIT_HOME=str(home), OMP_NUM_THREADS="1")
    per = 32 // nproc
    command = [sys.executable, "-m", "rnnkit", "train", "--preset", "lm", "--train",
               str(corpus), "--softmax", "adaptive", "--tie-weights", "false",
               "--cutoffs", "2000,10000", "--precision", "bf16", "--batch-size", str(per),
               "--max-steps", str(steps), "--log-every", str(max(1, steps // 10)),
               "--report", "none", "--threads", "1", "--nproc", str(nproc),
               "--out", str(home / f"train-{nproc}p")]
    _, err, _, _ = run_child(command, env)
    rates = [float(m.replace(",", "")) for m in re.findall(r"tok/s ([\d,]+)", err)]
    if not rates:
        raise SystemExit(f"no speed in the training log:\n{err[-2000:]}")
    return rates[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=50_000_000)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rnnkit-scale-") as tmp:
        root = Path(tmp)
        corpus = root / "corpus.txt"
        words = make_corpus(corpus, args.tokens)
        home = root / "home"
        env = dict(os.environ, RNNKIT_HOME=str(home))
        prepare = [sys.executable, "-c", PREPARE, str(corpus)]
        rows = []
        for label in ("prepare (first run)", "start-up (cached)"):
            out, _, wall, peak = run_child(prepare, env)
            info = json.loads(out)
            rows.append({"step": label, "seconds": round(wall, 1),
                         "tokens_per_s": round(info["tokens"] / wall), "peak_rss_gb":
                         round(peak, 2), "tokens": info["tokens"], "vocab": info["vocab"]})
        speeds = {n: train_speed(corpus, home, args.steps, n) for n in (1, 2)}
    result = {"rnnkit": rnnkit.__version__, "machine": machine(), "corpus_words": words,
              "rows": rows, "train_tokens_per_s": speeds}
    print(f"rnnkit {rnnkit.__version__}; corpus of {words:,} words "
          f"({rows[0]['tokens']:,} tokens, vocabulary {rows[0]['vocab']:,})")
    print(f"{'':<22}{'seconds':>9}{'tokens/s':>13}{'peak RSS':>10}")
    for r in rows:
        print(f"{r['step']:<22}{r['seconds']:>9.1f}{r['tokens_per_s']:>13,}"
              f"{r['peak_rss_gb']:>8.2f} GB")
    for n, rate in speeds.items():
        print(f"LM training, {n} process{'es' if n > 1 else ''} x 1 thread: {rate:,.0f} tokens/s")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
