"""Three small tokenizers: the IMDB tutorial's cleaner, whitespace splitting (pre-tokenized
corpora such as PTB) and one token per character."""

from __future__ import annotations

import re

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_NOT_ALNUM = re.compile(r"[^a-z0-9 ]+")


def tutorial(text: str) -> list[str]:
    return _NOT_ALNUM.sub("", _BREAK.sub(" ", text.lower())).split()


def whitespace(text: str) -> list[str]:
    return text.split()


def char(text: str) -> list[str]:
    return list(text)
