"""The native LSTM kernel computes nn.LSTM's function and gradients, and falls back cleanly."""

import os

import pytest
import torch
from torch import nn

from rnnkit import kernels
from rnnkit.config import ModelConfig
from rnnkit.models import Classifier, LanguageModel
from rnnkit.models.encoder import Dropout


def test_kernel_is_built_here():
    # CI installs a C compiler (scripts/install.sh): the fast path must be the one tested.
    if os.environ.get("RNNKIT_NATIVE") == "0":
        pytest.skip("RNNKIT_NATIVE=0 turns the kernel off")
    assert kernels.available(), "the native LSTM kernel did not build: is a C compiler installed?"


def _compare(lib, B, T, I, H, with_state, input_grad):
    torch.manual_seed(B * 100 + T)
    lstm = nn.LSTM(I, H, batch_first=True)
    x = torch.randn(B, T, I, requires_grad=input_grad)
    state = (torch.randn(1, B, H, requires_grad=True), torch.randn(1, B, H, requires_grad=True))
    out, (h, c) = lstm(x, state if with_state else None)
    g_out, g_h, g_c = torch.randn_like(out), torch.randn_like(h), torch.randn_like(c)
    inputs = list(lstm.parameters()) + ([x] if input_grad else []) + (
        list(state) if with_state else [])
    loss = (out * g_out).sum() + (h * g_h).sum() + (c * g_c).sum()
    expected = torch.autograd.grad(loss, inputs)

    h0, c0 = (state[0][0], state[1][0]) if with_state else (torch.zeros(B, H),) * 2
    out2, h2, c2 = kernels._LSTMLayer.apply(x, lstm.weight_ih_l0, lstm.weight_hh_l0,
                                            lstm.bias_ih_l0, lstm.bias_hh_l0, h0, c0, lib)
    torch.testing.assert_close(out2, out, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(h2, h[0], atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(c2, c[0], atol=2e-6, rtol=1e-5)
    loss2 = (out2 * g_out).sum() + (h2 * g_h[0]).sum() + (c2 * g_c[0]).sum()
    got = torch.autograd.grad(loss2, inputs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


SHAPES = [(24, 37, 50, 64), (5, 7, 3, 13), (1, 1, 4, 8), (9, 12, 16, 96), (3, 5, 7, 1)]


@pytest.mark.parametrize("B,T,I,H", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("input_grad", [False, True])
def test_native_layer_matches_nn_lstm(B, T, I, H, with_state, input_grad):
    lib = kernels.library()
    assert lib is not None
    _compare(lib, B, T, I, H, with_state, input_grad)


def test_portable_build_matches_nn_lstm(tmp_path):
    """The plain-C path (CPUs without AVX2/FMA) computes the same function."""
    path = kernels.build(("-O2", "-mno-avx2", "-mno-fma", "-fPIC", "-shared", "-fopenmp"),
                         tmp_path)
    assert path is not None
    lib = kernels.load(path)
    assert lib.rk_vector_width() == 1
    for shape in SHAPES[:3]:
        _compare(lib, *shape, with_state=True, input_grad=True)


def test_build_failure_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    assert kernels.build(directory=tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind


def test_threads_do_not_change_results():
    torch.manual_seed(1)
    lstm = nn.LSTM(6, 16, batch_first=True)
    x = torch.randn(13, 9, 6)
    weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.lstm_layer(x, *weights)[0]
        torch.set_num_threads(3)
        three = kernels.lstm_layer(x, *weights)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)  # rows never interact: bit-identical


@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_native_equals_torch_path(monkeypatch, bidirectional):
    """Whole models: the native encoder gives nn.LSTM's outputs and gradients."""
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=12, embedding_dim=10, num_layers=2, dropout=0.0,
                      bidirectional=bidirectional, pooling="meanmax")
    model = Classifier(40, 3, cfg, pad_id=0).train()
    ids = torch.randint(1, 40, (5, 11))
    lengths = torch.tensor([11, 3, 7, 1, 9])
    for row, n in enumerate(lengths):
        ids[row, n:] = 0

    def run():
        model.zero_grad()
        logits = model(ids, lengths)[0]
        logits.square().sum().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    assert model.encoder._native(torch.zeros(1))
    native_logits, native_grads = run()
    monkeypatch.setattr(kernels, "usable", lambda x, hidden: False)
    assert not model.encoder._native(torch.zeros(1))
    torch_logits, torch_grads = run()
    torch.testing.assert_close(native_logits, torch_logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(native_grads, torch_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_language_model_state_carried_natively(monkeypatch):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, embedding_dim=16, num_layers=2, dropout=0.0)
    model = LanguageModel(50, cfg).eval()
    ids = torch.randint(0, 50, (3, 8))
    state = model.initial_state(3)
    with torch.inference_mode():
        out_a, state_a = model(ids[:, :4], state)
        out_b, state_b = model(ids[:, 4:], state_a)
        monkeypatch.setattr(kernels, "usable", lambda x, hidden: False)
        ref_a, ref_state_a = model(ids[:, :4], state)
        ref_b, ref_state_b = model(ids[:, 4:], ref_state_a)
    torch.testing.assert_close(out_a, ref_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_b, ref_b, atol=1e-5, rtol=1e-5)
    for a, b in zip(state_b, ref_state_b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_large_hidden_and_other_devices_use_torch():
    assert not kernels.usable(torch.zeros(2, 3, 4), kernels.MAX_HIDDEN + 1)
    assert not kernels.usable(torch.zeros(2, 3, 4, dtype=torch.float64), 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not kernels.usable(torch.zeros(2, 3, 4), 8)


def test_dropout_rate_and_scale():
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    layer = Dropout(0.25).train()
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.002
    assert torch.all(y[kept] == 1 / 0.75)  # round(0.25 * 65536) / 65536 is exactly 0.25
    assert abs(y.mean().item() - 1.0) < 0.003  # unbiased
    odd = Dropout(0.3).train()(torch.ones(7, 13))  # sizes not a multiple of four
    assert odd.shape == (7, 13) and set(odd.unique().tolist()) <= {0.0, torch.tensor(65536 / 45875).item()}
    torch.manual_seed(5)
    a = layer(x)
    torch.manual_seed(5)
    assert torch.equal(a, layer(x))  # drawn from torch's generator: seeded runs repeat
    assert torch.equal(Dropout(0.25).eval()(x), x)


def test_nan_propagates_like_nn_lstm():
    """A diverged model must show as NaN (the trainer stops on a non-finite loss), not be
    clamped into finite numbers by the kernel's exp."""
    lstm = nn.LSTM(4, 8, batch_first=True)
    x = torch.randn(2, 3, 4)
    x[0, 1, 2] = float("nan")
    out = kernels.lstm_layer(x, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                             lstm.bias_hh_l0)[0]
    assert torch.isnan(out[0, 1:]).all() and not torch.isnan(out[1]).any()
    assert torch.equal(torch.isnan(out), torch.isnan(lstm(x)[0]))


def test_unwritable_cache_falls_back_to_temp(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache folder should be: mkdir fails
    monkeypatch.setattr(kernels, "cache_dir", lambda: blocked / "kernels")
    monkeypatch.setattr(kernels.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    path = kernels.build()
    assert path is not None and path.parent == tmp_path / "tmp" / "rnnkit-kernels"
    assert kernels.load(path).rk_vector_width() in (1, 8)
