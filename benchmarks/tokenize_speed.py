"""Tokenizing speed of the English presets' tokenizers against a plain reference.

    python benchmarks/tokenize_speed.py [--texts 25000] [--repeat 3] [--json out.json]

Rows, on IMDB's training reviews (from the mirror or the cache):
- `reference`: one regex over the whole lowercased text, `\\w+(?:'\\w+)*|[^\\w\\s]` after
  dropping `<br />`, the plain way to write rnnkit's English `basic` tokenization;
- `basic`: rnnkit's default tokenizer, whole texts (every run reads them so once, cached);
- `basic, cut 250 tail` and `basic, cut 400 head+tail`: what imdb-seed and imdb-best read
  at prediction time (only the kept ends are tokenized);
- `whitespace` on PTB's training lines (the PTB presets).
Median of `--repeat` passes per row; tokens/s counts the tokens each row returns. Works
against rnnkit 0.2.0 (`rnnkit.tokenize`) too, for before/after rows: run it with that
version on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

import rnnkit  # noqa: E402

try:
    from rnnkit.data.sources import resolve  # 0.3.0
    from rnnkit.data.tokenizers import get_tokenizer
except ImportError:  # 0.2.0
    from rnnkit.datasets import resolve  # type: ignore[no-redef]
    from rnnkit.tokenize import get_tokenizer  # type: ignore[no-redef]

_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def reference(text: str) -> list[str]:
    return _WORD.findall(_BREAK.sub(" ", text.lower()))


def timed(fn, texts: list[str], repeat: int) -> tuple[float, int]:
    times, tokens = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        tokens = sum(len(fn(t)) for t in texts)
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=25000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    with gzip.open(resolve("imdb", "train"), "rt", encoding="utf-8") as f:
        reviews = [json.loads(line)["text"] for _, line in zip(range(args.texts), f)]
    ptb = Path(resolve("ptb", "train")).read_text(encoding="utf-8").splitlines()
    rows = []
    base, _ = timed(reference, reviews, args.repeat)
    for name, fn, texts in (
            ("reference (one regex)", reference, reviews),
            ("basic", get_tokenizer("basic"), reviews),
            ("basic, cut 250 tail", get_tokenizer("basic", True, 250, "tail"), reviews),
            ("basic, cut 400 head+tail", get_tokenizer("basic", True, 400, "head+tail"), reviews),
            ("whitespace (PTB lines)", get_tokenizer("whitespace", False), ptb)):
        seconds, tokens = timed(fn, texts, args.repeat)
        rows.append({"tokenizer": name, "texts": len(texts), "seconds": round(seconds, 3),
                     "texts_per_s": round(len(texts) / seconds), "tokens_per_s":
                     round(tokens / seconds), "vs_reference": round(base / seconds, 2)
                     if texts is reviews else None})
    out = {"rnnkit": rnnkit.__version__, "machine": machine(), "rows": rows}
    print(f"rnnkit {rnnkit.__version__}; {out['machine'].get('cpu', '')}")
    print(f"{'tokenizer':<28}{'texts/s':>10}{'tokens/s':>12}{'x reference':>13}")
    for r in rows:
        ratio = f"{r['vs_reference']:.2f}" if r["vs_reference"] is not None else "-"
        print(f"{r['tokenizer']:<28}{r['texts_per_s']:>10,}{r['tokens_per_s']:>12,}{ratio:>13}")
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
