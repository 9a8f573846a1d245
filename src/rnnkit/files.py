"""Small file helpers: atomic writes, transparent gzip reading, one-line read errors and the
rnnkit home folder."""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from rnnkit.errors import DataError

# What reading a plain or gzipped file can raise: OS errors (gzip.BadGzipFile among them), a
# truncated gzip stream (EOFError) and corrupt compressed data (zlib.error).
READ_ERRORS = (OSError, EOFError, zlib.error)


def rnnkit_home() -> Path:
    """`$RNNKIT_HOME`, default `~/.cache/rnnkit`: caches, downloads, built kernels. The one
    place that reads the variable."""
    return Path(os.environ.get("RNNKIT_HOME") or Path.home() / ".cache" / "rnnkit")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    Either the whole new file appears or the old one stays: never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def is_gzip(path: Path) -> bool:
    return Path(path).name.lower().endswith(".gz")


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when its name ends in .gz (in any case)."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def read_error(path: Path | str, exc: BaseException) -> DataError:
    """A one-line error for an exception in READ_ERRORS raised while reading `path`."""
    if isinstance(exc, EOFError):
        return DataError(f"{path}: the compressed file is truncated (it ends mid-stream); "
                         "download or compress it again")
    if isinstance(exc, (zlib.error, gzip.BadGzipFile)):
        return DataError(f"{path}: corrupt gzip data ({exc}); download or compress it again")
    reason = getattr(exc, "strerror", None) or exc
    return DataError(f"{path}: cannot read ({reason})")


def decode_lines(raw: Iterable[bytes], name: str, fix: str = "re-save the file as UTF-8"
                 ) -> Iterator[str]:
    """UTF-8 lines from byte lines, a byte-order mark before the first one dropped. Lines are
    decoded one by one so that an invalid byte is reported at its exact line of `name`."""
    for number, line in enumerate(raw, 1):
        try:
            yield line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{name}:{number}: not valid UTF-8; {fix}") from None


def text_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file (gunzipped when the name ends in .gz), line ends kept, a
    byte-order mark dropped. Any failure to read is a one-line DataError naming the file."""
    path = Path(path)
    try:
        with open_binary(path) as f:
            yield from decode_lines(f, str(path))
    except READ_ERRORS as exc:
        raise read_error(path, exc) from None
