"""Text cleaning and tokenization.

- `basic` (default): drops HTML line breaks, splits words (keeping inner apostrophes, as in
  "don't") and punctuation marks as separate tokens. Scripts written without spaces between
  words (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) give one token per character (with
  its combining marks), so `很快，好吃` is `很 快 ， 好 吃`; Latin, Cyrillic, Korean and other
  words next to them stay whole (`iPhone手机` is `iphone 手 机`).
- `tutorial`: the IMDB tutorial's cleaner: lowercase, strip `<br />`, keep only letters,
  digits and spaces, split on spaces.
- `whitespace`: split on whitespace only (pre-tokenized corpora such as PTB).
- `char`: one token per character.
- `sentencepiece`: subword pieces of a SentencePiece model learned from the training split
  (`rnnkit.subwords`; the model lives in the run's vocabulary).

`get_tokenizer(..., max_len, truncate)` returns only the tokens a cut keeps. For `basic` it reads
the text from the kept end(s) and stops once it has enough tokens, which gives the same tokens
as tokenizing everything and cutting (a tokenizer whose tokens never span whitespace can be run
chunk by chunk), for a fraction of the work on long texts.
"""

from __future__ import annotations

import re
import sys
from typing import Callable, Sequence

import numpy as np

Tokenizer = Callable[[str], list[str]]

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Scripts without spaces between words: Thai, Lao, Myanmar, Khmer, kana, CJK ideographs (and
# their extensions and compatibility forms), halfwidth katakana.
NO_SPACE = ("\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
            "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f")
# Marks that belong to the character before them (general combining marks and those of the
# scripts above): Thai/Lao vowel and tone marks, Myanmar and Khmer signs, kana voicing marks.
_MARKS = ("\u0300-\u036f\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ecd"
          "\u102b-\u103e\u1056-\u1059\u105e-\u1060\u1062-\u1064\u1067-\u106d\u1071-\u1074"
          "\u1082-\u108d\u108f\u109a-\u109d\u17b4-\u17d3\u17dd\u3099\u309a\uff9e\uff9f")
# A token: one character of those scripts with its marks; a word of other letters, digits or
# underscores, with inner apostrophes; or one other visible character.
_WORD = re.compile(f"[{NO_SPACE}][{_MARKS}]*|[^\\W{NO_SPACE}]+(?:'[^\\W{NO_SPACE}]+)*"
                   f"|[^\\w\\s][{_MARKS}]*")
_HAS_NO_SPACE = re.compile(f"[{NO_SPACE}]")
# Joined without spaces: those scripts and CJK punctuation and fullwidth forms.
_TIGHT = re.compile(f"[{NO_SPACE}\u3000-\u303f\uff00-\uffef]")
_NOT_ALNUM = re.compile(r"[^a-z0-9 ]+")


def kept_ends(max_len: int, truncate: str) -> tuple[int, int]:
    """How many tokens a cut to `max_len` keeps from a long text's front and from its back:
    its first ones (`head`), its last ones (`tail`) or the opening third and closing two
    thirds (`head+tail`)."""
    if truncate == "head":
        return max_len, 0
    if truncate == "tail":
        return 0, max_len
    return max_len // 3, max_len - max_len // 3


def cut(seq: Sequence, max_len: int, truncate: str) -> Sequence:
    """The tokens or ids (a list or a numpy array) a text keeps when cut to `max_len` (0 keeps
    all): the one cut used everywhere, before training, prediction and while tokenizing."""
    if not max_len or len(seq) <= max_len:
        return seq
    head, tail = kept_ends(max_len, truncate)
    if not tail:
        return seq[:head]
    back = seq[len(seq) - tail:]
    if not head:
        return back
    return np.concatenate((seq[:head], back)) if isinstance(seq, np.ndarray) else seq[:head] + back


def _basic(text: str) -> list[str]:
    return _basic_front(_BREAK.sub(" ", text).split(), sys.maxsize)


def _basic_front(chunks: list[str], n: int) -> list[str]:
    """The first n tokens of whitespace-free chunks (all of them if there are fewer).

    Chunk by chunk: str.split and the regex's \\s agree on whitespace, and str.isalnum is
    exactly \\w without "_", so an alphanumeric ASCII chunk (most of them in English) is one
    token, no regex."""
    tokens: list[str] = []
    append, extend, findall = tokens.append, tokens.extend, _WORD.findall
    for chunk in chunks:
        if chunk.isalnum() and (chunk.isascii() or not _HAS_NO_SPACE.search(chunk)):
            append(chunk)
            if len(tokens) >= n:
                break
        else:
            extend(findall(chunk))
            if len(tokens) >= n:
                break
    return tokens if len(tokens) <= n else tokens[:n]


def _basic_back(chunks: list[str], n: int) -> list[str]:
    """The last n tokens of the chunks (all of them if there are fewer), in reading order."""
    backwards: list[str] = []
    append, extend, findall = backwards.append, backwards.extend, _WORD.findall
    for chunk in reversed(chunks):
        if chunk.isalnum() and (chunk.isascii() or not _HAS_NO_SPACE.search(chunk)):
            append(chunk)
            if len(backwards) >= n:
                break
        else:
            extend(findall(chunk)[::-1])
            if len(backwards) >= n:
                break
    del backwards[n:]
    backwards.reverse()
    return backwards


def _basic_kept(text: str, max_len: int, truncate: str) -> list[str]:
    """`cut(_basic(text), max_len, truncate)`, tokenizing only the ends of the text the cut
    keeps: `cut` runs on a stand-in that has the text's tokens at those ends and is longer
    than max_len exactly when the text's tokens are."""
    chunks = _BREAK.sub(" ", text).split()
    head, tail = kept_ends(max_len, truncate)
    if not head:
        return cut(_basic_back(chunks, max_len + 1), max_len, truncate)
    front = _basic_front(chunks, max_len + 1)
    if not tail or len(front) <= max_len:
        return cut(front, max_len, truncate)
    return cut(front + _basic_back(chunks, tail), max_len, truncate)


def _tutorial(text: str) -> list[str]:
    return _NOT_ALNUM.sub("", _BREAK.sub(" ", text.lower())).split()


def _whitespace(text: str) -> list[str]:
    return text.split()


def _char(text: str) -> list[str]:
    return list(text)


def join_tokens(tokens: Sequence[str], tokenizer: str) -> str:
    """Tokens back to text that the tokenizer reads as the same tokens: joined by spaces, but
    by nothing next to a character of a script written without spaces (and always by nothing
    for `char`)."""
    if tokenizer == "char":
        return "".join(tokens)
    if tokenizer == "sentencepiece":
        from rnnkit import subwords

        return subwords.detokenize(list(tokens))
    parts: list[str] = []
    previous_tight = True  # no space before the first token
    for token in tokens:
        tight = bool(_TIGHT.match(token))
        if parts and not (tight and previous_tight):
            parts.append(" ")
        parts.append(token)
        previous_tight = tight
    return "".join(parts)


_TOKENIZERS: dict[str, Tokenizer] = {
    "basic": _basic,
    "tutorial": _tutorial,
    "whitespace": _whitespace,
    "char": _char,
}


def get_tokenizer(name: str, lowercase: bool = True, max_len: int = 0,
                  truncate: str = "head", subwords: bytes | None = None) -> Tokenizer:
    """text -> tokens; with `max_len`, only the tokens that `cut(tokens, max_len, truncate)`
    keeps. `subwords` is the SentencePiece model of the `sentencepiece` tokenizer."""
    lower = lowercase and name != "tutorial"  # the tutorial cleaner lowercases itself
    if max_len and name == "basic":
        if lower:
            return lambda text: _basic_kept(text.lower(), max_len, truncate)
        return lambda text: _basic_kept(text, max_len, truncate)
    if name == "sentencepiece":
        if subwords is None:
            raise ValueError("the sentencepiece tokenizer needs its model")
        from rnnkit import subwords as subword_models

        split = subword_models.tokenizer(subwords)
    else:
        split = _TOKENIZERS[name]
    full = (lambda text: split(text.lower())) if lower else split
    if not max_len:
        return full
    return lambda text: cut(full(text), max_len, truncate)
