"""Pretrained word vectors: GloVe / word2vec / fastText text files (plain or .gz) and word2vec
binary files, read row by row so that only the rows of our vocabulary are ever held.

Words the vectors lack get a small random row (default) or the mean of the found rows; a word
is also looked up in lower case when the exact form is missing, and a contraction the
default tokenizer keeps whole ("don't", "it's") as the mean of the parts that vectors trained
on Penn-Treebank-style tokens (GloVe, word2vec) have instead ("do" + "n't", "it" + "'s").
Training vectors of one's own uses gensim's word2vec and writes the standard text format.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnnkit.data import sources
from rnnkit.errors import DataError, UsageError
from rnnkit.files import (READ_ERRORS, atomic_write, is_gzip, open_binary, read_error,
                          text_lines)
from rnnkit.data.vocab import Vocab


@dataclass
class Coverage:
    found: int
    total: int
    token_found: int
    token_total: int
    source: str
    composed: int = 0  # of `found`: contractions whose row is the mean of their parts' rows

    def __str__(self) -> str:
        tok = self.token_found / max(1, self.token_total)
        parts = f", {self.composed} of them from their parts" if self.composed else ""
        return (f"embeddings {self.source}: {self.found}/{self.total} vocabulary words found "
                f"({self.found / max(1, self.total):.1%}{parts}); {tok:.1%} of training "
                "tokens covered")


# Clitics that Penn-Treebank-style tokenizers split off ("does n't", "ca n't", "it 's",
# "we 're"): the tokenization of GloVe's and word2vec's training text. The default tokenizer
# keeps "doesn't" whole, so without this the commonest negations of English reviews have no
# pretrained row (GloVe 6B: 1.7 of the 2.3% of imdb-seed's training tokens it lacks).
CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")


def clitic_parts(word: str) -> tuple[str, str] | None:
    """("does", "n't") for "doesn't", ("it", "'s") for "it's"; None for other words."""
    low = word.lower()
    for clitic in CLITICS:
        if low.endswith(clitic) and len(low) > len(clitic) and low[-len(clitic) - 1] != "'":
            return word[:-len(clitic)], word[-len(clitic):]
    return None


def vectors_path(name_or_path: str) -> Path:
    if name_or_path in sources.DATASETS:
        return sources.resolve(name_or_path, "vectors")
    path = Path(name_or_path)
    try:
        found = path.is_file()
    except OSError as exc:  # a folder on the way that may not be looked into
        raise read_error(path, exc) from None
    if not found:
        raise UsageError(f"{path}: embeddings file not found; give a vectors file or one of: "
                         + ", ".join(n for n, d in sources.DATASETS.items() if d.kind == "vectors"))
    return path


def _is_binary(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(".bin")


def read_vectors(path: Path, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    """Rows of `wanted` words (and their lower-case forms) found in the file, and the dimension."""
    return (_read_binary if _is_binary(path) else _read_text)(path, wanted)


def _read_text(path: Path, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    rows: dict[str, np.ndarray] = {}
    dim = 0
    for lineno, line in enumerate(text_lines(path), 1):
        word, _, rest = line.rstrip().partition(" ")
        if lineno == 1 and _is_header(word, rest):
            continue  # word2vec/fastText text header: "<count> <dim>"
        n = rest.count(" ") + 1
        if dim == 0:
            dim = n
            if not rest or dim < 2:
                raise DataError(f"{path}:{lineno}: not a word-vector line (expected a "
                                "word followed by numbers)")
        elif n != dim:
            raise DataError(f"{path}:{lineno}: {n} values where the file's vectors have "
                            f"{dim}; the file is truncated or mixes dimensions")
        if word in wanted:
            try:
                rows[word] = np.array(rest.split(" "), dtype=np.float32)
            except ValueError:
                raise DataError(f"{path}:{lineno}: a value of {word!r} is not a number") \
                    from None
    if dim == 0:
        raise DataError(f"{path}: no vectors in the file")
    return rows, dim


def _is_header(word: str, rest: str) -> bool:
    return word.isdigit() and rest.strip().isdigit()


def _read_binary(path: Path, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    rows: dict[str, np.ndarray] = {}
    try:
        with open_binary(path) as f:
            header = f.readline().split()
            if len(header) != 2 or not all(h.isdigit() for h in header):
                raise DataError(f"{path}:1: not a word2vec binary file (no '<count> <dim>' header)")
            count, dim = int(header[0]), int(header[1])
            for i in range(count):
                chars = bytearray()
                while (c := f.read(1)) != b" ":
                    if not c:
                        raise DataError(f"{path}: ends after {i} of {count} vectors")
                    if c != b"\n":
                        chars += c
                data = f.read(4 * dim)
                if len(data) != 4 * dim:
                    raise DataError(f"{path}: vector {i + 1} is truncated")
                word = chars.decode("utf-8", errors="replace")
                if word in wanted:
                    rows[word] = np.frombuffer(data, dtype="<f4").copy()
    except READ_ERRORS as exc:
        raise read_error(path, exc) from None
    return rows, dim


def embedding_matrix(vocab: Vocab, source: str, dim: int, unknown: str = "random",
                     counts: dict[str, int] | None = None, seed: int = 0
                     ) -> tuple[torch.Tensor, Coverage]:
    """A (len(vocab), dim) matrix with pretrained rows where the vectors have the word."""
    path = vectors_path(source)
    parts_of = {w: parts for w in vocab.itos if (parts := clitic_parts(w)) is not None}
    wanted = set(vocab.itos).union(*parts_of.values())
    rows, file_dim = read_vectors(path, wanted | {w.lower() for w in wanted})
    if file_dim != dim:
        raise UsageError(f"{path}: vectors have {file_dim} dimensions but the model's "
                         f"embedding_dim is {dim}; set --embedding-dim {file_dim}")

    def lookup(word: str) -> np.ndarray | None:
        vec = rows.get(word)
        return rows.get(word.lower()) if vec is None else vec

    matrix = np.zeros((len(vocab), dim), dtype=np.float32)
    found = np.zeros(len(vocab), dtype=bool)
    composed = []
    for i, word in enumerate(vocab.itos):
        vec = lookup(word)
        if vec is not None:
            matrix[i] = vec
            found[i] = True
        elif word in parts_of:
            vecs = [lookup(p) for p in parts_of[word]]
            if all(v is not None for v in vecs):
                composed.append((i, np.mean(vecs, axis=0)))
    # The mean and spread of the unknown words' rows are those of the rows read directly.
    if found.any():
        mean, std = matrix[found].mean(0), matrix[found].std()
    else:
        mean, std = np.zeros(dim, np.float32), 0.1
    for i, vec in composed:
        matrix[i] = vec
        found[i] = True
    rng = np.random.default_rng(seed)
    missing = ~found
    if unknown == "mean":
        matrix[missing] = mean
    else:
        matrix[missing] = rng.normal(0.0, std, size=(int(missing.sum()), dim))
    if vocab.pad_id >= 0:
        matrix[vocab.pad_id] = 0.0
    counts = counts or {}
    token_total = sum(counts.values())
    token_found = sum(c for w, c in counts.items() if w in vocab.stoi and found[vocab.stoi[w]])
    coverage = Coverage(int(found.sum()), len(vocab), token_found, token_total, str(path),
                        len(composed))
    return torch.from_numpy(matrix), coverage


def train_word2vec(corpus: list[list[str]], out: Path, dim: int = 100, window: int = 5,
                   min_count: int = 5, epochs: int = 5, workers: int = 2, seed: int = 1,
                   sg: bool = False) -> int:
    """Train word2vec with gensim and write the standard text format; returns the word count."""
    try:
        from gensim.models import Word2Vec
    except ImportError:  # pragma: no cover - gensim is a core dependency
        raise UsageError("training embeddings needs gensim: pip install gensim") from None
    if not corpus:
        raise UsageError("the corpus for word2vec is empty")
    model = Word2Vec(sentences=corpus, vector_size=dim, window=window, min_count=min_count,
                     workers=workers, epochs=epochs, seed=seed, sg=int(sg))
    words = model.wv.index_to_key
    if not words:
        raise UsageError(f"no word occurs {min_count} times; lower --min-count")

    def write(tmp: Path) -> None:
        opener = gzip.open if is_gzip(out) else open
        with opener(tmp, "wt", encoding="utf-8") as f:
            f.write(f"{len(words)} {dim}\n")
            for word in words:
                values = " ".join(f"{v:.6g}" for v in model.wv[word])
                f.write(f"{word} {values}\n")

    try:
        atomic_write(out, write)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write the vectors ({exc.strerror or exc})") from None
    return len(words)
