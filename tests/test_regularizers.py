"""AWD-LSTM's regularisers: masks, weight drop on both LSTM paths, AR/TAR, NT-ASGD's average,
tied decoder, variable BPTT."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnkit import kernels
from rnnkit.models.regularizers import (NTASGD, LockedDropout, TiedDecoder,
                                        activation_regularization, bptt_length, drop_weights,
                                        embedding_dropout, lr_scale, rnn_layer,
                                        temporal_activation_regularization, window_starts)

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def layer_weights(rnn: nn.RNNBase) -> list[torch.Tensor]:
    return [getattr(rnn, f"{name}_l0") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


# --- LockedDropout ------------------------------------------------------------------------

def test_locked_dropout_shares_one_mask_over_time():
    torch.manual_seed(0)
    dropout = LockedDropout(0.3).train()
    x = torch.ones(64, 7, 200)
    y = dropout(x)
    assert all(torch.equal(y[:, t], y[:, 0]) for t in range(7))  # same mask at every step
    assert set(y.unique().tolist()) == {0.0, float(torch.tensor(1 / 0.7))}  # inverted scaling
    assert abs((y[:, 0] == 0).float().mean().item() - 0.3) < 0.02
    assert not torch.equal(y[0, 0], y[1, 0])  # each sequence its own mask


def test_locked_dropout_identity_in_eval_and_at_zero():
    x = torch.randn(2, 3, 4)
    assert LockedDropout(0.5).eval()(x) is x
    assert LockedDropout(0.0).train()(x) is x
    with pytest.raises(ValueError):
        LockedDropout(1.0)


# --- embedding dropout --------------------------------------------------------------------

def test_embedding_dropout_drops_whole_rows_with_inverted_scaling():
    torch.manual_seed(0)
    weight = torch.randn(5000, 8, requires_grad=True)
    dropped = embedding_dropout(weight, 0.25, training=True)
    gone = (dropped == 0).all(dim=1)  # (V,)
    assert abs(gone.float().mean().item() - 0.25) < 0.02
    torch.testing.assert_close(dropped[~gone], weight[~gone] / 0.75)
    dropped.sum().backward()
    assert torch.equal(weight.grad[gone], torch.zeros_like(weight.grad[gone]))
    torch.testing.assert_close(weight.grad[~gone], torch.full_like(weight.grad[~gone], 1 / 0.75))
    # Every occurrence of a dropped word in the batch reads zeros.
    word = int(gone.nonzero()[0])
    embedded = F.embedding(torch.tensor([[word, 1, word]]), dropped)
    assert torch.equal(embedded[0, 0], torch.zeros(8)) and torch.equal(embedded[0, 2],
                                                                       torch.zeros(8))


def test_embedding_dropout_identity_in_eval():
    weight = torch.randn(10, 4)
    assert embedding_dropout(weight, 0.5, training=False) is weight
    assert embedding_dropout(weight, 0.0, training=True) is weight


# --- weight drop --------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_rnn_layer_equals_the_torch_module(cell):
    torch.manual_seed(0)
    rnn = RNNS[cell](5, 6, batch_first=True)
    x = torch.randn(3, 7, 5)
    h0, c0 = torch.randn(3, 6), torch.randn(3, 6)
    state = (h0[None], c0[None]) if cell == "lstm" else h0[None]
    expected, expected_state = rnn(x, state)
    out, h, c = rnn_layer(cell, x, *layer_weights(rnn), h0, c0 if cell == "lstm" else None)
    assert torch.equal(out, expected)
    if cell == "lstm":
        assert torch.equal(h, expected_state[0][0]) and torch.equal(c, expected_state[1][0])
    else:
        assert torch.equal(h, expected_state[0]) and c is None
    # p = 0 and eval use the raw matrix itself, so the same outputs exactly.
    w_hh = rnn.weight_hh_l0
    assert drop_weights(w_hh, 0.0, training=True) is w_hh
    assert drop_weights(w_hh, 0.5, training=False) is w_hh
    assert torch.equal(rnn_layer(cell, x, *layer_weights(rnn))[0], rnn(x)[0])


def test_drop_weights_masks_about_p_and_scales_the_rest():
    torch.manual_seed(0)
    raw = torch.randn(256, 64, requires_grad=True)
    dropped = drop_weights(raw, 0.4, training=True)
    kept = dropped != 0
    assert abs(1 - kept.float().mean().item() - 0.4) < 0.02
    assert torch.equal(dropped[kept], raw[kept] * torch.tensor(1 / 0.6))
    assert not torch.equal(dropped, drop_weights(raw, 0.4, training=True))  # a mask per call


def lstm_step_loop(x, w_ih, w_hh, b_ih, b_hh):
    """nn.LSTM's equations, one step at a time, with the given (dropped) w_hh at every step."""
    h = c = x.new_zeros(x.shape[0], w_hh.shape[1])
    outputs = []
    for t in range(x.shape[1]):
        i, f, g, o = (x[:, t] @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, 1)


def test_weight_drop_uses_one_mask_for_all_steps_and_reaches_the_raw_weight():
    torch.manual_seed(0)
    rnn = nn.LSTM(5, 8, batch_first=True).train()
    w_ih, w_hh, b_ih, b_hh = layer_weights(rnn)
    x = torch.randn(4, 9, 5)
    dropped = drop_weights(w_hh, 0.5, training=True)
    out, _, _ = rnn_layer("lstm", x, w_ih, dropped, b_ih, b_hh)
    torch.testing.assert_close(out, lstm_step_loop(x, w_ih, dropped, b_ih, b_hh),
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, rnn(x)[0], atol=1e-3)  # the mask did change the layer
    out.pow(2).sum().backward()
    masked = dropped == 0
    assert torch.equal(w_hh.grad[masked], torch.zeros_like(w_hh.grad[masked]))
    assert (w_hh.grad[~masked] != 0).float().mean() > 0.95


@pytest.mark.skipif(not kernels.available(), reason="the native LSTM kernel is not built here")
def test_native_kernel_with_the_dropped_weight_matches_torch():
    torch.manual_seed(0)
    rnn = nn.LSTM(6, 16, batch_first=True)
    w_ih, w_hh, b_ih, b_hh = layer_weights(rnn)
    x = torch.randn(3, 11, 6)
    h0, c0 = torch.randn(3, 16), torch.randn(3, 16)
    dropped = drop_weights(w_hh, 0.5, training=True)
    results, grads = [], []
    for layer in (kernels.lstm_layer, lambda *a: rnn_layer("lstm", *a)):
        w_hh.grad = None
        out, h, c = layer(x, w_ih, dropped, b_ih, b_hh, h0, c0)
        (out.sum() + h.sum() + c.pow(2).sum()).backward(retain_graph=True)
        results.append((out, h, c))
        grads.append(w_hh.grad.clone())
    for native, reference in zip(*results):
        torch.testing.assert_close(native, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)
    assert torch.equal(grads[0][dropped == 0], torch.zeros_like(grads[0][dropped == 0]))


# --- AR / TAR -----------------------------------------------------------------------------

def test_ar_and_tar_by_hand():
    outputs = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, -1.0]]])  # (1, 3, 2)
    # AR: 2 * (1 + 4 + 9 + 16 + 0 + 1) / 6; TAR: 3 * (2² + 2² + 3² + 5²) / 4
    assert activation_regularization(outputs, 2.0).item() == pytest.approx(31 / 3)
    assert temporal_activation_regularization(outputs, 3.0).item() == pytest.approx(31.5)


def test_ar_and_tar_leave_padding_out():
    outputs = torch.tensor([[1.0, 2.0, 4.0], [5.0, 7.0, 100.0]]).unsqueeze(-1)  # (2, 3, 1)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # AR: (1 + 4 + 16 + 25 + 49) / 5; TAR: pairs (1, 2), (2, 4), (5, 7): (1 + 4 + 4) / 3
    assert activation_regularization(outputs, 1.0, mask).item() == pytest.approx(19.0)
    assert temporal_activation_regularization(outputs, 1.0, mask).item() == pytest.approx(3.0)
    nothing = torch.zeros_like(mask)
    assert activation_regularization(outputs, 1.0, nothing).item() == 0.0
    assert temporal_activation_regularization(outputs[:, :1], 1.0).item() == 0.0  # T = 1
    assert activation_regularization(outputs, 0.0).item() == 0.0


def test_ar_gradient():
    outputs = torch.tensor([[[1.0, -2.0]]], requires_grad=True)
    activation_regularization(outputs, 0.5).backward()
    torch.testing.assert_close(outputs.grad, torch.tensor([[[0.5, -1.0]]]))  # 0.5 * 2h / 2


# --- NT-ASGD ------------------------------------------------------------------------------

def test_ntasgd_triggers_on_a_loss_worse_than_the_best_long_ago():
    ntasgd = NTASGD(nonmono=2)
    # index 3: 3.5 > min(5)? no; 4: 3.2 > min(5, 4)? no; 5: 3.1 > min(5, 4, 3)? yes
    starts = [ntasgd.observe(v) for v in [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 9.0]]
    assert starts == [False, False, False, False, False, True, False]
    assert ntasgd.trigger_at == 5 and ntasgd.losses[-1] == 9.0
    # Nothing before more than `nonmono` earlier losses exist, however bad.
    late = NTASGD(nonmono=2)
    assert [late.observe(v) for v in [1.0, 9.0, 9.0, 9.0]] == [False, False, False, True]
    assert NTASGD().nonmono == 5


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(7, 3)
        self.hidden = nn.Linear(3, 3)
        self.decoder = nn.Linear(3, 7)
        self.decoder.weight = self.embedding.weight  # tied
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)

    def forward(self, ids):
        return self.decoder(torch.tanh(self.hidden(self.embedding(ids))))


def sgd_step(model, optimizer, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 7, (4, 5), generator=generator)
    loss = F.cross_entropy(model(ids).reshape(-1, 7), ids.roll(1, 1).reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def trained_with_average(steps_before=3, steps_after=4):
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ntasgd = NTASGD(nonmono=1)
    snapshots = []
    for step in range(steps_before):
        sgd_step(model, optimizer, step)
        ntasgd.update(model)  # not triggered: nothing kept
    assert ntasgd.count == 0 and not ntasgd.sums
    ntasgd.observe(1.0), ntasgd.observe(2.0)
    assert ntasgd.observe(3.0)
    for step in range(steps_after):
        sgd_step(model, optimizer, 100 + step)
        ntasgd.update(model)
        snapshots.append({k: v.clone() for k, v in model.named_parameters()})
    return model, optimizer, ntasgd, snapshots


def test_ntasgd_average_is_the_mean_of_the_snapshots_since_the_trigger():
    model, _, ntasgd, snapshots = trained_with_average()
    averaged = ntasgd.averaged_state_dict(model)
    assert set(averaged) == set(model.state_dict())
    for name in ("embedding.weight", "hidden.weight", "hidden.bias", "decoder.bias"):
        expected = (sum(s[name].double() for s in snapshots) / len(snapshots)).float()
        assert torch.equal(averaged[name], expected), name
        mean = torch.stack([s[name] for s in snapshots]).mean(0)
        torch.testing.assert_close(averaged[name], mean)
    assert torch.equal(averaged["decoder.weight"], averaged["embedding.weight"])  # tied
    assert torch.equal(averaged["frozen"], model.frozen) and "frozen" not in ntasgd.sums
    assert not torch.equal(averaged["hidden.weight"], model.hidden.weight)
    assert ntasgd.sums["hidden.weight"].dtype == torch.float64


def test_ntasgd_before_any_averaged_step_gives_the_raw_weights():
    ntasgd, model = NTASGD(nonmono=1), Tiny()
    ntasgd.observe(1.0), ntasgd.observe(2.0), ntasgd.observe(3.0)
    assert ntasgd.triggered
    for key, value in ntasgd.averaged_state_dict(model).items():
        assert torch.equal(value, model.state_dict()[key])
    with ntasgd.averaged(model):
        assert torch.equal(model.hidden.weight, ntasgd.averaged_state_dict(model)["hidden.weight"])


def test_ntasgd_swap_in_and_out_restores_the_raw_weights_bit_for_bit():
    model, _, ntasgd, _ = trained_with_average()
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    averaged = ntasgd.averaged_state_dict(model)
    with ntasgd.averaged(model):
        for key, value in model.state_dict().items():
            assert torch.equal(value, averaged[key]), key
        with pytest.raises(RuntimeError):
            ntasgd.swap_in(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, raw[key]), key
    with pytest.raises(ZeroDivisionError):  # restored even when evaluation fails
        with ntasgd.averaged(model):
            1 / 0
    assert all(torch.equal(v, raw[k]) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError):
        ntasgd.swap_out(model)


def test_ntasgd_state_round_trip_continues_exactly(tmp_path):
    model, optimizer, ntasgd, _ = trained_with_average()
    torch.save({"ntasgd": ntasgd.state_dict(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict()}, tmp_path / "trainer.pt")
    saved = torch.load(tmp_path / "trainer.pt", weights_only=True)
    restored, model2 = NTASGD(), Tiny()
    restored.load_state_dict(saved["ntasgd"])
    model2.load_state_dict(saved["model"])
    optimizer2 = torch.optim.SGD(model2.parameters(), lr=0.5)
    optimizer2.load_state_dict(saved["optimizer"])
    assert (restored.nonmono, restored.losses, restored.trigger_at, restored.count) == (
        ntasgd.nonmono, ntasgd.losses, ntasgd.trigger_at, ntasgd.count)
    for step in range(3):  # both continue: the same averages, bit for bit
        for m, o, n in ((model, optimizer, ntasgd), (model2, optimizer2, restored)):
            sgd_step(m, o, 200 + step)
            n.update(m)
    ours, theirs = ntasgd.averaged_state_dict(model), restored.averaged_state_dict(model2)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    untriggered = NTASGD(nonmono=3)
    untriggered.observe(2.0)
    torch.save(untriggered.state_dict(), tmp_path / "early.pt")
    again = NTASGD()
    again.load_state_dict(torch.load(tmp_path / "early.pt", weights_only=True))
    assert again.trigger_at is None and again.losses == [2.0] and again.nonmono == 3


# --- tied decoder -------------------------------------------------------------------------

def test_tied_decoder_shares_the_embedding_for_any_hidden_size():
    embedding = nn.Embedding(11, 4)
    decoder = TiedDecoder(embedding, hidden_size=6)
    assert decoder.weight is embedding.weight
    assert decoder.weight.data_ptr() == embedding.weight.data_ptr()
    assert decoder.projection.weight.shape == (4, 6) and decoder.projection.bias is None
    features = torch.randn(2, 3, 6)
    logits = decoder(features)
    assert logits.shape == (2, 3, 11)
    torch.testing.assert_close(logits, decoder.projection(features) @ embedding.weight.t()
                               + decoder.bias)
    logits.sum().backward()
    assert embedding.weight.grad is not None and decoder.projection.weight.grad is not None
    model = nn.ModuleDict({"embedding": embedding, "decoder": decoder})
    assert sum(p.numel() for p in model.parameters()) == 11 * 4 + 4 * 6 + 11  # counted once


def test_tied_decoder_without_projection_when_sizes_match():
    embedding = nn.Embedding(11, 5)
    decoder = TiedDecoder(embedding, hidden_size=5)
    assert decoder.projection is None and set(decoder.state_dict()) == {"weight", "bias"}
    assert torch.equal(decoder.bias, torch.zeros(11))
    features = torch.randn(3, 5)
    assert torch.equal(decoder(features), F.linear(features, embedding.weight, decoder.bias))


# --- variable BPTT ------------------------------------------------------------------------

def test_bptt_length_is_a_pure_function_of_the_generator_state():
    rng = np.random.default_rng(7)
    before = rng.bit_generator.state
    first = [bptt_length(70, rng) for _ in range(50)]
    rng.bit_generator.state = before
    assert [bptt_length(70, rng) for _ in range(50)] == first
    # Exactly two draws per call: a uniform, then a normal.
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    length = bptt_length(70, a)
    mean = 70 if b.random() < 0.95 else 35
    assert length == max(5, int(b.normal(mean, 5.0)))
    assert a.random() == b.random()


def test_bptt_length_bounds_and_distribution():
    rng = np.random.default_rng(0)
    lengths = np.array([bptt_length(70, rng) for _ in range(20000)])
    short = lengths < 52
    assert abs(short.mean() - 0.05) < 0.01
    assert abs(lengths[~short].mean() - 69.5) < 0.3  # int() truncates: about mean - 0.5
    assert abs(lengths[~short].std() - 5.0) < 0.3
    assert abs(lengths[short].mean() - 34.5) < 1.0
    bounded = [bptt_length(10, rng, std=20, min_len=4, max_len=15) for _ in range(2000)]
    assert min(bounded) == 4 and max(bounded) == 15


def test_window_starts_cover_the_stream_deterministically():
    windows = window_starts(10_000, 70, seed=1, epoch=3, max_len=90)
    assert windows == window_starts(10_000, 70, seed=1, epoch=3, max_len=90)
    assert windows != window_starts(10_000, 70, seed=1, epoch=4, max_len=90)
    assert windows != window_starts(10_000, 70, seed=2, epoch=3, max_len=90)
    position = 0
    for start, length in windows:  # no gap, no overlap
        assert start == position and length > 0
        position += length
    assert position == 10_000
    assert all(5 <= length <= 90 for _, length in windows[:-1])
    assert window_starts(0, 70, seed=1, epoch=0) == []
    assert window_starts(3, 70, seed=1, epoch=0) == [(0, 3)]
    with pytest.raises(ValueError):
        window_starts(100, 70, seed=1, epoch=0, min_len=10, max_len=5)


def test_lr_scale():
    assert lr_scale(35, 70) == 0.5 and lr_scale(70, 70) == 1.0
