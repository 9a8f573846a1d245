"""Export a classifier run to ONNX and compare ONNX Runtime with `rnnkit predict` on real
test reviews.

    python benchmarks/export_check.py runs/imdb-best7 /tmp/best7.onnx [--reviews 64]

Prints the export's wall time, the file size, and the largest difference in any class
probability over the first N reviews of the run's test file (one padded batch; a run with the
n-gram branch gets each whole review's hashed features as the `ngrams`/`owner` inputs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rnnkit.classification import collate
from rnnkit.data.readers import read_labeled
from rnnkit.data.sources import Sources
from rnnkit.data.splits import encode_texts
from rnnkit.export import export_run
from rnnkit.predict import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument("--reviews", type=int, default=64)
    args = parser.parse_args()
    started = time.monotonic()
    export_run(args.run, "onnx", args.out)
    seconds = time.monotonic() - started
    predictor = Predictor.load(args.run)
    data = predictor.cfg.data
    test = Sources.of(data, ("test",)).get("test")
    texts = read_labeled(test, data.text_field, data.label_field, data.encoding).texts
    texts = list(texts[: args.reviews])
    full = encode_texts(texts, data, predictor.vocab, max_len=0)
    grams = ([predictor.ngrams.features(a) for a in full] if predictor.ngrams is not None
             else None)
    batch = collate(full, predictor.vocab.pad_id, ngrams=grams)
    feed = {"ids": batch.ids.numpy(), "lengths": batch.lengths.numpy()}
    if batch.ngrams is not None:
        feed.update(ngrams=batch.ngrams[0].numpy(), owner=batch.ngrams[1].numpy())
    session = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    got = session.run(None, feed)[0]
    diff = float(np.abs(got - predictor.probabilities(texts)).max())
    print(f"exported {args.run} -> {args.out}: {Path(args.out).stat().st_size / 1e6:.0f} MB in "
          f"{seconds:.1f} s; {len(texts)} test texts of up to {max(map(len, full)):,} tokens: "
          f"largest probability difference {diff:.1e}")


if __name__ == "__main__":
    main()
