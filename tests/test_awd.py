"""AWD-LSTM's regularisers wired into the models and the training loop, and the Jordan cell:
each piece off in evaluation, doing something in training, exact through resume."""

import json
import re
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnkit import api, kernels
from rnnkit.cli import _converter, main
from rnnkit.config import ModelConfig, TrainConfig, preset
from rnnkit.data.splits import CorpusData
from rnnkit.errors import UsageError
from rnnkit.language_model import LanguageModelTask
from rnnkit.models import Classifier, LanguageModel
from rnnkit.models.jordan import JordanRNN
from rnnkit.models.regularizers import (LockedDropout, TiedDecoder, activation_regularization,
                                        temporal_activation_regularization)
from rnnkit.rundir import RunDir
from rnnkit.train import StepLoss, start_session
from rnnkit.data.vocab import Vocab

from conftest import LM_CLASSIC, LM_CLASSIC_SETTINGS, lm_cfg, write_review_tsvs

QUIET = dict(log=lambda *a, **k: None)
AWD = dict(embedding_dropout=0.2, locked_dropout=True, input_dropout=0.3, hidden_dropout=0.2,
           output_dropout=0.4, weight_drop=0.5)


def rows(run: Path) -> list[dict]:
    out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in out:
        row.pop("seconds")
    return out


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def torch_path(monkeypatch) -> None:
    """Make the encoder take torch's LSTM path where it would take the native kernel."""
    monkeypatch.setattr(kernels, "usable", lambda x, hidden: False)


def lm_pair(cell="lstm", hidden=12, embedding=12, layers=2, **settings):
    """A plain LM (no dropout) and one with `settings`, holding the same weights."""
    base = dict(task="lm", cell=cell, hidden_size=hidden, embedding_dim=embedding,
                num_layers=layers, dropout=0.0)
    torch.manual_seed(0)
    plain = LanguageModel(40, ModelConfig(**base))
    regularised = LanguageModel(40, ModelConfig(**{**base, **settings}))
    regularised.load_state_dict(plain.state_dict())
    return plain, regularised


# --- each regulariser off in evaluation, on in training --------------------------------------


@pytest.mark.parametrize("cell,hidden", [("lstm", 12), ("lstm", 120), ("gru", 12)])
@pytest.mark.parametrize("name,settings", [
    ("embedding_dropout", dict(embedding_dropout=0.5)),
    ("locked", dict(locked_dropout=True, dropout=0.5)),
    ("rates", dict(input_dropout=0.5, hidden_dropout=0.3, output_dropout=0.4)),
    ("weight_drop", dict(weight_drop=0.5)),
    ("all", AWD),
])
def test_regularisers_are_off_in_eval_and_change_training(cell, hidden, name, settings):
    plain, regularised = lm_pair(cell, hidden=hidden, **settings)
    ids = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain.eval(), regularised.eval()
        expected, expected_state = plain(ids)
        got, state = regularised(ids)
        assert torch.equal(got, expected)
        assert all(torch.equal(a, b) for a, b in zip(state, expected_state))
        # generation's one-token path too
        assert torch.equal(regularised(ids[:, :1])[0], plain(ids[:, :1])[0])
        plain.train(), regularised.train()
        torch.manual_seed(5)
        train_plain = plain(ids)[0]
        torch.manual_seed(5)
        train_regularised = regularised(ids)[0]
    torch.testing.assert_close(train_plain, expected)  # the plain model has no dropout
    assert not torch.allclose(train_regularised, expected, atol=1e-4)


def test_embedding_dropout_drops_word_types_everywhere_in_the_batch():
    _, model = lm_pair(embedding_dropout=0.5)
    model.train()
    ids = torch.tensor([[3, 5, 3, 7, 5, 3], [7, 3, 9, 9, 5, 1]])
    torch.manual_seed(2)
    x = model.encoder.embed(ids)  # (B, T, E)
    dropped = (x == 0).all(-1)
    assert dropped.any() and not dropped.all()
    for word in ids.unique():
        where = dropped[ids == word]
        assert where.all() or not where.any(), int(word)  # a type is dropped at every position
    kept = ~dropped
    torch.testing.assert_close(x[kept], model.encoder.embedding(ids)[kept] / 0.5)


def test_classifier_embedding_dropout_keeps_padding_rows_at_zero_gradient():
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, embedding_dim=6, dropout=0.0, embedding_dropout=0.3)
    model = Classifier(30, 2, cfg, pad_id=0).train()
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 9, 10, 11]])
    model(ids, torch.tensor([3, 5]))[0].sum().backward()
    assert torch.equal(model.encoder.embedding.weight.grad[0], torch.zeros(6))


@pytest.mark.parametrize("hidden", [12, 120])
def test_locked_dropout_keeps_one_mask_per_sequence(hidden):
    _, model = lm_pair(hidden=hidden, locked_dropout=True, dropout=0.5)
    assert isinstance(model.dropout, LockedDropout)
    assert isinstance(model.encoder.dropout, LockedDropout)
    assert isinstance(model.encoder.between, LockedDropout)
    model.train()
    ids = torch.randint(0, 40, (4, 8), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    features, raw, _ = model.features_and_raw(ids)
    zero = features == 0  # (B, T, H): the output mask
    assert zero.any()
    assert all(torch.equal(zero[:, t], zero[:, 0]) for t in range(ids.shape[1]))
    assert not torch.equal(zero[0, 0], zero[1, 0])  # each sequence its own mask
    torch.testing.assert_close(features[~zero], raw[~zero] / 0.5)
    x = model.encoder.dropout(model.encoder.embed(ids))  # the input mask
    gone = x == 0
    assert gone.any() and all(torch.equal(gone[:, t], gone[:, 0]) for t in range(8))


# --- weight drop ---------------------------------------------------------------------------


@pytest.mark.skipif(not kernels.available(), reason="the native LSTM kernel is not built here")
@pytest.mark.parametrize("task", ["lm", "bidirectional"])
def test_weight_drop_native_and_torch_paths_agree_in_training(monkeypatch, task):
    """Same seed, same masks: the native kernel and torch's LSTM compute the same training
    step with weight drop (and locked dropout between layers)."""
    def build():
        torch.manual_seed(0)
        if task == "lm":
            return LanguageModel(40, ModelConfig(task="lm", hidden_size=16, embedding_dim=10,
                                                 num_layers=2, **AWD)).train()
        return Classifier(40, 3, ModelConfig(hidden_size=16, embedding_dim=10, num_layers=2,
                                             bidirectional=True, pooling="mean", **AWD),
                          pad_id=0).train()

    ids = torch.randint(1, 40, (3, 7), generator=torch.Generator().manual_seed(1))
    results = []
    for native in (True, False):
        if not native:
            torch_path(monkeypatch)
        model = build()
        assert model.encoder._native(torch.zeros(1, 1, 10)) == native
        torch.manual_seed(9)
        if task == "lm":
            out = model(ids)[0]
        else:
            out = model(ids, torch.tensor([7, 5, 2]))[0]
        out.pow(2).sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (native_out, native_grads), (torch_out, torch_grads) = results
    torch.testing.assert_close(native_out, torch_out, atol=1e-5, rtol=1e-5)
    for name in native_grads:
        torch.testing.assert_close(native_grads[name], torch_grads[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("path", ["native", "torch", "gru", "bidirectional"])
def test_weight_drop_is_one_mask_of_the_recurrent_matrix(monkeypatch, path):
    """Where a w_hh entry is dropped, it has no gradient at all (one mask for every step and
    sequence of the batch); about p of the entries are; the module keeps its parameters."""
    if path == "native" and not kernels.available():
        pytest.skip("the native LSTM kernel is not built here")
    if path == "torch":
        torch_path(monkeypatch)
    torch.manual_seed(0)
    settings = dict(hidden_size=16, embedding_dim=10, num_layers=2, dropout=0.0,
                    weight_drop=0.5, cell="gru" if path == "gru" else "lstm")
    if path == "bidirectional":
        model = Classifier(40, 3, ModelConfig(bidirectional=True, pooling="mean", **settings),
                           pad_id=0)
        w_hh = model.encoder.forward_rnns[1].weight_hh_l0
        run = lambda ids: model(ids, torch.full((4,), ids.shape[1]))[0]  # noqa: E731
    else:
        model = LanguageModel(40, ModelConfig(task="lm", **settings))
        w_hh = model.encoder.rnn.weight_hh_l1
        run = lambda ids: model(ids)[0]  # noqa: E731
    before = {n: p.shape for n, p in model.named_parameters()}
    model.train()
    ids = torch.randint(1, 40, (4, 12), generator=torch.Generator().manual_seed(1))
    run(ids).pow(2).sum().backward()
    no_grad = (w_hh.grad == 0).float().mean().item()
    assert 0.4 < no_grad < 0.6, no_grad  # without weight drop: none
    assert {n: p.shape for n, p in model.named_parameters()} == before


# --- AR / TAR --------------------------------------------------------------------------------


def lm_task(**train_settings) -> LanguageModelTask:
    vocab = Vocab([f"w{i}" for i in range(30)] + ["<unk>", "<eos>"], ["<unk>", "<eos>"])
    stream = torch.randint(0, 32, (2000,), generator=torch.Generator().manual_seed(0))
    cfg = preset("ptb-small").override(hidden_size=16, embedding_dim=16, batch_size=4,
                                       num_steps=10, dropout=0.3, **train_settings)
    return LanguageModelTask(cfg, CorpusData(vocab, {"train": stream}))


@pytest.mark.parametrize("loss_scale", ["mean", "sum_steps"])
def test_ar_tar_add_to_the_objective_not_to_the_reported_loss(loss_scale):
    plain, awd = lm_task(loss_scale=loss_scale), lm_task(ar_alpha=2.0, tar_beta=1.0,
                                                          loss_scale=loss_scale)
    torch.manual_seed(0)
    model = plain.build_model()
    torch.manual_seed(1)
    loss, count, _ = plain.train_step(model, 0, None)
    torch.manual_seed(1)
    step, count2, _ = awd.train_step(model, 0, None)
    assert isinstance(step, StepLoss) and count == count2
    reported = plain.token_loss(loss.detach())
    # the same NLL: AR/TAR draw no random numbers
    assert float(step.token) == pytest.approx(reported, rel=1e-6)
    # the objective is the NLL plus AR on the dropped-out outputs and TAR on the raw ones
    torch.manual_seed(1)
    features, raw, _ = model.features_and_raw(plain.streams[:, :10], plain.initial_state(model))
    penalty = (activation_regularization(features, 2.0)
               + temporal_activation_regularization(raw, 1.0))
    scale = 10 if loss_scale == "sum_steps" else 1
    assert float(penalty.detach()) > 1e-3
    torch.testing.assert_close(step.objective, (step.token + penalty) * scale)


def test_the_reported_training_loss_leaves_ar_tar_out(lm_file, monkeypatch):
    returned = []
    original = LanguageModelTask.train_step

    def spy(self, model, batch, state):
        loss, count, state = original(self, model, batch, state)
        returned.append((float(loss.token), float(loss.objective.detach()), count))
        return loss, count, state

    monkeypatch.setattr(LanguageModelTask, "train_step", spy)
    run = lm_file.parent / "ar"
    api.train_run(lm_cfg(lm_file, ar_alpha=5.0, tar_beta=5.0, epochs=1), run, report=(), **QUIET)
    token = sum(t * n for t, _, n in returned) / sum(n for *_, n in returned)
    objective = sum(o * n for _, o, n in returned) / sum(n for *_, n in returned)
    row = rows(run)[0]
    assert row["train_loss"] == pytest.approx(token, rel=1e-12)
    assert objective > token + 1e-3


# --- variable BPTT ---------------------------------------------------------------------------


def test_variable_bptt_windows_cover_the_stream_and_scale_the_rate():
    task = lm_task(variable_bptt=True)
    width = task.streams.shape[1]
    windows = task.train_batches(0)
    assert windows == task.train_batches(0) and windows != task.train_batches(1)
    position = 0
    for start, length in windows:
        assert start == position and length > 0
        position += length
    assert position == width - 1  # every column (and its next token) is read
    assert len({length for _, length in windows}) > 3
    start, length = windows[0]
    assert task.lr_factor(windows[0]) == length / 10
    torch.manual_seed(0)
    model = task.build_model()
    step, count, state = task.train_step(model, windows[0], None)
    assert count == 4 * length and isinstance(step, StepLoss)
    fixed = lm_task()
    assert fixed.train_batches(0) == list(range(0, 10 * ((width - 1) // 10), 10))
    assert fixed.lr_factor(0) == 1.0


def test_variable_bptt_rate_reaches_the_optimizer(lm_file):
    cfg = lm_cfg(lm_file, variable_bptt=True, schedule="none", lr=4.0)
    task = api.build_task(cfg, ("train", "valid", "test"), log=QUIET["log"])
    windows = task.train_batches(0)
    index = next(i for i, (_, length) in enumerate(windows) if length != 6 and i > 0)
    run = lm_file.parent / "vbptt"
    api.train_run(cfg, run, max_steps=index + 1, report=(), **QUIET)
    groups = RunDir(run).load_trainer()["optimizer"]["main"]["param_groups"]
    assert groups[0]["lr"] == 4.0 * (windows[index][1] / 6)


def test_variable_bptt_with_every_regulariser_resumes_exactly(lm_file):
    cfg = lm_cfg(lm_file, variable_bptt=True, ar_alpha=2.0, tar_beta=1.0, schedule="none",
                 loss_scale="sum_steps", lr=1.0, hidden_size=12, **AWD)
    straight, split = lm_file.parent / "straight", lm_file.parent / "split"
    api.train_run(cfg, straight, report=(), **QUIET)
    per_epoch = rows(straight)[0]["step"]
    api.train_run(cfg, split, max_steps=per_epoch + 4, report=(), **QUIET)
    assert RunDir(split).load_trainer()["progress"]["batch"] == 4
    api.train_run(cfg, split, resume=True, report=(), **QUIET)
    assert_same_tensors(RunDir(straight).load_trainer()["model"],
                        RunDir(split).load_trainer()["model"])
    assert rows(straight) == rows(split)
    steps = [r["step"] for r in rows(straight)]
    assert len({b - a for a, b in zip([0] + steps, steps)}) > 1  # epochs of varying windows


# --- NT-ASGD ---------------------------------------------------------------------------------


def asgd_cfg(path, **settings):
    # Found to trigger after epoch 2 with the native kernel (valid loss 2.6928 > 2.6927) and
    # after epoch 3 with torch's LSTM, then to improve every epoch.
    return lm_cfg(path, **{**dict(lr=10.0, schedule="none", nt_asgd=True, nonmono=0,
                                  patience=0, epochs=5), **settings})


def averages(run: Path) -> dict[str, torch.Tensor]:
    saved = RunDir(run).load_trainer()["ntasgd"]
    return {k: (v / saved["count"]).float() for k, v in saved["sums"].items()}


def saved_weights(run: Path) -> dict[str, torch.Tensor]:
    """model.safetensors read into the run's model (tied weights under every name)."""
    cfg = RunDir(run).config()
    model = LanguageModel(len(RunDir(run).vocab()), cfg.model)
    RunDir(run).load_weights(model)
    return dict(model.named_parameters())


def test_nt_asgd_saves_and_evaluates_the_averaged_weights(lm_file, capsys):
    run = lm_file.parent / "asgd"
    assert main(["train", *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in {
        **LM_CLASSIC_SETTINGS, **dict(
            preset="lm", train=lm_file, out=run, embedding_dim=8, hidden_size=8, batch_size=4,
            num_steps=6, epochs=5, dropout=0.3, lr=10, schedule="none", nt_asgd="true",
            nonmono=0, report="valid")}.items()), []), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    history = rows(run)
    # nonmono 0: the first epoch whose validation loss is worse than an earlier one triggers
    # the average, which every later epoch reads (which epoch that is depends on the LSTM
    # path's rounding: the native kernel's and torch's differ in the fourth decimal here)
    losses = [r["valid_loss"] for r in history]
    trigger = next(i for i in range(1, len(losses)) if losses[i] > min(losses[:i]))
    assert trigger < len(losses) - 1
    assert [r["averaged"] for r in history] == [i > trigger for i in range(len(losses))]
    saved = RunDir(run).load_trainer()
    assert saved["ntasgd"]["trigger_at"] == trigger and saved["ntasgd"]["count"] > 0
    best = min(history, key=lambda r: r["valid_loss"])
    assert best is history[-1]
    weights = saved_weights(run)
    mean = averages(run)
    for name, value in mean.items():
        assert torch.equal(weights[name], value), name  # the averaged weights are saved
    assert not torch.equal(weights["encoder.rnn.weight_hh_l0"],
                           saved["model"]["encoder.rnn.weight_hh_l0"])  # not the SGD ones
    # what evaluate (and everything that loads the run) reports is what validation saw
    assert api.evaluate_run(run, "valid", **QUIET)["perplexity"] == history[-1][
        "valid_perplexity"]
    assert results["valid"]["perplexity"] == history[-1]["valid_perplexity"]


def test_nt_asgd_resumes_exactly_mid_epoch_after_the_trigger(lm_file):
    cfg = asgd_cfg(lm_file)
    straight, split = lm_file.parent / "straight", lm_file.parent / "split"
    api.train_run(cfg, straight, report=(), **QUIET)
    history = rows(straight)
    first = [r["averaged"] for r in history].index(True)  # epoch 3 (native kernel) or 4 (torch)
    assert 0 < first < len(history) - 1
    # stop 5 steps into the epoch after the first averaged one
    api.train_run(cfg, split, max_steps=history[first]["step"] + 5, report=(), **QUIET)
    before = RunDir(split).load_trainer()
    assert before["ntasgd"]["count"] > 0 and before["progress"]["batch"] == 5
    api.train_run(cfg, split, resume=True, report=(), **QUIET)
    a, b = RunDir(straight).load_trainer(), RunDir(split).load_trainer()
    assert_same_tensors(a["model"], b["model"])
    assert_same_tensors(a["ntasgd"]["sums"], b["ntasgd"]["sums"])
    assert {k: v for k, v in a["ntasgd"].items() if k != "sums"} == {
        k: v for k, v in b["ntasgd"].items() if k != "sums"}
    assert_same_tensors(load_file(str(straight / "model.safetensors")),
                        load_file(str(split / "model.safetensors")))
    assert rows(straight) == rows(split)


def test_nt_asgd_resumes_exactly_after_kill(lm_file, tmp_path):
    from test_train import _stop_in_epoch

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    api.train_run(asgd_cfg(lm_file), straight, report=(), **QUIET)
    args = ["train", "--out", stopped, "--report", "none", "--preset", "lm", *LM_CLASSIC,
            "--train", lm_file,
            "--embedding-dim", "8", "--hidden-size", "8", "--batch-size", "4", "--num-steps",
            "6", "--epochs", "5", "--dropout", "0.3", "--lr", "10", "--schedule", "none",
            "--nt-asgd", "true", "--nonmono", "0", "--patience", "0"]
    log = _stop_in_epoch(args, 4, signal.SIGKILL)
    assert not RunDir(stopped).load_trainer()["progress"]["finished"], log
    assert main(["train", "--resume", str(stopped), "--report", "none"]) == 0
    a, b = RunDir(straight).load_trainer(), RunDir(stopped).load_trainer()
    assert_same_tensors(a["model"], b["model"])
    assert_same_tensors(a["ntasgd"]["sums"], b["ntasgd"]["sums"])
    assert rows(straight) == rows(stopped)


def test_a_trainer_state_without_nt_asgd_still_loads(lm_file):
    cfg = asgd_cfg(lm_file, epochs=1)
    run = lm_file.parent / "old"
    api.train_run(cfg, run, report=(), **QUIET)
    saved = RunDir(run).load_trainer()
    del saved["ntasgd"]  # as an older rnnkit wrote it
    task = api.build_task(cfg, ("train", "valid"), RunDir(run), log=QUIET["log"])
    session = start_session(cfg, task, saved, QUIET["log"])
    assert session.ntasgd is not None and not session.ntasgd.triggered
    assert "ntasgd" not in start_session(lm_cfg(lm_file), task, None, QUIET["log"]
                                         ).trainer_state()


# --- tied weights with a projection ----------------------------------------------------------


def test_tied_projection_trains_saves_and_loads(lm_file):
    cfg = lm_cfg(lm_file, embedding_dim=6, hidden_size=10, tie_weights=True, epochs=2)
    run = lm_file.parent / "tied"
    results = api.train_run(cfg, run, report=("valid",), **QUIET)
    stored = load_file(str(run / "model.safetensors"))
    assert stored["decoder.projection.weight"].shape == (6, 10)
    assert {"decoder.bias", "encoder.embedding.weight"} & set(stored)
    model = LanguageModel(len(RunDir(run).vocab()), cfg.model)
    assert isinstance(model.decoder, TiedDecoder)
    RunDir(run).load_weights(model)
    assert model.decoder.weight is model.encoder.embedding.weight  # still one matrix
    weights = dict(model.named_parameters())
    again = api.evaluate_run(run, "valid", **QUIET)
    assert again["perplexity"] == results["valid"]["perplexity"]
    assert again["perplexity"] < 20  # it learned the grammar (uniform: ~ the vocabulary, 14+)
    torch.manual_seed(cfg.train.seed)  # the initial weights, as start_session draws them
    initial = LanguageModel(len(RunDir(run).vocab()), cfg.model)
    assert not torch.equal(weights["decoder.projection.weight"],
                           initial.decoder.projection.weight)  # trained through the tie


def test_tying_equal_sizes_keeps_the_linear_decoder_and_its_keys():
    cfg = ModelConfig(task="lm", hidden_size=8, embedding_dim=8, tie_weights=True)
    model = LanguageModel(20, cfg)
    assert type(model.decoder) is torch.nn.Linear
    assert {k for k in model.state_dict() if k.startswith("decoder.")} == {"decoder.weight",
                                                                           "decoder.bias"}


# --- a last layer of its own size (AWD-LSTM's layout) -----------------------------------------


@pytest.mark.parametrize("cell,hidden,last", [("lstm", 12, 8), ("lstm", 8, 12), ("lstm", 120, 100),
                                              ("gru", 12, 8)])
def test_last_layer_size_is_a_stack_of_two_modules(cell, hidden, last):
    torch.manual_seed(0)
    cfg = ModelConfig(task="lm", cell=cell, hidden_size=hidden, embedding_dim=8, num_layers=3,
                      last_layer_size=last, tie_weights=last == 8, dropout=0.0)
    model = LanguageModel(30, cfg).eval()
    encoder = model.encoder
    assert encoder.rnn.num_layers == 2 and encoder.last.hidden_size == last
    assert (type(model.decoder) is torch.nn.Linear and model.decoder.in_features == last)
    if last == 8:
        assert model.decoder.weight is encoder.embedding.weight  # tied, no projection
    ids = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, final = model(ids)
        reference = encoder.last(encoder.rnn(encoder.embedding(ids))[0])[0]  # the modules
        torch.testing.assert_close(model.features(ids)[0], reference, atol=1e-5, rtol=1e-5)
        width = max(hidden, last)
        assert all(s.shape == (3, 2, width) for s in final)
        assert torch.equal(final[0][2, :, last:], torch.zeros(2, width - last))  # padding
        first, state = model(ids[:, :4])
        second, _ = model(ids[:, 4:], state)
        torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=1e-5)
        steps, state = [], None
        for t in range(9):  # generation's one-token path
            out, state = model(ids[:, t: t + 1], state)
            steps.append(out)
        torch.testing.assert_close(torch.cat(steps, 1), whole, atol=1e-5, rtol=1e-5)
        for got, want in zip(state, final):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not kernels.available(), reason="the native LSTM kernel is not built here")
def test_last_layer_size_native_and_torch_paths_agree(monkeypatch):
    cfg = ModelConfig(task="lm", hidden_size=16, embedding_dim=8, num_layers=2,
                      last_layer_size=8, tie_weights=True, **AWD)
    ids = torch.randint(0, 30, (3, 7), generator=torch.Generator().manual_seed(1))
    results = []
    for native in (True, False):
        if not native:
            torch_path(monkeypatch)
        torch.manual_seed(0)
        model = LanguageModel(30, cfg).train()
        torch.manual_seed(4)
        out, state = model(ids)
        out.sum().backward()
        results.append((out.detach(), model.encoder.last.weight_hh_l0.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-4)
    assert 0.4 < (results[0][1] == 0).float().mean() < 0.6  # weight drop on the last layer too


def test_last_layer_size_trains_resumes_and_generates(lm_file, capsys):
    cfg = lm_cfg(lm_file, hidden_size=12, num_layers=2, last_layer_size=8, **AWD)
    straight, split = lm_file.parent / "straight", lm_file.parent / "split"
    api.train_run(cfg, straight, report=(), **QUIET)
    api.train_run(cfg, split, max_steps=rows(straight)[0]["step"] + 3, report=(), **QUIET)
    api.train_run(cfg, split, resume=True, report=(), **QUIET)
    assert_same_tensors(RunDir(straight).load_trainer()["model"],
                        RunDir(split).load_trainer()["model"])
    assert "encoder.last.weight_hh_l0" in load_file(str(straight / "model.safetensors"))
    assert main(["generate", str(straight), "--prompt", "the", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("settings", [dict(num_layers=1), dict(bidirectional=True, num_layers=2),
                                      dict(cell="jordan")])
def test_last_layer_size_needs_a_unidirectional_stack(settings):
    with pytest.raises(UsageError, match="--last-layer-size needs"):
        ModelConfig(last_layer_size=5, **settings)
    ModelConfig(last_layer_size=64, **settings)  # = hidden_size: the usual layout


# --- the Jordan cell -------------------------------------------------------------------------


def test_jordan_lm_is_the_hand_written_loop():
    torch.manual_seed(0)
    cfg = ModelConfig(task="lm", cell="jordan", hidden_size=7, embedding_dim=5, dropout=0.0)
    model = LanguageModel(20, cfg).eval()
    rnn = model.encoder.rnn
    assert isinstance(rnn, JordanRNN)
    ids = torch.randint(0, 20, (2, 6))
    with torch.no_grad():
        x = model.encoder.embedding(ids)
        y, outputs = torch.zeros(2, 7), []
        for t in range(6):  # h_t = tanh(W_x x_t + b + W_y y_{t-1}); y_t = W_o h_t + b_o
            h = torch.tanh(x[:, t] @ rnn.input_layer.weight.t() + rnn.input_layer.bias
                           + y @ rnn.feedback.weight.t())
            y = h @ rnn.output_layer.weight.t() + rnn.output_layer.bias
            outputs.append(y)
        expected = model.decoder(torch.stack(outputs, 1))
        logits, (state,) = model(ids)
        torch.testing.assert_close(logits, expected)
        torch.testing.assert_close(state[0], y)  # the state is the last output
        steps, carried = [], None
        for t in range(6):  # generation: one token at a time, the state carried
            out, carried = model(ids[:, t: t + 1], carried)
            steps.append(out)
        torch.testing.assert_close(torch.cat(steps, 1), logits)


def test_jordan_trains_evaluates_and_generates_from_the_command_line(lm_file, tmp_path, capsys):
    lm = tmp_path / "jordan-lm"
    assert main(["train", "--preset", "lm", *LM_CLASSIC, "--train", str(lm_file), "--out", str(lm),
                 "--cell", "jordan", "--num-layers", "1", "--embedding-dim", "8",
                 "--hidden-size", "16", "--batch-size", "4", "--num-steps", "6",
                 "--epochs", "3", "--lr", "5", "--dropout", "0.0", "--report", "valid"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(lm), "--split", "valid", "--json"]) == 0
    ppl = json.loads(capsys.readouterr().out)["perplexity"]
    assert ppl < 5  # the 3-sentence grammar, learned (uniform: about 14)
    assert main(["generate", str(lm), "--prompt", "the", "--max-tokens", "8", "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)
    assert generated
    weights = load_file(str(lm / "model.safetensors"))
    assert "encoder.rnn.feedback.weight" in weights
    rows_ = write_review_tsvs(tmp_path)
    clf = tmp_path / "jordan-clf"
    assert main(["train", "--train", str(rows_["train"]), "--valid", str(rows_["dev"]),
                 "--out", str(clf), "--cell", "jordan", "--num-layers", "1",
                 "--bidirectional", "false", "--pooling", "mean", "--embedding-dim", "8",
                 "--hidden-size", "8", "--batch-size", "16", "--lr", "0.02", "--min-freq", "1",
                 "--epochs", "3", "--report", "valid", "--json"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(clf), "--split", "valid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.6
    assert "encoder.rnn.feedback.weight" in load_file(str(clf / "model.safetensors"))


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("settings,match", [
    (dict(cell="jordan", num_layers=2), "--cell jordan has one layer"),
    (dict(cell="jordan", bidirectional=True), "--cell jordan reads one way only"),
    (dict(cell="jordan", weight_drop=0.5), "--weight-drop applies to"),
    (dict(input_dropout=1.0), "--input-dropout must be in [0, 1)"),
    (dict(hidden_dropout=-0.1), "--hidden-dropout must be in [0, 1)"),
    (dict(output_dropout=float("nan")), "--output-dropout must be a finite number"),
    (dict(embedding_dropout=1.0), "--embedding-dropout must be in [0, 1)"),
    (dict(weight_drop=1.5), "--weight-drop must be in [0, 1)"),
])
def test_model_settings_are_checked(settings, match):
    with pytest.raises(UsageError, match=re.escape(match)):
        ModelConfig(**settings)


@pytest.mark.parametrize("settings,match", [
    (dict(ar_alpha=-1.0), "--ar-alpha must not be negative"),
    (dict(tar_beta=-1.0), "--tar-beta must not be negative"),
    (dict(nonmono=-1), "--nonmono must be"),
    (dict(nt_asgd=True, optimizer="adam"), "--nt-asgd averages SGD's weights"),
])
def test_train_settings_are_checked(settings, match):
    with pytest.raises(UsageError, match=match):
        TrainConfig(**settings)


def test_lm_only_training_aids_are_refused_for_classifiers():
    for name, value in (("ar_alpha", 1.0), ("tar_beta", 1.0), ("variable_bptt", True)):
        with pytest.raises(UsageError, match="applies to language models only"):
            preset("lstm-classifier").override(**{name: value})


def test_optional_rates_fall_back_to_dropout_and_parse_on_the_command_line():
    cfg = ModelConfig(dropout=0.3, input_dropout=0.6, output_dropout=0.0)
    assert (cfg.rate("input"), cfg.rate("hidden"), cfg.rate("output")) == (0.6, 0.3, 0.0)
    convert = _converter("float | None")
    assert convert("0.25") == 0.25 and convert("none") is None and convert("None") is None
    assert _converter("str | None")("x") == "x"
    with pytest.raises(Exception, match="expected a number"):
        convert("lots")


def test_awd_presets():
    awd = preset("ptb-awd")
    m, t = awd.model, awd.train
    assert (m.embedding_dim, m.hidden_size, m.num_layers, m.last_layer_size, m.tie_weights) == (
        400, 1150, 3, 400, True)
    assert (m.rate("output"), m.rate("hidden"), m.rate("input")) == (0.4, 0.25, 0.4)
    assert (m.embedding_dropout, m.weight_drop, m.locked_dropout) == (0.1, 0.5, True)
    assert (t.optimizer, t.lr, t.clip, t.num_steps, t.batch_size, t.epochs) == (
        "sgd", 30.0, 0.25, 70, 20, 500)
    assert (t.ar_alpha, t.tar_beta, t.weight_decay, t.nt_asgd, t.nonmono, t.variable_bptt) == (
        2.0, 1.0, 1.2e-6, True, 5, True)
    hour = preset("ptb-hour")
    assert hour.model.tie_weights and hour.train.max_minutes > 0
    with torch.device("meta"):
        model = LanguageModel(10_000, awd.model)
    assert type(model.decoder) is torch.nn.Linear  # the last layer ties without a projection
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(24.2e6, rel=0.01)
    assert model.decoder.weight is model.encoder.embedding.weight
