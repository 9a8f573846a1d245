"""From a `DataConfig` to numericalized splits: classification texts or a language-model stream.

Tokenized files are cached under `$RNNKIT_HOME/cache/tokens`, keyed by the file's path, size,
modification time and the tokenizer settings, so a second run does not tokenize again.
The vocabulary is built on the training split only; the validation split is carved from
train (seeded) when none is given; the test split is read only when asked for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rnnkit import datasets
from rnnkit.config import DataConfig
from rnnkit.errors import DataError, UsageError
from rnnkit.io import atomic_write_text
from rnnkit.readers import LabeledTexts, read_labeled, read_lines
from rnnkit.tokenize import cut, get_tokenizer
from rnnkit.vocab import EOS, PAD, UNK, Vocab

CLASSIFY_SPECIALS = (PAD, UNK)
LM_SPECIALS = (UNK, EOS)


def split_source(cfg: DataConfig, split: str) -> Path | None:
    """Where a split comes from: the user's file, else the registered dataset, else None."""
    explicit = getattr(cfg, split, None)
    if explicit:
        return Path(explicit)
    if cfg.dataset:
        dataset = datasets.get_dataset(cfg.dataset)
        if split in dataset.files:
            return datasets.resolve(cfg.dataset, split)
    if split == "train":
        raise UsageError("no training data: give --train FILE or --dataset NAME")
    return None


def cut_ids(ids: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """The ids of a text that its cut (`max_len`, `truncate`) keeps."""
    if not cfg.max_len or len(ids) <= cfg.max_len:
        return ids
    return np.asarray(cut(ids.tolist(), cfg.max_len, cfg.truncate), dtype=np.int64)


# --- classification -------------------------------------------------------------------------


@dataclass
class TokenizedTexts:
    tokens: list[list[str]]
    labels: list[str]
    report: str | None = None


def tokenize_labeled(path: Path, cfg: DataConfig) -> TokenizedTexts:
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase)
    cache = _cache_path(path, cfg) if cfg.tokenizer != "char" else None
    if cache is not None and cache.is_file():
        lines = cache.read_text(encoding="utf-8").split("\n")
        header = json.loads(lines[0])
        tokens = [line.split(" ") if line else [] for line in lines[1:]]
        return TokenizedTexts(tokens, header["labels"], header["report"])
    raw: LabeledTexts = read_labeled(path, cfg.text_field, cfg.label_field)
    tokens = [tokenizer(text) for text in raw.texts]
    out = TokenizedTexts(tokens, raw.labels, raw.report())
    if cache is not None:
        header = json.dumps({"labels": out.labels, "report": out.report})
        atomic_write_text(cache, "\n".join([header] + [" ".join(t) for t in tokens]))
    return out


def _cache_path(path: Path, cfg: DataConfig) -> Path | None:
    if not path.is_file():
        return None  # folders are not cached; missing files are reported by the reader
    stat = path.stat()
    key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, cfg.tokenizer,
                      cfg.lowercase, cfg.text_field, cfg.label_field, 1])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return datasets.home() / "cache" / "tokens" / f"{digest}.txt"


@dataclass
class LabeledSplit:
    ids: list[np.ndarray]  # one int64 array of token ids per text, already truncated
    labels: np.ndarray  # (N,) class indices
    full_ids: list[np.ndarray] | None = None  # untruncated, for the n-gram branch


@dataclass
class ClassificationData:
    vocab: Vocab
    classes: list[str]  # raw label values, in class-index order
    label_names: list[str]  # what users see
    splits: dict[str, LabeledSplit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def sort_classes(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(values)


def load_classification(cfg: DataConfig, seed: int, want: tuple[str, ...] = ("train", "valid",
                        "test"), vocab: Vocab | None = None, classes: list[str] | None = None
                        ) -> ClassificationData:
    """Read and numericalize the splits in `want`. With `vocab`/`classes` given (a saved run),
    they are used as they are; otherwise both are built from the training split."""
    notes: list[str] = []
    raw: dict[str, TokenizedTexts] = {}
    train_path = split_source(cfg, "train")
    need_train = "train" in want or vocab is None or (
        "valid" in want and split_source(cfg, "valid") is None)
    if need_train:
        assert train_path is not None
        train = tokenize_labeled(train_path, cfg)
        if train.report:
            notes.append(train.report)
        valid_path = split_source(cfg, "valid")
        if valid_path is None:
            # Carve validation from train with a seeded permutation: the test split stays
            # untouched until the final report.
            order = np.random.default_rng(seed).permutation(len(train.tokens))
            n_valid = int(round(len(order) * cfg.valid_fraction))
            if n_valid == 0 or n_valid == len(order):
                raise UsageError(f"{train_path}: too few texts ({len(order)}) to carve a "
                                 "validation split; give --valid FILE")
            pick = lambda idx: TokenizedTexts([train.tokens[i] for i in idx],  # noqa: E731
                                              [train.labels[i] for i in idx])
            raw["valid"], raw["train"] = pick(order[:n_valid]), pick(order[n_valid:])
        else:
            order = np.random.default_rng(seed).permutation(len(train.tokens))
            raw["train"] = TokenizedTexts([train.tokens[i] for i in order],
                                          [train.labels[i] for i in order])
        if cfg.limit_train:
            raw["train"].tokens = raw["train"].tokens[: cfg.limit_train]
            raw["train"].labels = raw["train"].labels[: cfg.limit_train]
    for split in want:
        if split in raw:
            continue
        path = split_source(cfg, split)
        if path is None:
            continue
        raw[split] = tokenize_labeled(path, cfg)
        if raw[split].report:
            notes.append(raw[split].report)

    if vocab is None:
        vocab = Vocab.build(raw["train"].tokens, CLASSIFY_SPECIALS, cfg.min_freq, cfg.max_vocab)
    if classes is None:
        classes = sort_classes(set(raw["train"].labels))
        if len(classes) < 2:
            raise DataError(f"{train_path}: found only one label ({classes[0]!r}); a classifier "
                            "needs at least two")
    names = cfg.dataset and datasets.get_dataset(cfg.dataset).label_names or {}
    out = ClassificationData(vocab, classes, [names.get(c, c) for c in classes], notes=notes)
    index = {c: i for i, c in enumerate(classes)}
    for split in want:
        if split not in raw:
            continue
        texts = raw[split]
        unknown = sorted(set(texts.labels) - index.keys())
        if unknown:
            where = split_source(cfg, split) if split != "valid" else train_path
            raise DataError(f"{where}: label {unknown[0]!r} ({split} split) was not seen in "
                            f"training; known labels: {', '.join(classes)}")
        full = [vocab.encode_array(t) for t in texts.tokens]
        ids = [cut_ids(a, cfg) for a in full]
        for a in ids:
            if len(a) == 0:
                raise DataError(f"{split} split: a text has no tokens after tokenization")
        labels = np.asarray([index[label] for label in texts.labels], dtype=np.int64)
        out.splits[split] = LabeledSplit(ids, labels, full if cfg.ngram_order else None)
    return out


def encode_texts(texts: list[str], cfg: DataConfig, vocab: Vocab) -> list[np.ndarray]:
    """Numericalize raw texts for prediction exactly as training texts were: the same tokens,
    the same cut (applied before encoding, and while tokenizing where the tokenizer allows)."""
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase, cfg.max_len, cfg.truncate)
    encode, unk = vocab.encode_array, vocab.unk_id
    out = []
    for text in texts:
        ids = encode(tokenizer(text))
        out.append(ids if len(ids) else np.array([unk], dtype=np.int64))
    return out


# --- language modelling ---------------------------------------------------------------------


def corpus_tokens(lines: list[str], cfg: DataConfig) -> list[str]:
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase)
    tokens: list[str] = []
    for line in lines:
        words = tokenizer(line)
        if cfg.add_eos:
            if not words and cfg.tokenizer != "char":
                continue  # blank lines carry no sentence
            words.append(EOS)
        tokens.extend(words)
    return tokens


@dataclass
class CorpusData:
    vocab: Vocab
    splits: dict[str, torch.Tensor]  # split -> (N,) int64 token ids


def load_corpus(cfg: DataConfig, want: tuple[str, ...] = ("train", "valid", "test"),
                vocab: Vocab | None = None) -> CorpusData:
    tokens: dict[str, list[str]] = {}
    train_path = split_source(cfg, "train")
    assert train_path is not None
    need_train = "train" in want or vocab is None or split_source(cfg, "valid") is None
    if need_train:
        lines = read_lines(train_path)
        if not any(line.strip() for line in lines):
            raise DataError(f"{train_path}: the corpus is empty")
        if split_source(cfg, "valid") is None:
            # Carve the closing lines of train as validation: text keeps its order.
            cut = len(lines) - max(1, int(len(lines) * cfg.valid_fraction))
            if cut <= 0:
                raise UsageError(f"{train_path}: too few lines to carve a validation split; "
                                 "give --valid FILE")
            tokens["valid"] = corpus_tokens(lines[cut:], cfg)
            lines = lines[:cut]
        tokens["train"] = corpus_tokens(lines, cfg)
    for split in want:
        if split in tokens:
            continue
        path = split_source(cfg, split)
        if path is None:
            continue
        tokens[split] = corpus_tokens(read_lines(path), cfg)
        if not tokens[split]:
            raise DataError(f"{path}: the corpus is empty")
    if vocab is None:
        vocab = Vocab.build([tokens["train"]], LM_SPECIALS, cfg.min_freq, cfg.max_vocab)
    splits = {s: torch.tensor(vocab.encode(t), dtype=torch.long) for s, t in tokens.items()
              if s in want}
    for split, ids in splits.items():
        if len(ids) < 2:
            raise DataError(f"{split} split: the corpus needs at least two tokens")
    return CorpusData(vocab, splits)
