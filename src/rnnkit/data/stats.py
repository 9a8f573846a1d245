"""Looking at data: token-length statistics (how the tutorial picked 250), how much of the
validation text a vocabulary covers, and corpora for word2vec."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnkit.data import sources
from rnnkit.errors import UsageError
from rnnkit.plots import plot_histogram
from rnnkit.data.readers import read_labeled, read_texts
from rnnkit.config import TOKENIZERS
from rnnkit.files import check_encoding
from rnnkit.data.tokenizers import get_tokenizer
from rnnkit.data.vocab import UNK, Vocab, vocabulary_warnings


def _source(name: str, split: str) -> Path:
    if name in sources.DATASETS:
        return sources.resolve(name, split)
    path = Path(name)
    if not path.exists():
        raise UsageError(f"{name}: neither a registered dataset ({', '.join(sources.DATASETS)})"
                         " nor an existing file")
    return path


def _texts(path: Path, text_field: str, label_field: str, encoding: str = "utf-8"
           ) -> list[str]:
    if path.is_dir():
        return read_labeled(path, text_field, label_field, encoding).texts
    return read_texts(path, text_field, encoding)


def length_stats(name: str, split: str = "train", text_field: str = "text",
                 label_field: str = "label", tokenizer: str = "basic",
                 out: str | Path = "lengths.png", coverage: float = 0.9,
                 valid: str | None = None, min_freq: int = 2, encoding: str = "utf-8") -> dict:
    """Tokens per text, the suggested cut, and how well a vocabulary of the described texts
    (tokens seen `min_freq` times) covers validation text: the `valid` file, else the
    dataset's valid split, else the closing 10% of the texts (the rest then builds it)."""
    if tokenizer not in TOKENIZERS or tokenizer == "sentencepiece":
        raise UsageError("tokenizer must be one of "
                         + ", ".join(t for t in TOKENIZERS if t != "sentencepiece"))
    if not 0 < coverage <= 1:
        raise UsageError("--coverage must be in (0, 1]")
    if min_freq < 1:
        raise UsageError(f"--min-freq must be >= 1, got {min_freq}")
    check_encoding(encoding)
    path = _source(name, split)
    split_words = get_tokenizer(tokenizer)
    token_lists = [split_words(t) for t in _texts(path, text_field, label_field, encoding)]
    lengths = np.array([len(t) for t in token_lists])
    if len(lengths) == 0:
        raise UsageError(f"{path}: no texts")
    valid_path = Path(valid) if valid else None
    if valid_path is None and name in sources.DATASETS and split != "valid":
        if "valid" in sources.get_dataset(name).files:
            valid_path = sources.resolve(name, "valid")
    if valid_path is not None:
        held_out = [split_words(t) for t in _texts(valid_path, text_field, label_field,
                                                   encoding)]
        known = token_lists
        valid_source = str(valid_path)
    else:
        cut_at = len(token_lists) - max(1, len(token_lists) // 10)
        known, held_out = token_lists[:cut_at], token_lists[cut_at:]
        valid_source = f"the closing {len(held_out):,} texts"
    vocab = Vocab.build(known, (UNK,), min_freq)
    valid_ids = np.concatenate([vocab.encode_array(t) for t in held_out] or [np.zeros(0)])
    unknown = float(np.mean(valid_ids == vocab.unk_id)) if len(valid_ids) else 0.0
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
        "vocabulary": len(vocab), "min_freq": min_freq, "distinct_tokens": vocab.types,
        "singleton_share": vocab.singletons / max(1, vocab.types),
        "valid_source": valid_source, "valid_tokens": int(len(valid_ids)),
        "unknown_share": unknown,
        "warnings": vocabulary_warnings(vocab, valid_ids, tokenizer),
    }


def corpus_for_word2vec(specs: list[str], text_field: str, tokenizer: str
                        ) -> list[list[str]]:
    """Token lists from files or `dataset:split` names (imdb:unsup)."""
    split_words = get_tokenizer(tokenizer)
    corpus: list[list[str]] = []
    for source in specs:
        name, _, split = source.partition(":")
        path = _source(name, split or "train") if name in sources.DATASETS else _source(source, "")
        for text in _texts(path, text_field, "label"):
            tokens = split_words(text)
            if tokens:
                corpus.append(tokens)
    return corpus
