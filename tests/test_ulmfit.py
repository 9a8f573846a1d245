"""ULMFiT's fine-tuning options: slanted triangular rates, discriminative rates per layer,
gradual unfreezing, concat pooling."""

import pytest
import torch

from rnnkit import api
from rnnkit.config import ModelConfig, preset
from rnnkit.models import Classifier
from rnnkit.rundir import RunDir
from rnnkit.train import SLANTED_RATIO, layer_index, slanted_lr

QUIET = dict(log=lambda *a, **k: None)


def test_slanted_triangular_rate():
    cfg = preset("lstm-classifier").override(schedule="slanted", lr=0.032, warmup_fraction=0.1)
    rates = [slanted_lr(cfg, step, 100) for step in range(101)]
    assert rates[0] == pytest.approx(0.032 / SLANTED_RATIO)
    assert rates[10] == pytest.approx(0.032) and max(rates) == rates[10]
    assert all(a < b for a, b in zip(rates[:10], rates[1:11]))  # rises ...
    assert all(a > b for a, b in zip(rates[10:100], rates[11:101]))  # ... then falls
    assert rates[100] == pytest.approx(0.032 / SLANTED_RATIO)


def test_layer_index():
    assert layer_index("encoder.embedding.weight", 2) == 0
    assert layer_index("encoder.rnn.weight_hh_l0", 2) == 1
    assert layer_index("encoder.rnn.bias_ih_l1", 2) == 2
    assert layer_index("encoder.forward_rnns.1.weight_ih_l0", 2) == 2
    assert layer_index("encoder.backward_rnns.0.bias_hh_l0", 2) == 1
    assert layer_index("head.weight", 2) == 3


def test_concat_pooling_joins_last_mean_and_max():
    torch.manual_seed(0)
    cfg = ModelConfig(pooling="concat", hidden_size=4, embedding_dim=3, dropout=0.0)
    model = Classifier(10, 2, cfg, pad_id=0).eval()
    outputs = torch.randn(2, 5, 4)
    lengths = torch.tensor([5, 3])
    pooled = model.pool(outputs, lengths)
    assert pooled.shape == (2, 12) and model.head.in_features == 12
    assert torch.equal(pooled[1, :4], outputs[1, 2])  # last real step
    assert torch.allclose(pooled[1, 4:8], outputs[1, :3].mean(0))
    assert torch.equal(pooled[1, 8:], outputs[1, :3].max(0).values)


@pytest.fixture
def files(tsv_data):
    return dict(train=str(tsv_data["train"]), valid=str(tsv_data["dev"]), text_field="sentence")


def settings(**extra):
    return {**dict(embedding_dim=8, hidden_size=8, num_layers=2, bidirectional=False,
                   batch_size=16, lr=0.01, min_freq=1, epochs=3, dropout=0.0), **extra}


def test_discriminative_rates_per_layer(files, tmp_path):
    cfg = preset("lstm-classifier").override(**files, **settings(layer_lr_decay=2.0, epochs=1))
    api.train_run(cfg, tmp_path / "run", report=(), **QUIET)
    groups = RunDir(tmp_path / "run").load_trainer()["optimizer"]["main"]["param_groups"]
    assert [g["layer"] for g in groups] == [0, 1, 2, 3]
    assert [g["lr"] for g in groups] == [0.01 / 8, 0.01 / 4, 0.01 / 2, 0.01]


def test_gradual_unfreezing_trains_one_more_group_each_epoch(files, tmp_path):
    cfg = preset("lstm-classifier").override(**files, **settings(gradual_unfreeze=True))
    start = tmp_path / "start"
    api.train_run(cfg.override(epochs=1), start, max_steps=1, report=(), **QUIET)
    initial = RunDir(start).load_trainer()["model"]  # one step: the head only
    trained = {}
    for epochs in (1, 2, 3):
        run = tmp_path / f"e{epochs}"
        api.train_run(cfg.override(epochs=epochs), run, report=(), **QUIET)
        trained[epochs] = RunDir(run).load_trainer()["model"]
    changed = lambda state, name: not torch.equal(state[name], initial[name])  # noqa: E731
    assert changed(trained[1], "head.weight")
    assert not changed(trained[1], "encoder.rnn.weight_hh_l1")
    assert changed(trained[2], "encoder.rnn.weight_hh_l1")
    assert not changed(trained[2], "encoder.rnn.weight_hh_l0")
    assert changed(trained[3], "encoder.rnn.weight_hh_l0")
    assert not changed(trained[3], "encoder.embedding.weight")


def test_resume_is_exact_with_the_ulmfit_options(files, tmp_path):
    cfg = preset("lstm-classifier").override(**files, **settings(
        gradual_unfreeze=True, layer_lr_decay=2.6, schedule="slanted", pooling="concat",
        dropout=0.2))
    straight, split = tmp_path / "straight", tmp_path / "split"
    api.train_run(cfg, straight, report=(), **QUIET)
    api.train_run(cfg, split, max_steps=30, report=(), **QUIET)  # inside epoch 2
    api.train_run(cfg, split, resume=True, report=(), **QUIET)
    a, b = RunDir(straight).load_trainer()["model"], RunDir(split).load_trainer()["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
