"""The encoder's exactness: results never depend on padding or on batch neighbours."""

import pytest
import torch

from rnnkit.config import ModelConfig
from rnnkit.language_model import batchify, evaluate_stream
from rnnkit.models import Classifier, LanguageModel
from rnnkit.models.encoder import reverse_index


def test_reverse_index_reverses_within_length():
    index = reverse_index(torch.tensor([3, 1, 4]), 4)
    assert index.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "meanmax", "attention"])
def test_result_independent_of_padding_and_batch(cell, bidirectional, pooling):
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, bidirectional=bidirectional, pooling=pooling, hidden_size=8,
                      embedding_dim=6, num_layers=2, dropout=0.0)
    model = Classifier(30, 3, cfg, pad_id=0).eval()
    texts = [torch.randint(1, 30, (n,)) for n in (5, 9, 2, 7)]
    alone = [model(t.unsqueeze(0), torch.tensor([len(t)]))[0] for t in texts]
    width = 12
    batch = torch.zeros(len(texts), width, dtype=torch.long)  # right-padded with <pad> = 0
    for row, t in enumerate(texts):
        batch[row, : len(t)] = t
    together = model(batch, torch.tensor([len(t) for t in texts]))[0]
    for row, single in enumerate(alone):
        torch.testing.assert_close(together[row], single[0], atol=1e-5, rtol=1e-5)
    # Padding with a real word instead of <pad> changes nothing either: it is never read.
    batch[batch == 0] = 7
    torch.testing.assert_close(model(batch, torch.tensor([len(t) for t in texts]))[0], together,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_reads_both_ways(cell):
    """Each half of the encoder's output is a one-way RNN over the embeddings: the forward
    half reads the text as written, the backward half reads it from its last real token to
    its first (never the padding), checked against torch's RNNs run by hand."""
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, bidirectional=True, hidden_size=5, embedding_dim=4,
                      dropout=0.0)
    model = Classifier(20, 2, cfg, pad_id=0).eval()
    encoder = model.encoder
    ids = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0]])  # the second is padded
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        outputs, _ = encoder(ids, lengths)  # (B, T, 2H)
        for row, n in enumerate(lengths.tolist()):
            x = encoder.embedding(ids[row, :n]).unsqueeze(0)  # (1, n, E): real tokens only
            forward = encoder.forward_rnns[0](x)[0][0]  # (n, H)
            backward = encoder.backward_rnns[0](x.flip(1))[0][0].flip(0)  # back in order
            torch.testing.assert_close(outputs[row, :n, :5], forward)
            torch.testing.assert_close(outputs[row, :n, 5:], backward)
        # and the two directions are not the same function
        assert not torch.allclose(outputs[..., :5], outputs[..., 5:])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lm_state_carry_equals_one_long_window(cell):
    torch.manual_seed(0)
    cfg = ModelConfig(task="lm", cell=cell, hidden_size=8, embedding_dim=8, num_layers=2,
                      dropout=0.0, tie_weights=True, init_range=0.1)
    model = LanguageModel(20, cfg).eval()
    ids = torch.randint(0, 20, (2, 12))
    whole, _ = model(ids, None)
    first, state = model(ids[:, :5], None)
    second, _ = model(ids[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=1e-5)
    assert model.decoder.weight is model.encoder.embedding.weight


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_one_token_steps_equal_the_fused_kernel(cell):
    """Evaluation with one token per call (generation) takes a plain-matmul path; token by
    token, from no state and from a carried one, it must give the fused kernel's outputs."""
    torch.manual_seed(0)
    cfg = ModelConfig(task="lm", cell=cell, hidden_size=16, embedding_dim=10, num_layers=2,
                      dropout=0.3, softmax="adaptive", cutoffs="8,16")
    model = LanguageModel(30, cfg).eval()
    ids = torch.randint(0, 30, (3, 9))
    with torch.no_grad():
        whole, final = model(ids, None)
        _, prompt_state = model(ids[:, :4], None)
        steps, state = [], None
        for t in range(ids.shape[1]):
            out, state = model(ids[:, t: t + 1], state)
            steps.append(out)
        torch.testing.assert_close(torch.cat(steps, 1), whole, atol=1e-5, rtol=1e-5)
        for got, want in zip(state, final):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        state = prompt_state
        for t in range(4, ids.shape[1]):
            out, state = model(ids[:, t: t + 1], state)
        torch.testing.assert_close(out[:, 0], whole[:, -1], atol=1e-5, rtol=1e-5)
    model.train()  # training keeps the fused kernel (and its dropout)
    assert not torch.equal(model(ids[:, :1], None)[0], model(ids[:, :1], None)[0])


@pytest.mark.parametrize("streams", [1, 3, 4, 40])
def test_parallel_evaluation_scores_every_token_once(streams):
    """eval_streams: N contiguous parts, each from a zero state, plus the leftover; the
    total equals scoring each part by itself as one stream (and one part is the exact
    single stream)."""
    torch.manual_seed(0)
    cfg = ModelConfig(task="lm", hidden_size=8, embedding_dim=8, num_layers=2, dropout=0.0,
                      softmax="adaptive", cutoffs="8,16")
    model = LanguageModel(30, cfg).eval()
    ids = torch.randint(0, 30, (103,))
    got = evaluate_stream(model, ids, window=7, streams=streams)
    assert got["tokens"] == 102
    count = streams if streams > 1 and 102 // streams >= 2 else 1
    width = 102 // count
    parts = [ids[k * width: (k + 1) * width + 1] for k in range(count)]
    if count * width < 102:
        parts.append(ids[count * width:])
    total = 0.0
    for part in parts:  # each part alone, one exact stream, one long window
        one = evaluate_stream(model, part, window=1000)
        total += one["loss"] * one["tokens"]
    assert sum(len(part) - 1 for part in parts) == 102
    assert got["loss"] == pytest.approx(total / 102, rel=1e-5)
    if streams > 1 and width >= 2:  # the resets change the figure, a little
        assert got["loss"] != pytest.approx(evaluate_stream(model, ids)["loss"], rel=1e-7)


def test_batchify_layout():
    streams = batchify(torch.arange(26), 4)
    assert streams.shape == (4, 6)
    assert streams[1].tolist() == [6, 7, 8, 9, 10, 11]  # each row is contiguous text


def test_adaptive_softmax_is_normalized_and_consistent():
    torch.manual_seed(0)
    cfg = ModelConfig(task="lm", hidden_size=16, embedding_dim=16, dropout=0.0,
                      softmax="adaptive", cutoffs="10,30")
    model = LanguageModel(50, cfg).eval()
    ids = torch.randint(0, 50, (3, 7))
    log_probs, _ = model(ids)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 7), atol=1e-5, rtol=0)
    features, _ = model.features(ids[:, :-1])
    nll = model.token_nll(features, ids[:, 1:], reduction="sum")
    gathered = log_probs[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).sum()
    torch.testing.assert_close(nll, -gathered, atol=1e-4, rtol=1e-5)


def test_lm_loss_matches_a_textbook_time_major_lstm():
    """rnnkit's batch-first model and a plain time-major nn.LSTM with the same weights compute
    the same loss: the fast path is the same function."""
    torch.manual_seed(0)
    cfg = ModelConfig(task="lm", hidden_size=12, embedding_dim=12, num_layers=2, dropout=0.0)
    model = LanguageModel(40, cfg).eval()
    ref_rnn = torch.nn.LSTM(12, 12, 2)
    ref_rnn.load_state_dict(model.encoder.rnn.state_dict())
    ids = torch.randint(0, 40, (4, 9))
    features, _ = model.features(ids[:, :-1])
    ours = model.token_nll(features, ids[:, 1:])
    out, _ = ref_rnn(model.encoder.embedding(ids[:, :-1].t()))  # (T, B, H)
    logits = model.decoder(out)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), ids[:, 1:].t().reshape(-1))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_bf16_training_step_tracks_fp32():
    """On a CPU with native bf16 the autocast step tracks fp32; on one without (no AVX-512 BF16
    or AMX, where oneDNN has no bf16 LSTM kernel) bf16 falls back to exactly the fp32 step."""
    from rnnkit.config import preset
    from rnnkit.data.splits import CorpusData
    from rnnkit.language_model import LanguageModelTask
    from rnnkit.precision import bf16_supported
    from rnnkit.data.vocab import Vocab

    vocab = Vocab([f"w{i}" for i in range(30)] + ["<unk>", "<eos>"], ["<unk>", "<eos>"])
    stream = torch.randint(0, 32, (2000,), generator=torch.Generator().manual_seed(0))
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = preset("ptb-small").override(hidden_size=16, embedding_dim=16, batch_size=4,
                                           num_steps=10, precision=precision)
        task = LanguageModelTask(cfg, CorpusData(vocab, {"train": stream}))
        torch.manual_seed(0)
        model = task.build_model()
        loss, _, _ = task.train_step(model, 0, None)
        loss.backward()
        losses[precision] = loss.detach()
    assert losses["bf16"].dtype == torch.float32
    if bf16_supported():
        assert abs(float(losses["bf16"]) - float(losses["fp32"])) < 0.02 * float(losses["fp32"])
    else:
        assert torch.equal(losses["bf16"], losses["fp32"])


def test_ngram_dropout_is_unbiased_and_off_in_eval():
    from rnnkit.models.classifier import NgramBag

    torch.manual_seed(0)
    bag = NgramBag(64, 2, dropout=0.5)
    bag.ratios.uniform_(-1, 1)
    torch.nn.init.uniform_(bag.weight.weight, -1, 1)
    features = torch.tensor([1, 5, 9, 13, 2, 7, 40])
    owner = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    bag.eval()
    full = bag(features, owner, 2)
    assert torch.equal(full, bag(features, owner, 2))  # no dropout at evaluation
    bag.train()
    samples = torch.stack([bag(features, owner, 2) for _ in range(4000)])
    assert not torch.equal(samples[0], samples[1])
    assert torch.allclose(samples.mean(0), full, atol=0.08)  # kept features scaled by 1/(1-p)


def test_dropout_keeps_the_expectation_and_is_off_in_eval():
    from rnnkit.models.encoder import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.25)
    x = torch.ones(200, 500)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.01
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.75))
    assert abs(y.mean().item() - 1.0) < 0.02
    drop.eval()
    assert drop(x) is x


def test_branch_mix_is_fitted_for_accuracy_then_log_loss():
    from rnnkit.classification import MIX_GRID, fit_mix
    from rnnkit.models.classifier import mix_log_probs
    labels = torch.tensor([0, 1, 0, 1])
    right = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]))
    wrong = right.flip(-1)
    assert fit_mix([right, wrong], labels) == 1.0  # the encoder alone
    assert fit_mix([wrong, right], labels) == 0.0  # the n-grams alone
    assert fit_mix([right, right], labels) == 0.5  # no difference: the plain average
    # a sure branch that is wrong once beside a hesitant one that is always right: only a
    # weight above 0.84 gets all four right; of those, the one of least log-loss
    sure = torch.log(torch.tensor([[0.99, 0.01], [0.01, 0.99], [0.01, 0.99], [0.01, 0.99]]))
    w = fit_mix([right, sure], labels)
    loss = torch.nn.functional.nll_loss
    grid = [k / MIX_GRID for k in range(MIX_GRID + 1)]
    perfect = [v for v in grid
               if bool((mix_log_probs([right, sure], v).argmax(-1) == labels).all())]
    assert perfect and min(perfect) > 0.84 and w in perfect
    assert loss(mix_log_probs([right, sure], w), labels) == min(
        loss(mix_log_probs([right, sure], v), labels) for v in perfect)
    torch.testing.assert_close(mix_log_probs([right, sure], w).exp().sum(-1), torch.ones(4))
