"""Language-model corpora tokenized once, streaming, into memory-mapped token ids.

A corpus file is read line by line and tokenized into `uint32` ids of the file's own token
list (in order of first appearance), with, per line, the token offset after it and the words
it holds; the vocabulary of a run is then counted from those ids (`np.bincount`) and the ids
are mapped to it in one vectorized step. Memory grows with the distinct tokens, not with the
corpus (a Python list of token strings costs about 60 bytes a token; an id costs 4).

The result is cached under `$RNNKIT_HOME/cache/corpus/KEY/`, KEY a hash of the file's content
and of the settings that change its tokens (tokenizer, lowercase, add_eos, text field,
encoding, SentencePiece model), so a second run, and every process of a distributed run,
reads the memory map instead of tokenizing again. A cache that cannot be written is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from rnnkit.config import DataConfig
from rnnkit.data.readers import read_texts
from rnnkit.data.tokenizers import get_tokenizer
from rnnkit.data.vocab import EOS
from rnnkit.files import READ_ERRORS, read_error, rnnkit_home, text_lines

VERSION = 1
TABLE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".tab", ".parquet", ".pq")


@dataclass
class CachedCorpus:
    """One corpus file, tokenized."""

    ids: np.ndarray  # (N,) uint32: ids into `tokens`, every token of the file in order
    tokens: list[str]  # the file's distinct tokens, by first appearance
    line_ends: np.ndarray  # (lines,) int64: token offset after each line (blank ones too)
    words: np.ndarray  # (lines,) int64: words up to and including each line

    @property
    def lines(self) -> int:
        return len(self.line_ends)

    def token_range(self, first_line: int, end_line: int) -> tuple[int, int]:
        """Token offsets [start, end) of lines [first_line, end_line)."""
        start = int(self.line_ends[first_line - 1]) if first_line > 0 else 0
        end = int(self.line_ends[end_line - 1]) if end_line > 0 else 0
        return start, end

    def word_count(self, first_line: int, end_line: int) -> int:
        start = int(self.words[first_line - 1]) if first_line > 0 else 0
        end = int(self.words[end_line - 1]) if end_line > 0 else 0
        return end - start


def is_table(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(TABLE_SUFFIXES)


def raw_lines(path: Path, cfg: DataConfig) -> Iterator[str]:
    """A corpus's lines: a plain-text file line by line (streamed), or the text field of a
    table file, one text per line (line breaks inside a text become spaces)."""
    if is_table(path):
        for text in read_texts(path, cfg.text_field, cfg.encoding):
            yield " ".join(text.splitlines())
    else:
        for line in text_lines(path, cfg.encoding):
            yield line.rstrip("\r\n")


def tokenize_lines(lines: Iterable[str], cfg: DataConfig, subwords: bytes | None
                   ) -> CachedCorpus:
    """Token ids of corpus lines, as `rnnkit.data.splits.corpus_tokens` gives the tokens:
    each line's tokens and an <eos> (with add_eos), blank lines left out (but for `char`)."""
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase, subwords=subwords)
    index: dict[str, int] = {}
    ids, ends, words = array("I"), array("q"), array("q")
    keep_blank = cfg.tokenizer == "char"
    n_words = 0
    setdefault = index.setdefault
    for line in lines:
        tokens = tokenizer(line)
        if cfg.add_eos and (tokens or keep_blank):
            tokens.append(EOS)
        n = len(line.split())  # words as a word-level model counts them (count_words)
        n_words += n + (1 if cfg.add_eos and n else 0)
        ids.extend(setdefault(t, len(index)) for t in tokens)
        ends.append(len(ids))
        words.append(n_words)
    return CachedCorpus(np.frombuffer(ids, dtype=np.uint32) if ids else
                        np.zeros(0, dtype=np.uint32), list(index),
                        np.frombuffer(ends, dtype=np.int64) if ends else
                        np.zeros(0, dtype=np.int64),
                        np.frombuffer(words, dtype=np.int64) if words else
                        np.zeros(0, dtype=np.int64))


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except READ_ERRORS as exc:
        raise read_error(path, exc) from None
    return digest.hexdigest()


def _key(path: Path, cfg: DataConfig, subwords: bytes | None) -> str:
    settings = [VERSION, _content_hash(path), path.name.lower(), cfg.tokenizer, cfg.lowercase,
                cfg.add_eos, cfg.text_field if is_table(path) else None, cfg.encoding,
                hashlib.sha256(subwords).hexdigest() if subwords is not None else None]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:32]


def load(path: Path, cfg: DataConfig, subwords: bytes | None = None,
         log=None) -> CachedCorpus:
    """The file tokenized: from the cache (memory-mapped), else tokenized and cached."""
    folder = rnnkit_home() / "cache" / "corpus" / _key(path, cfg, subwords)
    try:
        if (folder / "tokens.json").is_file():
            return CachedCorpus(np.load(folder / "ids.npy", mmap_mode="r"),
                                json.loads((folder / "tokens.json").read_text("utf-8")),
                                np.load(folder / "line_ends.npy"), np.load(folder / "words.npy"))
    except (OSError, ValueError):
        pass  # a damaged cache entry: tokenize again
    corpus = tokenize_lines(raw_lines(path, cfg), cfg, subwords)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            np.save(stage / "ids.npy", corpus.ids)
            np.save(stage / "line_ends.npy", corpus.line_ends)
            np.save(stage / "words.npy", corpus.words)
            (stage / "tokens.json").write_text(json.dumps(corpus.tokens), encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.rename(stage, folder)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    except OSError as exc:
        if log is not None:
            log(f"note: the token cache was not written ({exc.strerror or exc})")
    return corpus
