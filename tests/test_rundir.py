import json

import pytest
import safetensors
import safetensors.torch
import torch

from rnnkit.config import ModelConfig
from rnnkit.errors import UsageError
from rnnkit.models import Classifier, LanguageModel
from rnnkit.rundir import SPARSE_KEY, RunDir


def _ngram_classifier(buckets: int) -> Classifier:
    cfg = ModelConfig(embedding_dim=8, hidden_size=8, pooling="mean")
    return Classifier(50, 2, cfg, 0, ngram_buckets=buckets)


def test_mostly_zero_tables_are_stored_compactly_and_restored_exactly(tmp_path):
    torch.manual_seed(0)
    model = _ngram_classifier(1 << 20)
    rows = torch.randint(0, 1 << 20, (5000,))
    with torch.no_grad():
        model.ngrams.ratios[rows] = torch.randn(5000, 2)
        model.ngrams.weight.weight[rows[:4000]] = torch.randn(4000, 2)
    run = RunDir(tmp_path / "run")
    run.save_weights(model)
    size = run.weights_path.stat().st_size
    assert size < 1_000_000  # dense, the two tables alone would take 16 MiB
    with safetensors.safe_open(str(run.weights_path), "pt") as f:
        assert SPARSE_KEY in f.metadata()
    restored = _ngram_classifier(1 << 20)
    run.load_weights(restored)
    for (name, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), name


def test_dense_and_tied_weights_keep_the_plain_format(tmp_path):
    model = LanguageModel(40, ModelConfig(task="lm", embedding_dim=8, hidden_size=8,
                                          tie_weights=True))
    run = RunDir(tmp_path / "lm")
    run.save_weights(model)
    with safetensors.safe_open(str(run.weights_path), "pt") as f:
        assert SPARSE_KEY not in (f.metadata() or {})
    restored = LanguageModel(40, model.cfg)
    run.load_weights(restored)
    assert torch.equal(restored.decoder.weight, model.decoder.weight)
    assert restored.decoder.weight is restored.encoder.embedding.weight


def test_damaged_compact_file_is_a_one_line_error(tmp_path):
    model = _ngram_classifier(1 << 20)
    with torch.no_grad():
        model.ngrams.ratios[:10] = 1.0
    run = RunDir(tmp_path / "run")
    run.save_weights(model)
    tensors = safetensors.torch.load_file(str(run.weights_path))
    del tensors["ngrams.ratios:values"]
    with safetensors.safe_open(str(run.weights_path), "pt") as f:
        metadata = f.metadata()
    safetensors.torch.save_file(tensors, str(run.weights_path), metadata=metadata)
    with pytest.raises(UsageError, match="model.safetensors: checksum mismatch"):
        run.load_weights(_ngram_classifier(1 << 20))
    run.checksums_path.unlink()  # no record (a run from before checksums): still no traceback
    with pytest.raises(UsageError, match="model.safetensors: corrupted weights or weights of "
                                         "another model"):
        run.load_weights(_ngram_classifier(1 << 20))


def test_evaluation_falls_back_to_the_cpu():
    from rnnkit.precision import evaluation_device

    assert evaluation_device("cpu").type == "cpu"
    assert evaluation_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert evaluation_device("cuda:1").type == "cpu"


def test_resume_is_exact_with_compact_checkpoints(tmp_path, monkeypatch):
    """trainer.pt stores mostly-zero tables (n-gram weights and their Adagrad sums) as their
    non-zero rows; a run stopped and resumed still ends exactly where a straight one does."""
    import json

    from rnnkit import api, rundir
    from tiny_runs import train_classifier

    monkeypatch.setattr(rundir, "SPARSE_MIN_ELEMENTS", 1024)
    settings = dict(epochs=2, dropout=0.3, ngram_order=2, ngram_buckets=1 << 14)
    straight = train_classifier(tmp_path, "straight", **settings)
    raw = torch.load(straight / "trainer.pt", weights_only=True)
    assert rundir.ROWS_MARK in raw["model"]["ngrams.weight.weight"]
    sums = [v["sum"] for v in raw["optimizer"]["sparse"]["state"].values()]
    assert sums and all(rundir.ROWS_MARK in s for s in sums)  # the Adagrad sums, too
    cfg = RunDir(straight).config()
    split = tmp_path / "split"
    quiet = dict(log=lambda *a, **k: None)
    api.train_run(cfg, split, max_steps=30, **quiet)
    assert not json.loads((split / "results.json").read_text())["finished"]
    api.train_run(cfg, split, resume=True, **quiet)
    a = RunDir(straight).load_trainer()["model"]
    b = RunDir(split).load_trainer()["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_damaged_or_foreign_run_files_are_one_line_errors(tiny_runs, tmp_path, capsys):
    """The last 40 bytes of the weights overwritten, another model's weights, a labels file
    that does not match the model: one line naming the file, never a traceback or NaN."""
    import shutil

    from rnnkit.cli import main

    run = tmp_path / "clf"
    shutil.copytree(tiny_runs["clf"], run)
    weights = run / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-40] + b"\0" * 40)
    for args in (["predict", str(run), "a fine film"], ["evaluate", str(run), "--split", "valid"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "model.safetensors: checksum mismatch" in err and len(err.splitlines()) == 1
    # another model's weights, with no checksum on record (a run from before checksums)
    sums = json.loads((run / "checksums.json").read_text())
    (run / "checksums.json").write_text(json.dumps({"labels.json": sums["labels.json"]}))
    shutil.copy(tiny_runs["lm"] / "model.safetensors", weights)
    assert main(["predict", str(run), "a fine film"]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors: " in err and len(err.strip().splitlines()) == 1, err
    weights.write_bytes(original)
    (run / "checksums.json").write_text("{}")
    labels = json.loads((run / "labels.json").read_text())
    labels["names"] = labels["names"][:1]
    (run / "labels.json").write_text(json.dumps(labels))
    assert main(["predict", str(run), "a fine film"]) == 2
    err = capsys.readouterr().err
    assert "labels.json: 2 classes and 1 names" in err and len(err.splitlines()) == 1, err
