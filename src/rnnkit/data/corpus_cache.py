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

A large plain-text file is tokenized by several processes at once (one per CPU core the
process may use, shared among the processes of a distributed run on the machine): each takes
a range of whole lines and numbers its own tokens; joining the ranges in order gives exactly
what one process gives, since tokens first seen in a later range come after all tokens of the
earlier ones. `RNNKIT_TOKENIZE_PROCESSES` sets the number (1: one process).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
from array import array
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from rnnkit.config import DataConfig
from rnnkit.data.readers import read_texts
from rnnkit.data.tokenizers import get_tokenizer
from rnnkit.data.vocab import EOS
from rnnkit.errors import DataError
from rnnkit.files import READ_ERRORS, decode_lines, read_error, rnnkit_home, text_lines

VERSION = 1
# Below this size one process tokenizes faster than several start (about a second each).
PARALLEL_MIN_BYTES = 32 << 20
MAX_PROCESSES = 8
TABLE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".tab", ".parquet", ".pq")


@dataclass
class CachedCorpus:
    """One corpus file, tokenized."""

    ids: np.ndarray  # (N,) uint32: ids into `tokens`, every token of the file in order
    tokens: list[str]  # the file's distinct tokens, by first appearance
    line_ends: np.ndarray  # (lines,) int64: token offset after each line (blank ones too)
    words: np.ndarray | None  # (lines,) int64: words up to and including each line (corpora)

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


class Numberer(dict):
    """token -> id in order of first appearance: `map(numberer.__getitem__, tokens)` numbers
    tokens in C for those already seen, and gives a new token the next id."""

    def __missing__(self, token: str) -> int:
        number = self[token] = len(self)
        return number


def tokenize_lines(lines: Iterable[str], cfg: DataConfig, subwords: bytes | None
                   ) -> CachedCorpus:
    """Token ids of corpus lines, as `rnnkit.data.splits.corpus_tokens` gives the tokens:
    each line's tokens and an <eos> (with add_eos), blank lines left out (but for `char`)."""
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase, subwords=subwords)
    index = Numberer()
    ids, ends, words = array("I"), array("q"), array("q")
    keep_blank = cfg.tokenizer == "char"
    add_eos = cfg.add_eos
    n_words = 0
    number = index.__getitem__
    for line in lines:
        tokens = tokenizer(line)
        if add_eos and (tokens or keep_blank):
            tokens.append(EOS)
        n = len(line.split())  # words as a word-level model counts them (count_words)
        n_words += n + (1 if add_eos and n else 0)
        ids.extend(map(number, tokens))
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


def _key(path: Path, cfg: DataConfig, subwords: bytes | None, kind: str, content: str) -> str:
    fields = ([cfg.text_field, cfg.label_field] if kind == "labeled" else
              [cfg.text_field if is_table(path) else None])
    settings = [VERSION, kind, content, path.name.lower(), cfg.tokenizer,
                cfg.lowercase, cfg.add_eos if kind == "corpus" else None, *fields, cfg.encoding,
                hashlib.sha256(subwords).hexdigest() if subwords is not None else None]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:32]


@dataclass
class Entry:
    """Where a file's tokenized form is cached, and the hash of the file's bytes it must
    record to be trusted."""

    folder: Path
    source: str


def entry(kind: str, path: Path, cfg: DataConfig, subwords: bytes | None) -> Entry:
    """The cache entry of `path` tokenized: `kind` "corpus" (language models) or "labeled"
    (a classifier's texts and labels)."""
    content = _content_hash(path)
    return Entry(rnnkit_home() / "cache" / kind / _key(path, cfg, subwords, kind, content),
                 content)


def tokenize_processes(path: Path, cfg: DataConfig) -> int:
    """How many processes tokenize `path`: one for a small, compressed or table file, or an
    encoding whose line break is not the byte 0x0a (UTF-16); else one per usable core."""
    setting = os.environ.get("RNNKIT_TOKENIZE_PROCESSES", "")
    if setting:
        try:
            wanted = int(setting)
            if wanted < 1:
                raise ValueError
        except ValueError:
            raise DataError(f"RNNKIT_TOKENIZE_PROCESSES={setting!r}: give a whole number "
                            ">= 1") from None
    else:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        # the ranks of a distributed run on this machine tokenize side by side
        wanted = max(1, min(MAX_PROCESSES, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    if wanted == 1 or is_table(path) or path.name.lower().endswith(".gz"):
        return 1
    try:
        if "\n".encode(codecs.lookup(cfg.encoding).name) != b"\n":
            return 1
        size = path.stat().st_size
    except (LookupError, OSError):
        return 1  # the one-process path says what is wrong
    if size < PARALLEL_MIN_BYTES and not setting:
        return 1
    return max(1, min(wanted, size // 4096 or 1))


def line_ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of about equal size that each begin at a line's start."""
    size = path.stat().st_size
    bounds = [0]
    with open(path, "rb") as f:
        for k in range(1, parts):
            f.seek(max(bounds[-1], size * k // parts))
            if f.tell() > 0:
                f.seek(f.tell() - 1)  # a range may start just after a line break
            f.readline()
            if bounds[-1] < f.tell() < size:
                bounds.append(f.tell())
    bounds.append(size)
    return list(zip(bounds[:-1], bounds[1:]))


def _range_lines(path: Path, start: int, end: int, encoding: str) -> Iterator[str]:
    """The lines of bytes [start, end) of a plain-text file, as `raw_lines` gives them."""
    def raw() -> Iterator[bytes]:
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            for line in f:
                if left <= 0:
                    break
                yield line
                left -= len(line)

    # Only the file's first line may carry a byte-order mark; later ranges are decoded as
    # if they were not at a file's start. Line numbers are the range's own: a decoding error
    # is reported again, with the file's line number, by the one-process path.
    if start == 0:
        lines = decode_lines(raw(), str(path), encoding=encoding)
    else:
        lines = (line.decode(encoding) for line in raw())
    for line in lines:
        yield line.rstrip("\r\n")


def _tokenize_range(path: Path, start: int, end: int, cfg: DataConfig,
                    subwords: bytes | None, out: Path) -> tuple[list[str], np.ndarray,
                                                               np.ndarray] | None:
    """Tokenize one range into `out` (its ids, .npy); its tokens, line ends and word
    counts, or None when a line cannot be decoded."""
    try:
        part = tokenize_lines(_range_lines(path, start, end, cfg.encoding), cfg, subwords)
    except (DataError, UnicodeDecodeError):
        return None
    np.save(out, part.ids)
    return part.tokens, part.line_ends, part.words


class _Undecodable(Exception):
    """A range has a line that does not decode (the one-process path reports where)."""


def _tokenize_parallel(path: Path, cfg: DataConfig, subwords: bytes | None, processes: int,
                       stage: Path, source: str) -> None:
    """Tokenize `path` by ranges in `processes` processes (this one takes the first range)
    and write the joined result into `stage` as the cache stores it."""
    ranges = line_ranges(path, processes)
    outs = [stage / f"part-{k}.npy" for k in range(len(ranges))]
    results = [None] * len(ranges)
    pool = None
    if len(ranges) > 1:
        pool = ProcessPoolExecutor(len(ranges) - 1,
                                   mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(_tokenize_range, path, a, b, cfg, subwords, out)
                   for (a, b), out in zip(ranges[1:], outs[1:])] if pool else []
        results[0] = _tokenize_range(path, *ranges[0], cfg, subwords, outs[0])
        for k, future in enumerate(futures, 1):
            results[k] = future.result()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if any(r is None for r in results):
        raise _Undecodable
    index = Numberer()
    remaps = [np.fromiter(map(index.__getitem__, tokens), dtype=np.uint32, count=len(tokens))
              for tokens, _, _ in results]
    sizes = [int(ends[-1]) if len(ends) else 0 for _, ends, _ in results]
    ids = np.lib.format.open_memmap(stage / "ids.npy", mode="w+", dtype=np.uint32,
                                    shape=(sum(sizes),))
    offset, words_before, line_ends, words = 0, 0, [], []
    for remap, out, size, (_, ends, counts) in zip(remaps, outs, sizes, results):
        if size:
            ids[offset:offset + size] = remap[np.load(out, mmap_mode="r")]
        out.unlink()
        line_ends.append(ends + offset)
        words.append(counts + words_before)
        offset += size
        words_before += int(counts[-1]) if len(counts) else 0
    ids.flush()
    joined = CachedCorpus(ids, list(index), np.concatenate(line_ends), np.concatenate(words))
    _save(stage, joined, source, ids_saved=True)


def _read(folder: Path) -> CachedCorpus:
    words = folder / "words.npy"
    return CachedCorpus(np.load(folder / "ids.npy", mmap_mode="r"),
                        json.loads((folder / "tokens.json").read_text("utf-8")),
                        np.load(folder / "line_ends.npy"),
                        np.load(words) if words.is_file() else None)


def _save(stage: Path, corpus: CachedCorpus, source: str, meta: dict | None = None,
          ids_saved: bool = False) -> None:
    """Write an entry's files into `stage`; its meta record holds `meta`'s fields and what the
    entry must hold to be trusted (the file's hash, its sizes). tokens.json comes last."""
    if not ids_saved:
        np.save(stage / "ids.npy", corpus.ids)
    np.save(stage / "line_ends.npy", corpus.line_ends)
    if corpus.words is not None:
        np.save(stage / "words.npy", corpus.words)
    seal = {**(meta or {}), "source": source, "ids": int(len(corpus.ids)),
            "lines": int(len(corpus.line_ends)), "tokens": len(corpus.tokens)}
    (stage / "meta.json").write_text(json.dumps(seal), encoding="utf-8")
    (stage / "tokens.json").write_text(json.dumps(corpus.tokens), encoding="utf-8")


@contextmanager
def _staged(folder: Path) -> Iterator[Path]:
    """A stage folder beside `folder` to write an entry into, moved into place when the block
    ends without an error and removed otherwise; OSError when it cannot be made."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield stage
        _publish(stage, folder)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def read_entry(at: Entry) -> tuple[CachedCorpus, dict] | None:
    """A cache entry (ids memory-mapped) and its meta record, or None when there is none, or
    it cannot be read, is truncated or records another file: a broken entry is rebuilt,
    never trusted."""
    folder = at.folder
    try:
        if not (folder / "tokens.json").is_file():
            return None
        corpus = _read(folder)
        meta = json.loads((folder / "meta.json").read_text("utf-8"))
        n = len(corpus.ids)
        if (not isinstance(meta, dict) or meta.get("source") != at.source
                or meta.get("ids") != n or meta.get("lines") != len(corpus.line_ends)
                or meta.get("tokens") != len(corpus.tokens) or corpus.ids.ndim != 1
                or (corpus.words is not None and len(corpus.words) != len(corpus.line_ends))
                or (len(corpus.line_ends) and int(corpus.line_ends[-1]) != n)
                or (n and int(corpus.ids.max()) >= len(corpus.tokens))):
            return None
        return corpus, meta
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def write_entry(at: Entry, corpus: CachedCorpus, meta: dict | None = None) -> None:
    """Write a cache entry atomically (a stage folder renamed into place); OSError when the
    cache folder cannot be written."""
    with _staged(at.folder) as stage:
        _save(stage, corpus, at.source, meta)


def load(path: Path, cfg: DataConfig, subwords: bytes | None = None,
         log=None) -> CachedCorpus:
    """The file tokenized: from the cache (memory-mapped), else tokenized and cached."""
    at = entry("corpus", path, cfg, subwords)
    cached = read_entry(at)
    if cached is not None:
        return cached[0]
    processes = tokenize_processes(path, cfg)
    if processes > 1:
        try:
            with _staged(at.folder) as stage:
                _tokenize_parallel(path, cfg, subwords, processes, stage, at.source)
            return _read(at.folder)
        except _Undecodable:
            pass  # the one-process path reports the line
        except OSError:
            pass  # no room for the cache: one process, in memory
    corpus = tokenize_lines(raw_lines(path, cfg), cfg, subwords)
    try:
        write_entry(at, corpus)
    except OSError as exc:
        if log is not None:
            log(f"note: the token cache was not written ({exc.strerror or exc})")
    return corpus


def _publish(stage: Path, folder: Path) -> None:
    """Move a finished cache entry into place (replacing a damaged one)."""
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rename(stage, folder)
    except OSError:
        if not (folder / "tokens.json").is_file():
            raise
        # another process of the run published the same entry first
