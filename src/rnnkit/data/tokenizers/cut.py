"""The one cut: which tokens (or ids) of a long text survive `max_len` and `truncate`."""

from __future__ import annotations

from typing import Sequence

import numpy as np


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
