"""benchmarks/baselines.py: rnnkit's splits, the NB ratios, and the script end to end, on tiny
synthetic data (fastText rows left out: it is an optional extra)."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer

from conftest import make_reviews
from rnnkit import api
from rnnkit.config import DataConfig, preset
from rnnkit.data.splits import load_classification
from rnnkit.data.tokenizers import get_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import baselines  # noqa: E402

LINEAR = ["--methods", "tfidf,nblr", "--grid", "1,4"]


def _write(path: Path, rows) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    rows = make_reviews(400)
    # rnnkit drops these before carving: an empty text (the reader) and one with no token
    # (the tokenizer): the carve's permutation is over the texts that remain.
    rows[5] = ("   ", "neg")
    rows[8] = ("<br /><br />", "pos")
    return {"train": _write(tmp_path / "train.tsv", rows[:300]),
            "test": _write(tmp_path / "test.tsv", rows[300:])}


def _ids(texts, cfg, vocab):
    tokenize = get_tokenizer(cfg.tokenizer, cfg.lowercase)
    return [vocab.encode_array(tokenize(t)).tolist() for t in texts]


@pytest.mark.parametrize("settings", [dict(), dict(limit_train=100), dict(valid_fraction=0.25)])
@pytest.mark.parametrize("seed", [1, 7])
def test_splits_are_rnnkits(files, settings, seed):
    cfg = DataConfig(train=str(files["train"]), test=str(files["test"]), text_field="sentence",
                     **settings)
    ours = baselines.load_split_texts(cfg, seed)
    theirs = load_classification(cfg, seed)
    assert ours.classes == theirs.classes and ours.names == theirs.label_names
    assert set(ours.splits) == set(theirs.splits) == {"train", "valid", "test"}
    for split, part in theirs.splits.items():
        mine = ours.splits[split]
        assert len(mine.texts) == len(part.ids)
        assert mine.labels.tolist() == part.labels.tolist()
        # the same texts in the same order: their tokens give rnnkit's ids exactly
        assert _ids(mine.texts, cfg, theirs.vocab) == [a.tolist() for a in part.ids]
    assert len(ours.splits["valid"].texts) == round(298 * cfg.valid_fraction)
    assert "<br /><br />" not in sum((p.texts for p in ours.splits.values()), [])


def test_a_valid_file_is_used_as_it_is(files, tmp_path):
    valid = _write(tmp_path / "dev.tsv", make_reviews(50, seed=3))
    cfg = DataConfig(train=str(files["train"]), valid=str(valid), text_field="sentence")
    ours, theirs = baselines.load_split_texts(cfg, 1), load_classification(cfg, 1)
    assert len(ours.splits["train"].texts) == len(theirs.splits["train"].ids) == 298
    assert ours.splits["valid"].texts == [t for t, _ in make_reviews(50, seed=3)]
    assert ours.splits["valid"].labels.tolist() == theirs.splits["valid"].labels.tolist()


def test_nb_ratios_by_hand():
    docs = ["good good movie", "good fun", "bad movie", "bad boring"]
    vec = CountVectorizer()
    binary = baselines.binarize(vec.fit_transform(docs).tocsr())
    assert binary.toarray()[0].tolist() == [0, 0, 0, 1, 1]  # "good" twice counts once
    r = baselines.nb_ratios(binary, np.array([True, True, False, False]), alpha=1.0)
    # p = 1 + [0, 0, 1, 2, 1], q = 1 + [2, 1, 0, 0, 1] over [bad, boring, fun, good, movie];
    # both sum to 9, so r = log(p / q)
    assert list(vec.get_feature_names_out()) == ["bad", "boring", "fun", "good", "movie"]
    expected = [math.log(1 / 3), math.log(1 / 2), math.log(2), math.log(3), 0.0]
    assert np.allclose(r, expected)


def test_choose_prefers_the_best_then_the_smaller_setting():
    assert baselines.choose({0.5: 0.8, 1.0: 0.9, 4.0: 0.9, 16.0: 0.85}) == 1.0


def test_three_classes_one_vs_rest(tmp_path):
    words = {"a": ["apple", "pear", "plum"], "b": ["car", "bus", "train"],
             "c": ["red", "blue", "green"]}
    rng = np.random.default_rng(0)
    rows = [(" ".join(rng.choice(words[y], 4).tolist() + ["the", "of"]), y)
            for y in ["a", "b", "c"] * 60]
    cfg = DataConfig(train=str(_write(tmp_path / "train.tsv", rows[:150])),
                     test=str(_write(tmp_path / "test.tsv", rows[150:])), text_field="sentence")
    data = baselines.load_split_texts(cfg, 1)
    rows_out = baselines.linear_rows(data, "word", ("tfidf", "nblr"), (1.0,), 1, 1,
                                     log=lambda *a: None)
    assert [r.test_accuracy for r in rows_out] == [1.0, 1.0]


def test_main_end_to_end(files, tmp_path, capsys):
    out = tmp_path / "table.json"
    payload = baselines.main(["--train", str(files["train"]), "--test", str(files["test"]),
                              "--text-field", "sentence", "--features", "all", *LINEAR,
                              "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    names = [r["name"] for r in payload["rows"]]
    assert names == ["TF-IDF word 1-2gram + LR", "NB-LR word 1-2gram (NBSVM-style)",
                     "TF-IDF char 1-2gram + LR", "NB-LR char 1-2gram (NBSVM-style)"]
    for row in payload["rows"]:
        assert row["valid_accuracy"] > 0.8 and row["test_accuracy"] > 0.8
        assert 0 < row["test_macro_f1"] <= 1 and row["train_seconds"] >= 0
        assert row["setting"] in ("C=1", "C=4") and set(row["grid"]) == {"C=1", "C=4"}
    assert payload["data"]["sizes"] == {"train": 268, "valid": 30, "test": 100}
    assert set(payload["machine"]["flags"]) == set(baselines.FLAGS)
    printed = capsys.readouterr().out
    assert "| TF-IDF word 1-2gram + LR |" in printed and "scikit-learn" in printed


def test_rnnkit_run_gives_the_data_settings(files, tmp_path, capsys):
    cfg = preset("lstm-classifier").override(
        train=str(files["train"]), test=str(files["test"]), text_field="sentence", seed=3,
        valid_fraction=0.2, embedding_dim=8, hidden_size=8, batch_size=32, epochs=1)
    run = tmp_path / "run"
    results = api.train_run(cfg, run, log=lambda *a, **k: None)
    payload = baselines.main(["--rnnkit-run", str(run), *LINEAR])
    assert payload["data"]["seed"] == 3 and payload["data"]["valid_fraction"] == 0.2
    assert payload["data"]["sizes"]["valid"] == results["valid"]["examples"] == 60
    row = payload["rows"][-1]
    assert row["kind"] == "rnnkit" and row["name"] == "rnnkit run"
    assert row["test_accuracy"] == results["test"]["accuracy"]
    assert row["valid_accuracy"] == results["valid"]["accuracy"]
    assert row["train_seconds"] == results["train_seconds"]
    # a data flag that disagrees with the run is refused; one that agrees is fine
    with pytest.raises(SystemExit, match="seed"):
        baselines.main(["--rnnkit-run", str(run), "--seed", "1", *LINEAR])
    baselines.main(["--rnnkit-run", str(run), "--train", str(files["train"]), *LINEAR])


def test_fasttext_row_without_fasttext(files, monkeypatch):
    monkeypatch.setattr(baselines.importlib.util, "find_spec", lambda name: None)
    data = baselines.load_split_texts(DataConfig(train=str(files["train"]),
                                                 text_field="sentence"), 1, ("train", "valid"))
    row = baselines.fasttext_row(data, "word", 1, 1)
    assert row.kind == "skipped" and "not installed" in row.note and row.test_accuracy is None
