"""Chinese words by jieba's segmenter: `--tokenizer jieba` (`pip install 'rnnkit[zh]'`).

Runs of Han characters are cut into words by jieba (accurate mode: its dictionary, and its
HMM for words the dictionary lacks), so `很快，好吃，味道足` is `很快 ， 好吃 ， 味道 足`;
everything else is tokenized as `basic` does (Latin words whole and lowercased with the run's
setting, punctuation marks apart, kana and Thai per character). The default `basic`
tokenizer's one token per character needs no dictionary and suits any unspaced script; word
tokens give shorter sequences and a vocabulary of words, at the cost of the dictionary's
segmentation errors on informal text.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Callable

from rnnkit.data.tokenizers import basic
from rnnkit.errors import UsageError

# Han ideographs (CJK unified, extension A and beyond, compatibility forms)
_HAN_RUN = re.compile("([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+)")


@functools.lru_cache(maxsize=1)
def _segmenter():
    try:
        import jieba
    except ImportError:
        raise UsageError("--tokenizer jieba needs the jieba package: pip install "
                         "'rnnkit[zh]'") from None
    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" lines on stderr
    segmenter = jieba.Tokenizer()
    segmenter.initialize()
    return segmenter


def check_available() -> None:
    _segmenter()


def tokenizer() -> Callable[[str], list[str]]:
    cut = _segmenter().lcut

    def words(text: str) -> list[str]:
        tokens: list[str] = []
        for i, part in enumerate(_HAN_RUN.split(text)):
            if i % 2:
                tokens.extend(cut(part, HMM=True))
            elif part and not part.isspace():
                tokens.extend(basic.basic(part))
        return tokens

    return words
