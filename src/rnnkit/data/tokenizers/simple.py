"""Four small tokenizers: the IMDB tutorial's cleaner, whitespace splitting (pre-tokenized
corpora such as PTB), `spaced` (whitespace splitting, but one token per character of scripts
written without spaces: the `lm` preset's, for a corpus in any language) and one token per
character."""

from __future__ import annotations

import re

from rnnkit.data.tokenizers.basic import MARKS, TIGHT

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_NOT_ALNUM = re.compile(r"[^a-z0-9 ]+")


def tutorial(text: str) -> list[str]:
    return _NOT_ALNUM.sub("", _BREAK.sub(" ", text.lower())).split()


def whitespace(text: str) -> list[str]:
    return text.split()


# One character of a script written without spaces (or CJK punctuation, a fullwidth form)
# with its marks, or a run of other visible characters.
_SPACED = re.compile(f"[{TIGHT}][{MARKS}]*|[^{TIGHT}]+")


def spaced(text: str) -> list[str]:
    """The tokens between whitespace, as `whitespace` gives them, but with each character of
    Chinese, Japanese, Thai and the other scripts written without spaces a token of its own:
    `iPhone手机 很好` is `iPhone 手 机 很 好`. The same tokens as `whitespace` on text without
    those scripts (all of PTB and WikiText), and `basic.join` writes them back."""
    if text.isascii():
        return text.split()
    findall = _SPACED.findall  # a chunk without those scripts is one match: itself
    return [token for chunk in text.split() for token in findall(chunk)]


def char(text: str) -> list[str]:
    return list(text)
