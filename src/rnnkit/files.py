"""Small file helpers: atomic writes and transparent gzip reading."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from rnnkit.errors import DataError


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


def text_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file (gunzipped when the name ends in .gz), line ends kept.

    Lines are decoded one by one so that an invalid byte is reported at its exact line.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            for number, raw in enumerate(f, 1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(f"{path}:{number}: not valid UTF-8; re-save the file as "
                                    "UTF-8") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
