"""Metrics on examples worked out by hand."""

import math

import numpy as np
import pytest

from rnnkit.metrics import classification_report, confusion_matrix, perplexity


def test_confusion_matrix_rows_are_true_classes():
    gold = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 2])
    assert confusion_matrix(gold, pred, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_report_on_a_worked_example():
    # true:  a a a b b c      predicted: a b a b c c
    gold = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 1, 0, 1, 2, 2])
    report = classification_report(gold, pred, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (report["per_class"][k] for k in "abc")
    # a: 2 of 2 predictions right, 2 of 3 found;  b: 1 of 2 right, 1 of 2 found;
    # c: 1 of 2 right, 1 of 1 found
    assert (a["precision"], a["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0)
    assert a["f1"] == pytest.approx(0.8) and b["f1"] == 0.5 and c["f1"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report["macro_precision"] == pytest.approx(2 / 3)
    assert [a["support"], b["support"], c["support"]] == [3, 2, 1]
    assert report["examples"] == 6 and report["labels"] == ["a", "b", "c"]


def test_a_class_never_predicted_scores_zero_not_nan():
    report = classification_report(np.array([0, 1, 1]), np.array([0, 0, 0]), ["x", "y"])
    y = report["per_class"]["y"]
    assert (y["precision"], y["recall"], y["f1"]) == (0.0, 0.0, 0.0)
    assert report["per_class"]["x"]["f1"] == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(50)) == pytest.approx(50)
    assert perplexity(1e6) == math.exp(700)  # capped, not an overflow
