"""Looking at data: token-length statistics (how the tutorial picked 250) and corpora for
word2vec."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnkit import datasets
from rnnkit.errors import UsageError
from rnnkit.plots import plot_histogram
from rnnkit.readers import read_labeled, read_texts
from rnnkit.config import TOKENIZERS
from rnnkit.tokenize import get_tokenizer


def _source(name: str, split: str) -> Path:
    if name in datasets.DATASETS:
        return datasets.resolve(name, split)
    path = Path(name)
    if not path.exists():
        raise UsageError(f"{name}: neither a registered dataset ({', '.join(datasets.DATASETS)})"
                         " nor an existing file")
    return path


def _texts(path: Path, text_field: str, label_field: str) -> list[str]:
    if path.is_dir():
        return read_labeled(path, text_field, label_field).texts
    return read_texts(path, text_field)


def length_stats(name: str, split: str = "train", text_field: str = "text",
                 label_field: str = "label", tokenizer: str = "basic",
                 out: str | Path = "lengths.png", coverage: float = 0.9) -> dict:
    if tokenizer not in TOKENIZERS:
        raise UsageError(f"tokenizer must be one of {', '.join(TOKENIZERS)}")
    if not 0 < coverage <= 1:
        raise UsageError("--coverage must be in (0, 1]")
    path = _source(name, split)
    split_words = get_tokenizer(tokenizer)
    lengths = np.array([len(split_words(t)) for t in _texts(path, text_field, label_field)])
    if len(lengths) == 0:
        raise UsageError(f"{path}: no texts")
    # Round the suggestion up to a multiple of 50 (the tutorial's 250 is such a round number).
    suggested = int(np.ceil(np.percentile(lengths, coverage * 100) / 50) * 50) or 50
    plot_histogram(lengths, suggested, Path(out), f"{name} ({split}): tokens per text")
    return {
        "source": str(path), "texts": int(len(lengths)), "tokens": int(lengths.sum()),
        "min": int(lengths.min()), "mean": float(lengths.mean()),
        "median": float(np.median(lengths)), "p90": float(np.percentile(lengths, 90)),
        "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max()),
        "suggested_max_len": suggested, "coverage": float((lengths <= suggested).mean()),
        "histogram": str(out),
    }


def corpus_for_word2vec(sources: list[str], text_field: str, tokenizer: str
                        ) -> list[list[str]]:
    """Token lists from files or `dataset:split` names (imdb:unsup)."""
    split_words = get_tokenizer(tokenizer)
    corpus: list[list[str]] = []
    for source in sources:
        name, _, split = source.partition(":")
        path = _source(name, split or "train") if name in datasets.DATASETS else _source(source, "")
        for text in _texts(path, text_field, "label"):
            tokens = split_words(text)
            if tokens:
                corpus.append(tokens)
    return corpus
