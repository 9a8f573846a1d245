"""Hashed word n-grams and naive-Bayes log-count ratios (Wang & Manning 2012, NBSVM).

An n-gram of token ids (a, b, c) is folded into one integer, then hashed into a fixed table of
`buckets` rows, so no n-gram dictionary is ever built. Each text becomes the set of its hashed
n-grams (binarized, as NBSVM does).
"""

from __future__ import annotations

import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier


class NgramFeatures:
    def __init__(self, order: int, buckets: int, vocab_size: int):
        self.order = order
        self.buckets = buckets
        self.base = np.uint64(vocab_size + 1)

    def features(self, ids: np.ndarray) -> np.ndarray:
        """Unique hashed n-gram ids (orders 1..order) of one text, as int64."""
        ids = ids.astype(np.uint64) + np.uint64(1)
        parts = []
        gram = ids
        for n in range(1, self.order + 1):
            if n > 1:
                if len(ids) < n:
                    break
                gram = gram[:-1] * self.base + ids[n - 1:]
            with np.errstate(over="ignore"):
                hashed = (gram + np.uint64(n)) * _MIX
            parts.append(hashed >> np.uint64(20))
        keys = np.concatenate(parts) % np.uint64(self.buckets)
        return np.unique(keys.astype(np.int64))

    def log_count_ratios(self, features: list[np.ndarray], labels: np.ndarray,
                         num_classes: int, alpha: float = 1.0) -> np.ndarray:
        """(buckets, C): for each class c, log(p_c / |p_c|_1) - log(q_c / |q_c|_1), where p_c
        counts the texts of class c holding a feature and q_c those of the other classes."""
        buckets = self.buckets
        counts = np.zeros((num_classes, buckets))
        for c in range(num_classes):
            picked = [f for f, y in zip(features, labels) if y == c]
            if picked:
                counts[c] = np.bincount(np.concatenate(picked), minlength=buckets)
        ratios = np.zeros((num_classes, buckets))
        total = counts.sum(0)
        for c in range(num_classes):
            p = counts[c] + alpha
            q = total - counts[c] + alpha
            ratios[c] = np.log(p / p.sum()) - np.log(q / q.sum())
        ratios[:, total == 0] = 0.0  # never seen in training: no evidence either way
        return ratios.T.astype(np.float32)
