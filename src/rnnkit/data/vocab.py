"""Vocabulary: token <-> id, special tokens first, saved as JSON (with the SentencePiece model
for a subword vocabulary)."""

from __future__ import annotations

import base64
import functools
import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from rnnkit.errors import DataError
from rnnkit.files import atomic_write_text

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"


class _Lookup(dict):
    """token -> id, answering unknown tokens with the <unk> id without a Python-level call for
    known ones (`map(lookup.__getitem__, tokens)` runs in C until a miss)."""

    __slots__ = ("unk_id",)

    def __missing__(self, token: str) -> int:
        return self.unk_id


class Vocab:
    def __init__(self, tokens: Sequence[str], specials: Sequence[str]):
        self.itos: list[str] = list(tokens)
        self.specials = list(specials)
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError("vocabulary has duplicate tokens")
        if UNK not in self.stoi:
            raise DataError(f"vocabulary lacks the {UNK} token")
        self.unk_id = self.stoi[UNK]
        self.pad_id = self.stoi.get(PAD, -1)
        self.eos_id = self.stoi.get(EOS, -1)
        # What building it saw (None for a loaded vocabulary): distinct training tokens, and
        # how many of those occurred once.
        self.types: int | None = None
        self.singletons: int | None = None
        self.subword_model: bytes | None = None  # the SentencePiece model of its pieces

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], specials: Sequence[str],
              min_freq: int = 1, max_size: int = 0) -> "Vocab":
        """Specials first, then tokens by falling frequency (ties by first appearance)."""
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        return cls.from_counts(counts, specials, min_freq, max_size)

    @classmethod
    def from_counts(cls, counts: Counter, specials: Sequence[str], min_freq: int = 1,
                    max_size: int = 0) -> "Vocab":
        """As `build`, from token counts in order of first appearance."""
        counts = Counter({w: c for w, c in counts.items() if c > 0})
        for special in specials:
            counts.pop(special, None)
        words = [w for w, c in counts.most_common() if c >= min_freq]
        if max_size:
            words = words[: max(0, max_size - len(specials))]
        vocab = cls(list(specials) + words, specials)
        vocab.types = len(counts)
        vocab.singletons = sum(1 for c in counts.values() if c == 1)
        return vocab

    def extended(self, tokens: Iterable[str]) -> "Vocab":
        """This vocabulary, then those of `tokens` it lacks (in their order)."""
        more = [t for t in dict.fromkeys(tokens) if t not in self.stoi]
        vocab = Vocab(self.itos + more, self.specials)
        vocab.types, vocab.singletons = self.types, self.singletons
        return vocab

    @classmethod
    def from_subwords(cls, model: bytes, specials: Sequence[str],
                      counts: Counter | None = None) -> "Vocab":
        """Specials, then a SentencePiece model's pieces (its unknown piece, id 0, is our
        <unk>): by falling frequency in `counts` (the training split's pieces), ties and
        unseen pieces in the model's order. Frequency order, as for words: an adaptive
        softmax's head is the first ids, and the model's own order puts its 256 byte pieces
        and every single character first."""
        from rnnkit.data.tokenizers import sentencepiece as subwords

        pieces = [p for p in subwords.pieces(model)[1:] if p not in specials]
        if counts:
            rank = {p: i for i, p in enumerate(pieces)}
            pieces.sort(key=lambda p: (-counts.get(p, 0), rank[p]))
        vocab = cls(list(specials) + pieces, specials)
        vocab.subword_model = model
        return vocab

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return list(map(self._lookup.__getitem__, tokens))

    @functools.cached_property
    def _lookup(self) -> _Lookup:
        lookup = _Lookup(self.stoi)
        lookup.unk_id = self.unk_id
        return lookup

    def encode_array(self, tokens: Sequence[str]) -> np.ndarray:
        """As `encode`, as an int64 array, about 1.5x faster."""
        return np.fromiter(map(self._lookup.__getitem__, tokens), dtype=np.int64,
                           count=len(tokens))

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def save(self, path: Path) -> None:
        record: dict = {"specials": self.specials, "tokens": self.itos}
        if self.subword_model is not None:
            record["sentencepiece"] = base64.b64encode(self.subword_model).decode("ascii")
        atomic_write_text(path, json.dumps(record))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            vocab = cls(raw["tokens"], raw["specials"])
            if "sentencepiece" in raw:
                vocab.subword_model = base64.b64decode(raw["sentencepiece"], validate=True)
            return vocab
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a readable rnnkit vocabulary ({exc})") from None


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
