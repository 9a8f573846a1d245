"""Small file helpers: atomic writes, transparent gzip reading, one-line read errors and the
rnnkit home folder."""

from __future__ import annotations

import codecs
import gzip
import os
import tempfile
import zlib
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from rnnkit.errors import DataError, UsageError

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


ENCODING_HINT = ("if it is in another encoding, name it with --encoding (gbk, big5, shift_jis, "
                 "euc-kr, latin-1, cp1252, ...); else re-save it as UTF-8")


def check_encoding(name: str) -> str:
    """The codec's canonical name; one-line errors for unknown ones and for encodings whose
    line ends are not single bytes (UTF-16/32), which files are not read in."""
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise UsageError(f"--encoding {name!r} is not an encoding Python knows (try utf-8, "
                         "gbk, big5, shift_jis, euc-kr, latin-1, cp1252)") from None
    if canonical.startswith(("utf-16", "utf-32")):
        raise UsageError(f"--encoding {name}: files in UTF-16/32 are not read; re-save them "
                         "as UTF-8")
    return canonical


def decode_lines(raw: Iterable[bytes], name: str, fix: str = ENCODING_HINT,
                 encoding: str = "utf-8") -> Iterator[str]:
    """Text lines from byte lines, a UTF-8 byte-order mark before the first one dropped. Lines
    are decoded one by one so that an invalid byte is reported at its exact line and byte
    offset (of the decompressed bytes, for a .gz file) of `name`."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    offset = 0
    for number, line in enumerate(raw, 1):
        try:
            yield line.decode("utf-8-sig" if utf8 and number == 1 else encoding)
        except UnicodeDecodeError as exc:
            bad = line[exc.start]
            raise DataError(f"{name}:{number}: not valid {'UTF-8' if utf8 else encoding} "
                            f"(byte 0x{bad:02x} at byte offset {offset + exc.start:,}); "
                            f"{fix}") from None
        offset += len(line)


def text_lines(path: Path, encoding: str = "utf-8") -> Iterator[str]:
    """Lines of a text file (gunzipped when the name ends in .gz), line ends kept, a UTF-8
    byte-order mark dropped. Any failure to read is a one-line DataError naming the file."""
    path = Path(path)
    try:
        with open_binary(path) as f:
            yield from decode_lines(f, str(path), encoding=encoding)
    except READ_ERRORS as exc:
        raise read_error(path, exc) from None
