"""Text cleaning and tokenization.

- `basic` (default): drops HTML line breaks, splits words (keeping inner apostrophes, as in
  "don't") and punctuation marks as separate tokens.
- `tutorial`: the IMDB tutorial's cleaner: lowercase, strip `<br />`, keep only letters,
  digits and spaces, split on spaces.
- `whitespace`: split on whitespace only (pre-tokenized corpora such as PTB).
- `char`: one token per character.
"""

from __future__ import annotations

import re
from typing import Callable

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_NOT_ALNUM = re.compile(r"[^a-z0-9 ]+")


def _basic(text: str) -> list[str]:
    return _WORD.findall(_BREAK.sub(" ", text))


def _tutorial(text: str) -> list[str]:
    return _NOT_ALNUM.sub("", _BREAK.sub(" ", text.lower())).split()


def _whitespace(text: str) -> list[str]:
    return text.split()


def _char(text: str) -> list[str]:
    return list(text)


_TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "basic": _basic,
    "tutorial": _tutorial,
    "whitespace": _whitespace,
    "char": _char,
}


def get_tokenizer(name: str, lowercase: bool = True) -> Callable[[str], list[str]]:
    split = _TOKENIZERS[name]
    if not lowercase or name == "tutorial":
        return split
    return lambda text: split(text.lower())
