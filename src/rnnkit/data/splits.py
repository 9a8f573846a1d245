"""From a `DataConfig` to numericalized splits: classification texts or a language-model stream.

Tokenized files are cached under `$RNNKIT_HOME/cache/tokens`, keyed by the file's path, size,
modification time and the tokenizer settings, so a second run does not tokenize again (a cache
that cannot be written is noted, not fatal). Texts without tokens are skipped and counted.
The vocabulary is built on the training split only; the validation split is carved from
train (seeded) when none is given; the test split is read only when asked for.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from rnnkit.data import corpus_cache
from rnnkit.data import sources as registry
from rnnkit.data.sources import Sources
from rnnkit.config import DataConfig
from rnnkit.errors import DataError, UsageError
from rnnkit.data.readers import LabeledTexts, read_labeled, read_lines, read_texts
from rnnkit.data.tokenizers import cut, get_tokenizer
from rnnkit.data.vocab import EOS, PAD, UNK, Vocab, vocabulary_warnings

CLASSIFY_SPECIALS = (PAD, UNK)
LM_SPECIALS = (UNK, EOS)
NOTHING_TO_CARVE = ("--valid-fraction 0 needs --valid FILE: without a validation file, the "
                    "validation split is carved from the training data")


# --- classification -------------------------------------------------------------------------


@dataclass
class TokenizedTexts:
    """A labelled file's texts that have tokens, as token ids into the file's own token list
    (`corpus`, one "line" a text: `rnnkit.data.corpus_cache`), and their labels. `order`
    picks and orders the file's texts (a split carved from it); None: all, in file order."""

    corpus: corpus_cache.CachedCorpus
    labels: list[str]  # of the texts, in order
    report: str = ""  # what reading the file met (LabeledTexts.report)
    source: str = ""  # the file, for messages
    order: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def texts(self) -> Iterator[np.ndarray]:
        """Each text's ids into `corpus.tokens`, in order."""
        ends = self.corpus.line_ends
        ids = self.corpus.ids
        for i in (range(len(ends)) if self.order is None else self.order.tolist()):
            yield ids[ends[i - 1] if i else 0:ends[i]]

    def pick(self, idx: np.ndarray, source: str) -> "TokenizedTexts":
        order = np.arange(len(self.labels)) if self.order is None else self.order
        return TokenizedTexts(self.corpus, [self.labels[i] for i in idx], source=source,
                              order=order[idx])

    def counts(self) -> Counter:
        """Token counts in order of first appearance (Vocab's tie order)."""
        texts = list(self.texts())
        counts: Counter[str] = Counter()
        if not texts:
            return counts
        every = np.concatenate(texts)
        seen, first = np.unique(every, return_index=True)
        per = np.bincount(every, minlength=len(self.corpus.tokens))
        words = self.corpus.tokens
        for t in seen[np.argsort(first, kind="stable")].tolist():
            counts[words[t]] = int(per[t])
        return counts

    def encode(self, vocab: Vocab) -> list[np.ndarray]:
        """Each text's ids in the run's vocabulary (int64)."""
        remap = vocab.encode_array(self.corpus.tokens)
        return [remap[text] for text in self.texts()]


def tokenize_labeled(path: Path, cfg: DataConfig, subwords: bytes | None = None
                     ) -> TokenizedTexts:
    """The texts of a labelled file, tokenized; texts without tokens are skipped and counted
    in the report, with their labels. `subwords`: the sentencepiece tokenizer's model. A file
    is tokenized once: the result is cached (token ids, memory-mapped) under RNNKIT_HOME,
    keyed by the file's content and the settings that change its tokens."""
    at = _cache_entry(path, cfg, subwords)
    cached = corpus_cache.read_entry(at) if at is not None else None
    if cached is not None:
        corpus, meta = cached
        labels = meta.get("labels")
        if isinstance(labels, list) and len(labels) == corpus.lines:
            report = str(meta.get("report", "")).replace(_THIS_FILE, str(path))
            return TokenizedTexts(corpus, labels, report, str(path))
    raw: LabeledTexts = read_labeled(path, cfg.text_field, cfg.label_field, cfg.encoding)
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase, subwords=subwords)
    index = corpus_cache.Numberer()
    number = index.__getitem__
    ids, ends, labels, tokenless = array("I"), array("q"), [], []
    for text, label, origin in zip(raw.texts, raw.labels, raw.origins):
        words = tokenizer(text)
        if words:
            ids.extend(map(number, words))
            ends.append(len(ids))
            labels.append(label)
        else:
            tokenless.append(origin)
    if tokenless:
        raw.skip(f"texts with no tokens after tokenization (the first: {tokenless[0]})",
                 len(tokenless))
    if not labels:
        raise DataError(f"{path}: no text has a token for the {cfg.tokenizer!r} tokenizer")
    corpus = corpus_cache.CachedCorpus(np.frombuffer(ids, dtype=np.uint32), list(index),
                                       np.frombuffer(ends, dtype=np.int64), None)
    out = TokenizedTexts(corpus, labels, raw.report(), str(path))
    if at is not None:
        try:
            # the entry serves any copy of the file: the report names "this file"
            corpus_cache.write_entry(at, corpus, {"labels": labels, "report": out.report.replace(
                str(path), _THIS_FILE)})
        except OSError as exc:
            out.report = (f"{out.report}; tokens not cached: cannot write {at.folder.parent} "
                          f"({exc.strerror or exc}); set RNNKIT_HOME to a writable folder")
    return out


_THIS_FILE = "\x00file"  # where a cached report names the file it was read from


def _cache_entry(path: Path, cfg: DataConfig, subwords: bytes | None
                 ) -> corpus_cache.Entry | None:
    try:
        if not path.is_file():
            return None  # folders of texts are not cached
        return corpus_cache.entry("labeled", path, cfg, subwords)
    except DataError:
        return None  # the reader reports what is wrong with the file


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
                        subwords: bytes | None = None, sources: Sources | None = None,
                        known: Sequence[str] = ()) -> ClassificationData:
    """Read and numericalize the splits in `want`. With `vocab`/`classes` given (a saved run),
    they are used as they are; otherwise both are built from the training split (with the
    sentencepiece tokenizer, from the `subwords` model given, else one trained on the
    training split), a built word vocabulary followed by the `known` words it lacks (those
    of an --init-from language model). `notes` says, per file, how many rows were read from
    how many lines and what was skipped."""
    notes: list[str] = []
    raw: dict[str, TokenizedTexts] = {}
    sources = sources or Sources.of(cfg, want)  # resolved once
    train_path = sources.train
    carve = sources.valid is None
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
        path = sources.get(split) if split not in raw else None
        if path is not None:
            raw[split] = tokenize_labeled(path, cfg, subwords)
            notes.append(f"{split}: {raw[split].report}")

    built = vocab is None
    if vocab is None and subwords is not None:
        vocab = Vocab.from_subwords(subwords, CLASSIFY_SPECIALS, raw["train"].counts())
    elif vocab is None:
        vocab = Vocab.from_counts(raw["train"].counts(), CLASSIFY_SPECIALS, cfg.min_freq,
                                  cfg.max_vocab).extended(known)
    if classes is None:
        classes = sort_classes(set(raw["train"].labels))
        if len(classes) < 2:
            raise DataError(f"{train_path}: found only one label ({classes[0]!r}); a classifier "
                            "needs at least two")
    names = cfg.dataset and registry.get_dataset(cfg.dataset).label_names or {}
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
    valid, order = _split_order(len(train), cfg, seed, carve, train.source)
    out = {}
    if valid is not None:
        out["valid"] = train.pick(valid, f"{train.source} (the part carved for validation)")
    out["train"] = train.pick(order, train.source)
    return out


def train_subwords(texts: Iterable[str], cfg: DataConfig, seed: int) -> bytes:
    """A SentencePiece model of the training texts (lowercased if the run lowercases); its
    size counts rnnkit's special tokens, so the vocabulary has `cfg.vocab_size` entries."""
    from rnnkit.data.tokenizers import sentencepiece as subwords

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
    full = texts.encode(vocab)
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


def load_corpus(cfg: DataConfig, want: tuple[str, ...] = ("train", "valid", "test"),
                vocab: Vocab | None = None, subwords: bytes | None = None,
                seed: int = 1, sources: Sources | None = None, log=None) -> CorpusData:
    """The corpus splits in `want` as token ids. With `vocab` (a saved run) it is used as it
    is; otherwise it is built from the training split (with the sentencepiece tokenizer,
    from the `subwords` model given, else one trained on the training lines). Each file is
    tokenized once into cached token ids (`corpus_cache`); the validation split, when none
    is given, is the closing `valid_fraction` of the training lines."""
    words: dict[str, int] = {}
    notes: list[str] = []
    sources = sources or Sources.of(cfg, want)  # resolved once
    train_path = sources.train
    if vocab is not None:
        subwords = vocab.subword_model
    # (split -> [(file, first token, end token)]): where each split's tokens are
    segments: dict[str, list[tuple[corpus_cache.CachedCorpus, int, int]]] = {}
    need_train = "train" in want or vocab is None or sources.valid is None
    if need_train:
        paths = [train_path, *sources.extra_train]
        n_train = None
        if sources.valid is None and cfg.valid_fraction == 0:
            raise UsageError(NOTHING_TO_CARVE)
        if cfg.tokenizer == "sentencepiece" and subwords is None:
            lines = [line for path in paths for line in corpus_cache.raw_lines(path, cfg)]
            n_train = _carve(len(lines), cfg, train_path) if sources.valid is None else None
            subwords = train_subwords(lines[:n_train], cfg, seed)
            notes.append(f"sentencepiece: a {cfg.subword_model} model of {cfg.vocab_size:,} "
                         f"pieces learned from {n_train or len(lines):,} training lines")
            del lines
        files = [corpus_cache.load(path, cfg, subwords, log) for path in paths]
        total = sum(f.lines for f in files)
        if not sum(int(f.words[-1]) if f.lines else 0 for f in files):
            raise DataError(f"{train_path}: the corpus is empty")
        cut = total if sources.valid is not None else _carve(total, cfg, train_path)
        # Lines [0, cut) of the files joined are training text, the rest validation.
        offset = 0
        for f in files:
            lo, hi = offset, offset + f.lines
            for split, (a, b) in (("train", (lo, min(hi, cut))), ("valid", (max(lo, cut), hi))):
                if a < b:
                    start, end = f.token_range(a - lo, b - lo)
                    segments.setdefault(split, []).append((f, start, end))
                    words[split] = words.get(split, 0) + f.word_count(a - lo, b - lo)
            offset = hi
        segments.setdefault("train", [])
        if sources.valid is None:
            segments.setdefault("valid", [])
    for split in want:
        if split in segments:
            continue
        path = sources.get(split)
        if path is None:
            continue
        f = corpus_cache.load(path, cfg, subwords, log)
        if not len(f.ids):
            raise DataError(f"{path}: the corpus is empty")
        segments[split] = [(f, 0, len(f.ids))]
        words[split] = int(f.words[-1]) if f.lines else 0
    built = vocab is None
    if vocab is None and subwords is not None:
        vocab = Vocab.from_subwords(subwords, LM_SPECIALS, _counts(segments["train"]))
    elif vocab is None:
        vocab = Vocab.from_counts(_counts(segments["train"]), LM_SPECIALS, cfg.min_freq,
                                  cfg.max_vocab)
    splits = {s: _encode(parts, vocab) for s, parts in segments.items() if s in want}
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


def _carve(lines: int, cfg: DataConfig, source: Path) -> int:
    """How many of a training text's lines stay training text when the closing
    `valid_fraction` of them (at least one) becomes the validation split."""
    if cfg.valid_fraction == 0:
        raise UsageError(NOTHING_TO_CARVE)
    n_train = lines - max(1, int(lines * cfg.valid_fraction))
    if n_train <= 0:
        raise UsageError(f"{source}: too few lines to carve a validation split; "
                         "give --valid FILE")
    return n_train


def _counts(parts: list[tuple[corpus_cache.CachedCorpus, int, int]]) -> Counter:
    """Token counts of training segments, in order of first appearance (Vocab's tie order):
    a training segment starts at its file's first token, and a file numbers its tokens by
    first appearance, so ascending ids are that order."""
    counts: Counter[str] = Counter()
    for f, start, end in parts:
        assert start == 0
        per = np.bincount(np.asarray(f.ids[:end]), minlength=len(f.tokens))
        for i in np.flatnonzero(per):
            counts[f.tokens[i]] += int(per[i])
    return counts


def _encode(parts: list[tuple[corpus_cache.CachedCorpus, int, int]], vocab: Vocab
            ) -> torch.Tensor:
    """The segments' token ids in the run's vocabulary, one (N,) int64 tensor."""
    chunks = []
    for f, start, end in parts:
        remap = np.fromiter((vocab.stoi.get(t, vocab.unk_id) for t in f.tokens),
                            dtype=np.int64, count=len(f.tokens))
        chunks.append(remap[np.asarray(f.ids[start:end])])
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(ids)
