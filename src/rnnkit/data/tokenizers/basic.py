"""The default tokenizer: words and punctuation marks; one token per character for scripts
written without spaces between words.

Drops HTML line breaks, splits words (keeping inner apostrophes, as in "don't") and
punctuation marks as separate tokens. Scripts written without spaces between words (Chinese,
Japanese kana, Thai, Lao, Khmer, Myanmar) give one token per character (with its combining
marks), so `很快，好吃` is `很 快 ， 好 吃`; Latin, Cyrillic, Korean and other words next to
them stay whole (`iPhone手机` is `iphone 手 机`).

`basic_kept` returns only the tokens a cut keeps, reading the text from the kept end(s) and
stopping once it has enough tokens: the same tokens as tokenizing everything and cutting (its
tokens never span whitespace, so it can run chunk by chunk), for a fraction of the work on
long texts.
"""

from __future__ import annotations

import re
import sys
from typing import Sequence

from rnnkit.data.tokenizers.cut import cut, kept_ends

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Scripts without spaces between words: Thai, Lao, Myanmar, Khmer, kana, CJK ideographs (and
# their extensions and compatibility forms), halfwidth katakana.
NO_SPACE = ("\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
            "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f")
# Marks that belong to the character before them (general combining marks and those of the
# scripts above): Thai/Lao vowel and tone marks, Myanmar and Khmer signs, kana voicing marks.
MARKS = ("\u0300-\u036f\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ecd"
          "\u102b-\u103e\u1056-\u1059\u105e-\u1060\u1062-\u1064\u1067-\u106d\u1071-\u1074"
          "\u1082-\u108d\u108f\u109a-\u109d\u17b4-\u17d3\u17dd\u3099\u309a\uff9e\uff9f")
# A token: one character of those scripts with its marks; a word of other letters, digits or
# underscores, with inner apostrophes; or one other visible character.
_WORD = re.compile(f"[{NO_SPACE}][{MARKS}]*|[^\\W{NO_SPACE}]+(?:'[^\\W{NO_SPACE}]+)*"
                   f"|[^\\w\\s][{MARKS}]*")
_HAS_NO_SPACE = re.compile(f"[{NO_SPACE}]")
# _WORD on ASCII text, where none of those scripts or marks can occur (the same tokens).
_ASCII_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
# Joined without spaces: those scripts and CJK punctuation and fullwidth forms.
TIGHT = f"{NO_SPACE}\u3000-\u303f\uff00-\uffef"
_TIGHT = re.compile(f"[{TIGHT}]")


def basic(text: str) -> list[str]:
    chunks = _BREAK.sub(" ", text).split()
    # Most English text is all ASCII: no script without spaces, no marks. Its own loop, with
    # no length check, reads whole reviews about 10% faster than _basic_front does (and one
    # loop for both kinds of text in _basic_front costs as much again).
    if text.isascii():
        tokens: list[str] = []
        append, extend, findall = tokens.append, tokens.extend, _ASCII_WORD.findall
        for chunk in chunks:
            if chunk.isalnum():
                append(chunk)
            else:
                extend(findall(chunk))
        return tokens
    return _basic_front(chunks, sys.maxsize, False)


def _basic_front(chunks: list[str], n: int, ascii_text: bool) -> list[str]:
    """The first n tokens of whitespace-free chunks (all of them if there are fewer).

    Chunk by chunk: str.split and the regex's \\s agree on whitespace, and str.isalnum is
    exactly \\w without "_", so an alphanumeric chunk without characters of the unspaced
    scripts (most chunks in English) is one token, no regex; other chunks of an ASCII text
    take the plain word regex."""
    tokens: list[str] = []
    append, extend = tokens.append, tokens.extend
    if ascii_text:
        findall = _ASCII_WORD.findall
        for chunk in chunks:
            if chunk.isalnum():
                append(chunk)
            else:
                extend(findall(chunk))
            if len(tokens) >= n:
                break
    else:
        findall, no_space = _WORD.findall, _HAS_NO_SPACE.search
        for chunk in chunks:
            if chunk.isalnum() and (chunk.isascii() or not no_space(chunk)):
                append(chunk)
            else:
                extend(findall(chunk))
            if len(tokens) >= n:
                break
    return tokens if len(tokens) <= n else tokens[:n]


def _basic_back(chunks: list[str], n: int, ascii_text: bool) -> list[str]:
    """The last n tokens of the chunks (all of them if there are fewer), in reading order."""
    backwards: list[str] = []
    append, extend = backwards.append, backwards.extend
    if ascii_text:
        findall = _ASCII_WORD.findall
        for chunk in reversed(chunks):
            if chunk.isalnum():
                append(chunk)
            else:
                extend(findall(chunk)[::-1])
            if len(backwards) >= n:
                break
    else:
        findall, no_space = _WORD.findall, _HAS_NO_SPACE.search
        for chunk in reversed(chunks):
            if chunk.isalnum() and (chunk.isascii() or not no_space(chunk)):
                append(chunk)
            else:
                extend(findall(chunk)[::-1])
            if len(backwards) >= n:
                break
    del backwards[n:]
    backwards.reverse()
    return backwards


def basic_kept(text: str, max_len: int, truncate: str) -> list[str]:
    """`cut(_basic(text), max_len, truncate)`, tokenizing only the ends of the text the cut
    keeps: `cut` runs on a stand-in that has the text's tokens at those ends and is longer
    than max_len exactly when the text's tokens are."""
    chunks = _BREAK.sub(" ", text).split()
    ascii_text = text.isascii()
    head, tail = kept_ends(max_len, truncate)
    if not head:
        return cut(_basic_back(chunks, max_len + 1, ascii_text), max_len, truncate)
    front = _basic_front(chunks, max_len + 1, ascii_text)
    if not tail or len(front) <= max_len:
        return cut(front, max_len, truncate)
    return cut(front + _basic_back(chunks, tail, ascii_text), max_len, truncate)


def join(tokens: Sequence[str]) -> str:
    """Tokens back to text that `basic` reads as the same tokens: joined by spaces, but by
    nothing next to a character of a script written without spaces."""
    parts: list[str] = []
    previous_tight = True  # no space before the first token
    for token in tokens:
        tight = bool(_TIGHT.match(token))
        if parts and not (tight and previous_tight):
            parts.append(" ")
        parts.append(token)
        previous_tight = tight
    return "".join(parts)
