"""Tokenizers: one registry, each a small module.

- `basic` (default, `basic.py`): words and punctuation marks; one token per character for
  scripts written without spaces (Chinese, Japanese, Thai, ...), words beside them whole.
- `tutorial`, `whitespace`, `spaced`, `char` (`simple.py`): the IMDB tutorial's cleaner,
  whitespace splitting (pre-tokenized corpora such as PTB), whitespace splitting with one
  token per character of the scripts written without spaces (the `lm` preset's), one token
  per character.
- `jieba` (`chinese.py`, `pip install 'rnnkit[zh]'`): Chinese words by jieba's segmenter,
  other text as `basic` reads it.
- `sentencepiece` (`sentencepiece.py`): subword pieces of a SentencePiece model learned from
  the training split; the model lives in the run's vocabulary.

`get_tokenizer(name, lowercase, max_len, truncate, subwords)` gives text -> tokens, with
`max_len` only the tokens that `cut(tokens, max_len, truncate)` keeps (for `basic` without
tokenizing the rest of a long text); `join_tokens` turns tokens back into text that the
tokenizer reads as the same tokens.
"""

from __future__ import annotations

from typing import Callable, Sequence

from rnnkit.data.tokenizers import basic, simple
from rnnkit.data.tokenizers.cut import cut, kept_ends

Tokenizer = Callable[[str], list[str]]

__all__ = ["Tokenizer", "cut", "get_tokenizer", "join_tokens", "kept_ends"]

_SPLITTERS: dict[str, Tokenizer] = {
    "basic": basic.basic,
    "tutorial": simple.tutorial,
    "whitespace": simple.whitespace,
    "spaced": simple.spaced,
    "char": simple.char,
}


def get_tokenizer(name: str, lowercase: bool = True, max_len: int = 0,
                  truncate: str = "head", subwords: bytes | None = None) -> Tokenizer:
    """text -> tokens; with `max_len`, only the tokens that `cut(tokens, max_len, truncate)`
    keeps. `subwords` is the SentencePiece model of the `sentencepiece` tokenizer."""
    lower = lowercase and name != "tutorial"  # the tutorial cleaner lowercases itself
    if max_len and name == "basic":
        if lower:
            return lambda text: basic.basic_kept(text.lower(), max_len, truncate)
        return lambda text: basic.basic_kept(text, max_len, truncate)
    if name == "sentencepiece":
        if subwords is None:
            raise ValueError("the sentencepiece tokenizer needs its model")
        from rnnkit.data.tokenizers import sentencepiece

        split = sentencepiece.tokenizer(subwords)
    elif name == "jieba":
        from rnnkit.data.tokenizers import chinese

        split = chinese.tokenizer()
    else:
        split = _SPLITTERS[name]
    full = (lambda text: split(text.lower())) if lower else split
    if not max_len:
        return full
    return lambda text: cut(full(text), max_len, truncate)


def join_tokens(tokens: Sequence[str], tokenizer: str) -> str:
    """Tokens back to text that the tokenizer reads as the same tokens."""
    if tokenizer == "char":
        return "".join(tokens)
    if tokenizer == "whitespace":  # its tokens may be words of a pre-segmented Chinese text
        return " ".join(tokens)
    if tokenizer == "sentencepiece":
        from rnnkit.data.tokenizers import sentencepiece

        return sentencepiece.detokenize(list(tokens))
    return basic.join(tokens)  # spaces, none between characters of unspaced scripts
