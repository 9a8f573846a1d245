"""The data layer: from a `DataConfig` to numericalized splits, in stages.

    sources     where each split comes from: the user's files, `dataset:split` names, the
                registered datasets (mirror, cache, download); resolved once, up front
    readers     one reader per format (CSV, TSV, JSONL, Parquet, plain text, label folders),
                all with the same field flags and bad-input rules
    tokenizers  one registry (basic, tutorial, whitespace, spaced, char, jieba, sentencepiece)
    vocab       tokens <-> ids (a SentencePiece model travels with its vocabulary)
    splits      tokenized files (cached), the carved validation split, numericalized splits
                for classifiers and language-model streams
    stats       what `rnnkit data stats` reports; embeddings: pretrained vectors and word2vec

The stages before `splits` do not import torch, so the processes that tokenize a large corpus
(`corpus_cache`) start quickly; the names below are imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ClassificationData", "CorpusData", "LabeledSplit", "Sources", "encode_texts",
           "load_classification", "load_corpus"]


def __getattr__(name: str) -> Any:
    if name == "Sources":
        from rnnkit.data.sources import Sources

        return Sources
    if name in __all__:
        from rnnkit.data import splits

        return getattr(splits, name)
    raise AttributeError(f"module 'rnnkit.data' has no attribute {name!r}")
