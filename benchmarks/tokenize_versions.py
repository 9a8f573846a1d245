"""The `basic` tokenizer of this rnnkit against an older one, side by side in one process.

    python benchmarks/tokenize_versions.py --old-src ../rnnkit-0.2.0/src [--texts 25000]

Both versions' functions run on the same lowercased IMDB training reviews, interleaved, five
passes each (median), so that the process itself (which can shift a whole run's speed by a
few per cent) is the same for both. Rows: whole reviews, and the cuts imdb-seed (250, tail)
and imdb-best (400, head+tail) read at prediction. `--old-src` is a source tree of rnnkit
0.2.0 (`rnnkit/tokenize.py`) or of 0.3.0 or later (`rnnkit/data/tokenizers/basic.py`).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.data.sources import resolve  # noqa: E402
from rnnkit.data.tokenizers import basic as new  # noqa: E402


def old_functions(src: Path):
    """(whole, kept) of the old tree's basic tokenizer, loaded from its file."""
    for rel, whole, kept in (("rnnkit/tokenize.py", "_basic", "_basic_kept"),
                             ("rnnkit/data/tokenizers/basic.py", "basic", "basic_kept")):
        path = src / rel
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"old_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return getattr(module, whole), getattr(module, kept)
    raise SystemExit(f"{src}: no rnnkit/tokenize.py or rnnkit/data/tokenizers/basic.py")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-src", type=Path, required=True)
    parser.add_argument("--texts", type=int, default=25000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    old_whole, old_kept = old_functions(args.old_src)
    with gzip.open(resolve("imdb", "train"), "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"].lower() for _, line in zip(range(args.texts), f)]
    rows = {"whole reviews": (old_whole, new.basic),
            "cut 250 tail": (lambda t: old_kept(t, 250, "tail"),
                             lambda t: new.basic_kept(t, 250, "tail")),
            "cut 400 head+tail": (lambda t: old_kept(t, 400, "head+tail"),
                                  lambda t: new.basic_kept(t, 400, "head+tail"))}
    print(f"rnnkit {rnnkit.__version__} against {args.old_src}; {machine().get('cpu', '')}")
    print(f"{'basic':<20}{'old texts/s':>12}{'new texts/s':>12}{'new / old':>11}")
    for name, (old, fresh) in rows.items():
        if [old(t) for t in texts[:500]] != [fresh(t) for t in texts[:500]]:
            print(f"{name}: the two versions give different tokens")
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.repeat):
            for key, fn in (("old", old), ("new", fresh)):
                start = time.perf_counter()
                for t in texts:
                    fn(t)
                times[key].append(time.perf_counter() - start)
        rate = {k: len(texts) / statistics.median(v) for k, v in times.items()}
        print(f"{name:<20}{rate['old']:>12,.0f}{rate['new']:>12,.0f}"
              f"{rate['new'] / rate['old']:>11.3f}")


if __name__ == "__main__":
    main()
