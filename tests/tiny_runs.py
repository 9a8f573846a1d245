"""Tiny runs trained in-process in about a second, shared by the service, export and web tests."""

from __future__ import annotations

import os
import random
from pathlib import Path

from conftest import make_reviews
from rnnkit import api
from rnnkit.config import preset

TINY = dict(embedding_dim=16, hidden_size=16, batch_size=16, lr=0.01, min_freq=1, ngram_order=0)
SENTENCES = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "ran", "in", "the", "park"],
             ["the", "bird", "sang", "a", "song"]]


def _train(cfg, out: Path) -> Path:
    os.environ.setdefault("RNNKIT_HOME", str(out.parent / "home"))
    api.train_run(cfg, out, log=lambda *a, **k: None)
    return out


def train_classifier(root: Path, name: str = "clf", **settings) -> Path:
    """A sentiment classifier on synthetic reviews (pos/neg words among filler)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = make_reviews(500)
    for split, part in (("train", rows[:400]), ("dev", rows[400:])):
        (root / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))
    cfg = preset("lstm-classifier").override(
        train=str(root / "train.tsv"), valid=str(root / "dev.tsv"), text_field="sentence",
        **{**TINY, "epochs": 3, **settings})
    return _train(cfg, root / name)


def train_lm(root: Path, name: str = "lm", **settings) -> Path:
    """A word LM on a 12-word grammar."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    path = root / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(SENTENCES)) for _ in range(300)) + "\n")
    cfg = preset("lm").override(train=str(path), **{
        "epochs": 8, "num_steps": 10, "batch_size": 8, "embedding_dim": 16, "hidden_size": 16,
        "dropout": 0.0, "lr": 5.0, "precision": "fp32", "weight_drop": 0.0,
        "embedding_dropout": 0.0, "locked_dropout": False, "softmax": "full",
        "tie_weights": True, **settings})
    return _train(cfg, root / name)
