"""`rnnkit export`: ONNX Runtime must agree with PyTorch on tiny runs trained here."""

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rnnkit.cli import main
from rnnkit.classification import collate
from rnnkit.data.splits import encode_texts
from rnnkit.export import exportable
from rnnkit.predict import Predictor
from tiny_runs import train_classifier, train_lm

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_classifier_onnx_matches_pytorch(root, tiny_runs, capsys):
    run = tiny_runs["clf"]  # the preset: bidirectional LSTM, mean+max pooling
    out = root / "clf.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    onnx_model = session(out)
    assert [i.name for i in onnx_model.get_inputs()] == ["ids", "lengths"]
    module = exportable(run).module
    vocab_size = Predictor.load(run).model.encoder.embedding.num_embeddings
    generator = torch.Generator().manual_seed(0)
    for batch, seq_len in [(1, 1), (1, 9), (4, 23), (7, 61)]:  # dynamic batch and time
        ids = torch.randint(2, vocab_size, (batch, seq_len), generator=generator)
        lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
        lengths[0] = seq_len
        with torch.inference_mode():
            expected = module(ids, lengths).numpy()
        got = onnx_model.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})[0]
        assert got.shape == (batch, 2)
        assert np.abs(got - expected).max() <= TOLERANCE, (batch, seq_len)

    # End to end: padded real texts give what Predictor gives.
    predictor = Predictor.load(run)
    texts = ["a wonderful superb film", "boring", "the plot was awful and the actors dull"]
    batch = collate(encode_texts(texts, predictor.cfg.data, predictor.vocab),
                    predictor.vocab.pad_id)
    got = onnx_model.run(None, {"ids": batch.ids.numpy(), "lengths": batch.lengths.numpy()})[0]
    assert np.abs(got - predictor.probabilities(texts)).max() <= TOLERANCE


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_language_model_onnx_matches_pytorch_and_carries_state(root, cell):
    run = train_lm(root, f"lm-{cell}", cell=cell, epochs=1)
    assert main(["export", str(run)]) == 0  # default format and path
    onnx_model = session(run / "model.onnx")
    module = exportable(run).module
    state_names = ["h", "c"] if cell == "lstm" else ["h"]
    assert [i.name for i in onnx_model.get_inputs()] == ["ids", *state_names]
    vocab_size = module.model.encoder.embedding.num_embeddings
    generator = torch.Generator().manual_seed(0)
    for batch, seq_len in [(1, 1), (2, 5), (3, 40)]:
        ids = torch.randint(0, vocab_size, (batch, seq_len), generator=generator)
        state = [torch.randn(2, batch, 16, generator=generator) for _ in state_names]
        with torch.inference_mode():
            expected = [t.numpy() for t in module(ids, *state)]
        got = onnx_model.run(None, {"ids": ids.numpy(),
                                    **{n: s.numpy() for n, s in zip(state_names, state)}})
        assert got[0].shape == (batch, seq_len, vocab_size)
        for a, b in zip(got, expected):
            assert np.abs(a - b).max() <= TOLERANCE, (batch, seq_len)

    # Reading a sequence in two windows, state fed back, equals reading it whole.
    ids = torch.randint(0, vocab_size, (2, 12), generator=generator)
    zeros = {n: np.zeros((2, 2, 16), np.float32) for n in state_names}
    whole = onnx_model.run(None, {"ids": ids.numpy(), **zeros})[0]
    first = onnx_model.run(None, {"ids": ids[:, :5].numpy(), **zeros})
    second = onnx_model.run(None, {"ids": ids[:, 5:].numpy(),
                                   **dict(zip(state_names, first[1:]))})
    assert np.abs(np.concatenate([first[0], second[0]], 1) - whole).max() <= TOLERANCE


@pytest.mark.parametrize("how", ["head", "tail", "head+tail"])
def test_classifier_graph_cuts_texts_and_reads_empty_ones_as_predictor_does(root, how):
    """Whole texts (longer than max_len) and empty ones, fed as they are: the graph applies
    the run's cut and reads an empty text as one <unk>, so it gives Predictor's answer."""
    run = train_classifier(root, f"cut-{how}", epochs=1, max_len=7, truncate=how)
    out = root / f"cut-{how}.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    onnx_model = session(out)
    meta = onnx_model.get_modelmeta()
    predictor = Predictor.load(run)
    assert meta.custom_metadata_map == {
        "task": "classify", "min_length": "0", "max_len": "7", "truncate": how,
        "pad_id": str(predictor.vocab.pad_id), "unk_id": str(predictor.vocab.unk_id),
        "labels": json.dumps(predictor.names), "tokenizer": "basic", "lowercase": "true"}
    assert "max_len" in meta.description and "empty text" in meta.description
    texts = [line.split("\t")[0] for line in
             (root / "dev.tsv").read_text().splitlines()[1:30]] + ["", "   "]
    whole = dataclasses.replace(predictor.cfg.data, max_len=0)
    ids = [a if text.strip() else a[:0]  # an empty text: no ids at all
           for a, text in zip(encode_texts(texts, whole, predictor.vocab), texts)]
    assert sum(len(a) > 7 for a in ids) > 20 and len(ids[-1]) == 0
    batch = collate([a if len(a) else np.zeros(1, np.int64) for a in ids],
                    predictor.vocab.pad_id)
    lengths = np.array([len(a) for a in ids])
    got = onnx_model.run(None, {"ids": batch.ids.numpy(), "lengths": lengths})[0]
    assert np.abs(got - predictor.probabilities(texts)).max() <= TOLERANCE
    empty = onnx_model.run(None, {"ids": np.zeros((2, 0), np.int64),
                                  "lengths": np.zeros(2, np.int64)})[0]  # T = 0
    assert np.isfinite(empty).all()
    assert np.abs(empty - predictor.probabilities(["", ""])).max() <= TOLERANCE


def test_language_model_graph_records_its_contract(root):
    run = train_lm(root, "lm-meta", cell="gru", epochs=1)
    assert main(["export", str(run)]) == 0
    meta = session(run / "model.onnx").get_modelmeta()
    assert meta.custom_metadata_map["task"] == "lm"
    assert meta.custom_metadata_map["min_length"] == "1"  # T = 0 is undefined for RNN ops
    assert meta.custom_metadata_map["state"] == "h" and "T >= 1" in meta.description


def test_refusals_are_one_line_usage_errors(root, tiny_runs, capsys):
    run = tiny_runs["clf"]
    assert main(["export", str(run), "--format", "torch-export"]) == 2
    assert main(["export", str(run), "--format", "tflite"]) == 2
    assert main(["export", str(root / "missing")]) == 2
    assert main(["export", str(run), "--out", str(root / "nowhere" / "m.onnx")]) == 2
    taken = root / "taken.onnx"
    taken.write_text("the user's own file")
    assert main(["export", str(run), "--out", str(taken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("rnnkit: error: ") for line in err)
    assert "torch-export" in err[0] and "tflite" in err[1] and "nowhere" in err[3]
    assert "taken.onnx: exists" in err[4] and taken.read_text() == "the user's own file"
    assert not (root / "nowhere").exists()
    assert not list(root.glob(".*partial"))


def ngram_features_by_the_spec(ids: np.ndarray, order: int, buckets: int, base: int) -> set:
    """The n-gram features as the exported model's documentation spells them out."""
    u = [int(i) + 1 for i in ids]
    out = set()
    for n in range(1, order + 1):
        for i in range(len(u) - n + 1):
            g = 0
            for x in u[i: i + n]:
                g = (g * base + x) % 2**64
            out.add(((((g + n) * 0x9E3779B97F4A7C15) % 2**64) >> 20) % buckets)
    return out


@pytest.mark.parametrize("how", ["head", "head+tail"])
def test_a_two_branch_classifier_exports_with_its_ngram_inputs(root, how):
    run = train_classifier(root, f"ngrams-{how}", ngram_order=2, ngram_buckets=4096, epochs=2,
                           max_len=6, truncate=how)
    out = root / f"ngrams-{how}.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    onnx_model = session(out)
    assert [i.name for i in onnx_model.get_inputs()] == ["ids", "lengths", "ngrams", "owner"]
    meta = onnx_model.get_modelmeta().custom_metadata_map
    order, buckets, base = (int(meta[k]) for k in ("ngram_order", "ngram_buckets",
                                                   "ngram_base"))
    predictor = Predictor.load(run)
    texts = ["a wonderful superb film, moving and funny from start to end", "boring", "",
             "the plot was awful and the actors dull", "superb"]
    full = encode_texts(texts, predictor.cfg.data, predictor.vocab, max_len=0)  # whole texts
    features = [np.array(sorted(ngram_features_by_the_spec(a, order, buckets, base)),
                         dtype=np.int64) for a in full]
    for a, f in zip(full, features):  # the documented formula is rnnkit's
        assert f.tolist() == predictor.ngrams.features(a).tolist()
    batch = collate(full, predictor.vocab.pad_id, ngrams=features)
    feed = {"ids": batch.ids.numpy(), "lengths": batch.lengths.numpy(),
            "ngrams": batch.ngrams[0].numpy(), "owner": batch.ngrams[1].numpy()}
    expected = predictor.probabilities(texts)
    assert np.abs(onnx_model.run(None, feed)[0] - expected).max() <= TOLERANCE
    for k, (a, f) in enumerate(zip(full, features)):  # one text at a time, any batch size
        one = {"ids": a[None] if len(a) else np.zeros((1, 0), np.int64),
               "lengths": np.array([len(a)]), "ngrams": f, "owner": np.zeros(len(f), np.int64)}
        assert np.abs(onnx_model.run(None, one)[0] - expected[k]).max() <= TOLERANCE, k


def test_classifier_onnx_matches_pytorch_on_real_reviews(mirror, root):
    """Trained briefly on 300 real IMDB reviews, exported, and fed real test reviews from a
    dozen words to the 400-token cut: ONNX Runtime and PyTorch agree within 1e-4."""
    import gzip
    import json

    from rnnkit import api
    from rnnkit.config import preset

    cfg = preset("lstm-classifier").override(dataset="imdb", limit_train=300, epochs=1,
                                             embedding_dim=16, hidden_size=16, ngram_order=0)
    run = root / "imdb-tiny"
    api.train_run(cfg, run, log=lambda *a, **k: None, report=())
    out = root / "imdb-tiny.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    with gzip.open(mirror / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(400), f)]
    texts.sort(key=len)
    picked = [texts[i] for i in (0, 40, 120, 200, 280, 360, 399)]
    predictor = Predictor.load(run)
    ids = encode_texts(picked, predictor.cfg.data, predictor.vocab)
    assert min(len(a) for a in ids) < 60 and max(len(a) for a in ids) == 400
    onnx_model = session(out)
    for text, a in zip(picked, ids):  # one at a time: every length on its own
        got = onnx_model.run(None, {"ids": a[None], "lengths": np.array([len(a)])})[0]
        assert np.abs(got - predictor.probabilities([text])).max() <= TOLERANCE, len(a)
    batch = collate(ids, predictor.vocab.pad_id)  # and all together, padded
    got = onnx_model.run(None, {"ids": batch.ids.numpy(), "lengths": batch.lengths.numpy()})[0]
    assert np.abs(got - predictor.probabilities(picked)).max() <= TOLERANCE


@pytest.mark.parametrize("how", ["head", "tail", "head+tail"])
def test_predictor_encodes_raw_text_as_training_did(tmp_path, how):
    """Prediction from raw text (cut while tokenizing, n-grams from the whole text) gives the
    probabilities of the evaluation path, which reads the training-time encoding."""
    from rnnkit.classification import ClassificationTask
    from rnnkit.data.splits import load_classification
    from rnnkit.data.readers import read_labeled
    from rnnkit.rundir import RunDir

    run = train_classifier(tmp_path, "cut", epochs=1, max_len=7, truncate=how, ngram_order=2,
                           ngram_buckets=1024)
    predictor = Predictor.load(run)
    cfg = RunDir(run).config()
    data = load_classification(cfg.data, cfg.train.seed, ("valid",), vocab=predictor.vocab,
                               classes=RunDir(run).labels()["classes"])
    task = ClassificationTask(cfg, data)
    texts = read_labeled(tmp_path / "dev.tsv", cfg.data.text_field).texts
    assert max(len(a) for a in data.splits["valid"].full_ids) > 7  # the cut matters
    with torch.inference_mode():
        batch = task._batch("valid", np.arange(len(texts)))
        expected = predictor.model.log_probs(
            predictor.model(batch.ids, batch.lengths, batch.ngrams)).exp()
    assert np.abs(predictor.probabilities(texts, batch_size=7) - expected.numpy()).max() < 1e-5


def test_pipelined_prediction_matches_serial_and_restores_settings(tmp_path, monkeypatch):
    import sys

    run = train_classifier(tmp_path, "pipe", epochs=1, max_len=9, truncate="tail",
                           ngram_order=2, ngram_buckets=1024)
    predictor = Predictor.load(run)
    texts = [line.split("\t")[0] for line in
             (tmp_path / "train.tsv").read_text().splitlines()[1:]] * 3
    serial = predictor.probabilities(texts)  # fewer texts than the pipeline's minimum
    monkeypatch.setattr(Predictor, "PIPELINE_MIN_TEXTS", 100)
    monkeypatch.setattr(Predictor, "PIPELINE_CHUNK", 250)  # several chunks, a ragged last one
    threads, interval = torch.get_num_threads(), sys.getswitchinterval()
    torch.set_num_threads(2)
    try:
        calls = []
        original = Predictor._pipelined
        monkeypatch.setattr(Predictor, "_pipelined",
                            lambda self, t: calls.append(len(t)) or original(self, t))
        piped = predictor.probabilities(texts)
        assert calls == [len(texts)]
        assert np.abs(piped - serial).max() < 1e-5
        assert torch.get_num_threads() == 2 and sys.getswitchinterval() == interval
    finally:
        torch.set_num_threads(threads)
