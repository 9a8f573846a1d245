"""From a `DataConfig` to numericalized splits: classification texts or a language-model stream.

Tokenized files are cached under `$RNNKIT_HOME/cache/tokens`, keyed by the file's path, size,
modification time and the tokenizer settings, so a second run does not tokenize again (a cache
that cannot be written is noted, not fatal). Texts without tokens are skipped and counted.
The vocabulary is built on the training split only; the validation split is carved from
train (seeded) when none is given; the test split is read only when asked for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from rnnkit import datasets
from rnnkit.config import DataConfig
from rnnkit.errors import DataError, UsageError
from rnnkit.files import atomic_write_text, rnnkit_home
from rnnkit.readers import LabeledTexts, read_labeled, read_lines, read_texts
from rnnkit.tokenize import cut, get_tokenizer
from rnnkit.vocab import EOS, PAD, UNK, Vocab

CLASSIFY_SPECIALS = (PAD, UNK)
LM_SPECIALS = (UNK, EOS)
NOTHING_TO_CARVE = ("--valid-fraction 0 needs --valid FILE: without a validation file, the "
                    "validation split is carved from the training data")


def source_path(spec: str) -> Path:
    """A file path, or `dataset:split` (imdb:unsup) for a registered dataset's file."""
    name, sep, split = spec.partition(":")
    if sep and name in datasets.DATASETS:
        return datasets.resolve(name, split)
    return Path(spec)


def split_source(cfg: DataConfig, split: str) -> Path | None:
    """Where a split comes from: the user's file, else the registered dataset, else None."""
    explicit = getattr(cfg, split, None)
    if explicit:
        return source_path(explicit)
    if cfg.dataset:
        dataset = datasets.get_dataset(cfg.dataset)
        if split in dataset.files:
            return datasets.resolve(cfg.dataset, split)
    if split == "train":
        raise UsageError("no training data: give --train FILE or --dataset NAME")
    return None


UNKNOWN_WARNING = 0.05  # share of validation tokens unknown to the vocabulary
SINGLETON_WARNING = 0.7  # share of distinct training tokens seen once


def vocabulary_warnings(vocab: Vocab, valid_ids: np.ndarray | None, tokenizer: str
                        ) -> list[str]:
    """Warnings about a freshly built vocabulary that does not fit the text: many unknown
    tokens in validation, or a vocabulary of mostly one-off tokens (text the tokenizer does
    not split into words), each with the flag that would help."""
    out = []
    subwords = ("--tokenizer sentencepiece (subwords: no unknown tokens)"
                if tokenizer != "sentencepiece" else "a larger --vocab-size")
    if valid_ids is not None and len(valid_ids):
        share = float(np.count_nonzero(valid_ids == vocab.unk_id)) / len(valid_ids)
        if share > UNKNOWN_WARNING:
            out.append(f"warning: {share:.1%} of the validation tokens are unknown to the "
                       f"vocabulary ({len(vocab):,} entries); {subwords}, or a lower "
                       "--min-freq / larger --max-vocab, would help")
    if vocab.types and vocab.singletons is not None:
        share = vocab.singletons / vocab.types
        if share > SINGLETON_WARNING and vocab.types >= 1000:
            out.append(f"warning: {share:.0%} of the {vocab.types:,} distinct training tokens "
                       "occur only once: the tokenizer may not split this text into words "
                       f"(text without spaces?); try --tokenizer char or {subwords}")
    return out


# --- classification -------------------------------------------------------------------------


@dataclass
class TokenizedTexts:
    tokens: list[list[str]]
    labels: list[str]
    report: str = ""  # what reading the file met (LabeledTexts.report)
    source: str = ""  # the file, for messages


def tokenize_labeled(path: Path, cfg: DataConfig, subwords: bytes | None = None
                     ) -> TokenizedTexts:
    """The texts of a labelled file, tokenized; texts without tokens are skipped and counted
    in the report, with their labels. `subwords`: the sentencepiece tokenizer's model."""
    cache = _cache_path(path, cfg, subwords) if cfg.tokenizer != "char" else None
    cached = _read_cache(cache, path)
    if cached is not None:
        return cached
    raw: LabeledTexts = read_labeled(path, cfg.text_field, cfg.label_field, cfg.encoding)
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase, subwords=subwords)
    tokens, labels, tokenless = [], [], []
    for text, label, origin in zip(raw.texts, raw.labels, raw.origins):
        words = tokenizer(text)
        if words:
            tokens.append(words)
            labels.append(label)
        else:
            tokenless.append(origin)
    if tokenless:
        raw.skip(f"texts with no tokens after tokenization (the first: {tokenless[0]})",
                 len(tokenless))
    if not tokens:
        raise DataError(f"{path}: no text has a token for the {cfg.tokenizer!r} tokenizer")
    out = TokenizedTexts(tokens, labels, raw.report(), str(path))
    if cache is not None:
        out.report = _write_cache(cache, out)
    return out


def _read_cache(cache: Path | None, path: Path) -> TokenizedTexts | None:
    """The cached tokens of `path`, or None when there are none (or they cannot be read)."""
    try:
        if cache is None or not cache.is_file():
            return None
        lines = cache.read_text(encoding="utf-8").split("\n")
        header = json.loads(lines[0])
        labels, report = header["labels"], header["report"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable cache is only slower
    if len(labels) != len(lines) - 1:
        return None
    tokens = [line.split(" ") if line else [] for line in lines[1:]]
    return TokenizedTexts(tokens, labels, report, str(path))


def _write_cache(cache: Path, texts: TokenizedTexts) -> str:
    """Write the cache; the report, with a note when the cache could not be written."""
    header = json.dumps({"labels": texts.labels, "report": texts.report})
    try:
        atomic_write_text(cache, "\n".join([header] + [" ".join(t) for t in texts.tokens]))
    except OSError as exc:
        return (f"{texts.report}; tokens not cached: cannot write {cache.parent} "
                f"({exc.strerror or exc}); set RNNKIT_HOME to a writable folder")
    return texts.report


def _cache_path(path: Path, cfg: DataConfig, subwords: bytes | None = None) -> Path | None:
    try:
        if not path.is_file():
            return None  # folders are not cached
        stat = path.stat()
    except OSError:
        return None  # the reader reports what is wrong with the file
    model = hashlib.sha256(subwords).hexdigest() if subwords is not None else None
    key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, cfg.tokenizer,
                      cfg.lowercase, cfg.text_field, cfg.label_field, cfg.encoding, model, 3])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return rnnkit_home() / "cache" / "tokens" / f"{digest}.txt"


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
                        "test"), vocab: Vocab | None = None, classes: list[str] | None = None,
                        subwords: bytes | None = None) -> ClassificationData:
    """Read and numericalize the splits in `want`. With `vocab`/`classes` given (a saved run),
    they are used as they are; otherwise both are built from the training split (with the
    sentencepiece tokenizer, from the `subwords` model given, else one trained on the
    training split). `notes` says, per file, how many rows were read from how many lines and
    what was skipped."""
    notes: list[str] = []
    raw: dict[str, TokenizedTexts] = {}
    train_path = split_source(cfg, "train")
    carve = split_source(cfg, "valid") is None
    if vocab is not None:
        subwords = vocab.subword_model
    if cfg.tokenizer == "sentencepiece" and subwords is None:
        assert train_path is not None
        texts = read_labeled(train_path, cfg.text_field, cfg.label_field, cfg.encoding).texts
        _, train_idx = _split_order(len(texts), cfg, seed, carve, train_path)
        subwords = train_subwords((texts[i] for i in train_idx), cfg, seed)
        notes.append(f"sentencepiece: a {cfg.subword_model} model of {cfg.vocab_size:,} "
                     f"pieces learned from {len(train_idx):,} training texts")
    need_train = "train" in want or vocab is None or ("valid" in want and carve)
    if need_train:
        assert train_path is not None
        train = tokenize_labeled(train_path, cfg, subwords)
        notes.append(f"train: {train.report}")
        raw.update(_train_and_valid(train, cfg, seed, carve))
    for split in want:
        path = split_source(cfg, split) if split not in raw else None
        if path is not None:
            raw[split] = tokenize_labeled(path, cfg, subwords)
            notes.append(f"{split}: {raw[split].report}")

    built = vocab is None
    if vocab is None and subwords is not None:
        vocab = Vocab.from_subwords(subwords, CLASSIFY_SPECIALS)
    elif vocab is None:
        vocab = Vocab.build(raw["train"].tokens, CLASSIFY_SPECIALS, cfg.min_freq, cfg.max_vocab)
    if classes is None:
        classes = sort_classes(set(raw["train"].labels))
        if len(classes) < 2:
            raise DataError(f"{train_path}: found only one label ({classes[0]!r}); a classifier "
                            "needs at least two")
    names = cfg.dataset and datasets.get_dataset(cfg.dataset).label_names or {}
    out = ClassificationData(vocab, classes, [names.get(c, c) for c in classes], notes=notes)
    for split in want:
        if split in raw:
            out.splits[split] = _numericalize(raw[split], split, cfg, vocab, classes)
    if built:
        valid = out.splits.get("valid")
        ids = np.concatenate(valid.full_ids or valid.ids) if valid and valid.ids else None
        out.notes += vocabulary_warnings(vocab, ids, cfg.tokenizer)
    return out


def _split_order(n: int, cfg: DataConfig, seed: int, carve: bool, source: object
                 ) -> tuple[np.ndarray | None, np.ndarray]:
    """Indices of the carved validation texts (with `carve`) and of the training texts, in a
    seeded order, of a training file's `n` texts."""
    order = np.random.default_rng(seed).permutation(n)
    valid = None
    if carve:
        if cfg.valid_fraction == 0:
            raise UsageError(NOTHING_TO_CARVE)
        n_valid = int(round(n * cfg.valid_fraction))
        if n_valid == 0 or n_valid == n:
            raise UsageError(f"{source}: too few texts ({n}) to carve a validation split of "
                             f"{cfg.valid_fraction:g}; give --valid FILE")
        valid, order = order[:n_valid], order[n_valid:]
    return valid, order[: cfg.limit_train or None]


def _train_and_valid(train: TokenizedTexts, cfg: DataConfig, seed: int, carve: bool
                     ) -> dict[str, TokenizedTexts]:
    """The training texts in a seeded order, and, with `carve`, the validation split taken
    from them (so the test split stays untouched until the final report)."""
    def pick(idx: np.ndarray, source: str) -> TokenizedTexts:
        return TokenizedTexts([train.tokens[i] for i in idx], [train.labels[i] for i in idx],
                              source=source)

    valid, order = _split_order(len(train.tokens), cfg, seed, carve, train.source)
    out = {}
    if valid is not None:
        out["valid"] = pick(valid, f"{train.source} (the part carved for validation)")
    out["train"] = pick(order, train.source)
    return out


def train_subwords(texts: Iterable[str], cfg: DataConfig, seed: int) -> bytes:
    """A SentencePiece model of the training texts (lowercased if the run lowercases); its
    size counts rnnkit's special tokens, so the vocabulary has `cfg.vocab_size` entries."""
    from rnnkit import subwords

    extra = 1  # <pad> (classifiers) or <eos> (language models) besides the shared <unk>
    if cfg.vocab_size <= 256 + extra + 1:
        raise UsageError(f"--vocab-size {cfg.vocab_size} is too small for sentencepiece: "
                         "its 256 byte pieces come first; use 1000 or more")
    lower = cfg.lowercase
    try:
        return subwords.train((t.lower() if lower else t for t in texts),
                              cfg.vocab_size - extra, cfg.subword_model, seed)
    except subwords.TooManyPieces as exc:
        raise UsageError(f"--vocab-size {cfg.vocab_size} is more than the training text allows "
                         f"(at most {exc.most + extra} entries here); use a smaller "
                         "--vocab-size") from None


def _numericalize(texts: TokenizedTexts, split: str, cfg: DataConfig, vocab: Vocab,
                  classes: list[str]) -> LabeledSplit:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(texts.labels) - index.keys())
    if unknown:
        raise DataError(f"{texts.source}: label {unknown[0]!r} ({split} split) was not seen in "
                        f"training; known labels: {', '.join(classes)}")
    full = [vocab.encode_array(t) for t in texts.tokens]
    ids = [cut(a, cfg.max_len, cfg.truncate) for a in full]
    labels = np.asarray([index[label] for label in texts.labels], dtype=np.int64)
    return LabeledSplit(ids, labels, full if cfg.ngram_order else None)


def encode_texts(texts: list[str], cfg: DataConfig, vocab: Vocab, max_len: int | None = None
                 ) -> list[np.ndarray]:
    """Numericalize raw texts for prediction exactly as training texts were: the same tokens,
    the same cut (`cfg.max_len`, or `max_len` where given: 0 keeps whole texts), applied
    while tokenizing where the tokenizer allows. A text without tokens becomes one <unk>."""
    keep = cfg.max_len if max_len is None else max_len
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase, keep, cfg.truncate,
                              vocab.subword_model)
    encode, unk = vocab.encode_array, vocab.unk_id
    out = []
    for text in texts:
        ids = encode(tokenizer(text))
        out.append(ids if len(ids) else np.array([unk], dtype=np.int64))
    return out


# --- language modelling ---------------------------------------------------------------------


def corpus_tokens(lines: list[str], cfg: DataConfig, subwords: bytes | None = None
                  ) -> list[str]:
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase, subwords=subwords)
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
    notes: list[str] = field(default_factory=list)
    # subword vocabularies: split -> its words (whitespace-separated, plus one <eos> a line
    # with add_eos), against which perplexity per word is reported
    words: dict[str, int] = field(default_factory=dict)


def count_words(lines: list[str], cfg: DataConfig) -> int:
    """Words of corpus lines as a word-level model counts them: whitespace-separated tokens,
    and an <eos> for each non-blank line (with add_eos)."""
    words = 0
    for line in lines:
        n = len(line.split())
        words += n + (1 if cfg.add_eos and n else 0)
    return words


def corpus_lines(path: Path, cfg: DataConfig) -> list[str]:
    """A corpus's lines: a plain-text file line by line, or the text field of a CSV, TSV,
    JSONL or Parquet file, one text per line (line breaks inside a text become spaces)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".tab", ".parquet", ".pq")):
        return [" ".join(text.splitlines())
                for text in read_texts(path, cfg.text_field, cfg.encoding)]
    return read_lines(path, cfg.encoding)


def load_corpus(cfg: DataConfig, want: tuple[str, ...] = ("train", "valid", "test"),
                vocab: Vocab | None = None, subwords: bytes | None = None,
                seed: int = 1) -> CorpusData:
    """The corpus splits in `want` as token ids. With `vocab` (a saved run) it is used as it
    is; otherwise it is built from the training split (with the sentencepiece tokenizer,
    from the `subwords` model given, else one trained on the training lines)."""
    tokens: dict[str, list[str]] = {}
    words: dict[str, int] = {}
    notes: list[str] = []
    train_path = split_source(cfg, "train")
    assert train_path is not None
    if vocab is not None:
        subwords = vocab.subword_model
    need_train = "train" in want or vocab is None or split_source(cfg, "valid") is None
    if need_train:
        lines = corpus_lines(train_path, cfg)
        for spec in filter(None, (cfg.extra_train or "").split(",")):
            lines += corpus_lines(source_path(spec.strip()), cfg)
        if not any(line.strip() for line in lines):
            raise DataError(f"{train_path}: the corpus is empty")
        valid_lines = None
        if split_source(cfg, "valid") is None:
            # Carve the closing lines of train as validation: text keeps its order.
            if cfg.valid_fraction == 0:
                raise UsageError(NOTHING_TO_CARVE)
            n_train = len(lines) - max(1, int(len(lines) * cfg.valid_fraction))
            if n_train <= 0:
                raise UsageError(f"{train_path}: too few lines to carve a validation split; "
                                 "give --valid FILE")
            valid_lines, lines = lines[n_train:], lines[:n_train]
        if cfg.tokenizer == "sentencepiece" and subwords is None:
            subwords = train_subwords(lines, cfg, seed)
            notes.append(f"sentencepiece: a {cfg.subword_model} model of {cfg.vocab_size:,} "
                         f"pieces learned from {len(lines):,} training lines")
        if valid_lines is not None:
            tokens["valid"] = corpus_tokens(valid_lines, cfg, subwords)
            words["valid"] = count_words(valid_lines, cfg)
        tokens["train"] = corpus_tokens(lines, cfg, subwords)
        words["train"] = count_words(lines, cfg)
    for split in want:
        if split in tokens:
            continue
        path = split_source(cfg, split)
        if path is None:
            continue
        lines = corpus_lines(path, cfg)
        tokens[split] = corpus_tokens(lines, cfg, subwords)
        words[split] = count_words(lines, cfg)
        if not tokens[split]:
            raise DataError(f"{path}: the corpus is empty")
    built = vocab is None
    if vocab is None and subwords is not None:
        vocab = Vocab.from_subwords(subwords, LM_SPECIALS)
    elif vocab is None:
        vocab = Vocab.build([tokens["train"]], LM_SPECIALS, cfg.min_freq, cfg.max_vocab)
    splits = {s: torch.tensor(vocab.encode(t), dtype=torch.long) for s, t in tokens.items()
              if s in want}
    for split, ids in splits.items():
        if len(ids) < 2:
            raise DataError(f"{split} split: the corpus needs at least two tokens")
    if built:
        valid = splits.get("valid")
        notes += vocabulary_warnings(vocab, valid.numpy() if valid is not None else None,
                                     cfg.tokenizer)
    if subwords is None:
        words = {}  # per token is per word
    return CorpusData(vocab, splits, notes, {s: n for s, n in words.items() if s in splits})
