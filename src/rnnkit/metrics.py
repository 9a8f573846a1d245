"""Classification metrics and perplexity."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(gold: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts: rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (gold, pred), 1)
    return matrix


def classification_report(gold: np.ndarray, pred: np.ndarray, names: list[str]) -> dict:
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix."""
    matrix = confusion_matrix(gold, pred, len(names))
    true_pos = np.diag(matrix).astype(float)
    predicted = matrix.sum(0).astype(float)
    actual = matrix.sum(1).astype(float)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, actual, out=np.zeros_like(true_pos), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return {
        "accuracy": float(true_pos.sum() / max(1, len(gold))),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, actual)
        },
        "confusion_matrix": matrix.tolist(),
        "labels": list(names),
        "examples": int(len(gold)),
    }


def perplexity(mean_loss: float) -> float:
    """exp of the mean per-token negative log-likelihood (natural log)."""
    return math.exp(min(mean_loss, 700.0))
