"""--init-from: a language model's weights start a classifier or another language model."""

import json

import pytest
import torch

from rnnkit.config import preset
from rnnkit.errors import UsageError
from rnnkit.models.lm import LanguageModel
from rnnkit.runner import build_model
from rnnkit.transfer import inherit_settings, initialize, map_rows, read_source
from rnnkit.data.vocab import EOS, PAD, UNK, Vocab


def test_rows_are_mapped_by_token():
    source = Vocab([UNK, EOS, "cat", "dog"], [UNK, EOS])
    target = Vocab([PAD, UNK, "dog", "bird", "cat"], [PAD, UNK])
    table = torch.tensor([[1.0, 1], [2, 2], [3, 3], [6, 6]])
    out = map_rows(table, source, target)
    assert out[0].tolist() == [0, 0]  # <pad>: zero
    assert out[1].tolist() == [1, 1]  # <unk> lines up with <unk>
    assert out[2].tolist() == [6, 6] and out[4].tolist() == [3, 3]  # shared words copied
    assert out[3].tolist() == [3, 3]  # a new word: the mean row of the source


def test_sources_are_checked(tiny_runs, tmp_path):
    with pytest.raises(UsageError, match="no such run directory"):
        read_source(tmp_path / "nope", "classify")
    with pytest.raises(UsageError, match="is a classify run"):
        read_source(tiny_runs["clf"], "classify")
    source = read_source(tiny_runs["lm"], "classify")
    assert len(source.sha256) == 64 and source.record()["path"].endswith("lm")


def test_a_changed_vocabulary_file_is_refused(tiny_runs, tmp_path):
    import shutil

    copy = tmp_path / "lm"
    shutil.copytree(tiny_runs["lm"], copy)
    raw = json.loads((copy / "vocab.json").read_text())
    raw["tokens"][5], raw["tokens"][6] = raw["tokens"][6], raw["tokens"][5]
    (copy / "vocab.json").write_text(json.dumps(raw))
    with pytest.raises(UsageError, match="vocab.json: checksum mismatch"):
        read_source(copy, "classify")


def test_settings_are_taken_over_and_conflicts_named(tiny_runs):
    source = read_source(tiny_runs["lm"], "classify")
    cfg = preset("lstm-classifier")  # bidirectional 128: the source is a 16-unit LM
    taken = inherit_settings(cfg, source, explicit=set())
    assert taken.model.hidden_size == source.cfg.model.hidden_size
    assert not taken.model.bidirectional
    # Settings still at their preset's values fine-tune ULMFiT's way; chosen ones stay.
    assert (taken.model.pooling, taken.train.schedule, taken.train.layer_lr_decay,
            taken.train.gradual_unfreeze) == ("concat", "slanted", 2.6, True)
    mine = inherit_settings(cfg.override(pooling="mean", schedule="cosine"), source, set())
    assert (mine.model.pooling, mine.train.schedule) == ("mean", "cosine")
    assert inherit_settings(cfg, source, {"gradual_unfreeze"}).train.gradual_unfreeze is False
    with pytest.raises(UsageError, match="--hidden-size 128 conflicts with --init-from"):
        inherit_settings(cfg, source, explicit={"hidden_size"})


def test_classifier_starts_from_the_language_model(tiny_runs):
    source = read_source(tiny_runs["lm"], "classify")
    cfg = inherit_settings(preset("lstm-classifier"), source, set())
    vocab = Vocab([PAD, UNK, "the", "cat", "zebra"], [PAD, UNK])
    model = build_model(cfg, vocab, 2)
    head = model.head.weight.clone()
    coverage = initialize(model, source, vocab)
    assert coverage.shared == 3 and coverage.total == 5  # <unk>, the, cat
    emb = model.encoder.embedding.weight
    lm_emb = source.weights["encoder.embedding.weight"]
    assert torch.equal(emb[3], lm_emb[source.vocab.stoi["cat"]])
    assert torch.equal(emb[4], lm_emb.mean(0)) and emb[0].abs().sum() == 0
    for name, value in source.weights.items():
        if name.startswith("encoder.rnn."):
            assert torch.equal(model.state_dict()[name], value), name
    assert torch.equal(model.head.weight, head)  # the head starts fresh


def test_language_model_fine_tunes_on_a_new_vocabulary(tiny_runs):
    source = read_source(tiny_runs["lm"], "lm")
    cfg = inherit_settings(preset("lm"), source, set())
    vocab = Vocab([UNK, EOS, "the", "park", "quokka"], [UNK, EOS])
    model = build_model(cfg, vocab)
    assert isinstance(model, LanguageModel)
    initialize(model, source, vocab)
    bias, mine = source.weights["decoder.bias"], model.decoder.bias.detach()
    assert mine[2] == bias[source.vocab.stoi["the"]]
    assert float(mine[4]) == pytest.approx(float(bias.mean()))
    # tied: the output layer's rows are the (mapped) embedding rows
    assert model.decoder.weight is model.encoder.embedding.weight


def test_train_init_from_on_the_command_line(tiny_runs, tsv_data, tmp_path, capsys):
    from rnnkit.cli import main

    data = ["--train", str(tsv_data["train"]), "--valid", str(tsv_data["dev"]), "--text-field",
            "sentence", "--epochs", "1", "--report", "valid"]
    run = tmp_path / "clf"
    assert main(["train", *data, "--init-from", str(tiny_runs["lm"]), "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "init-from: " in err and "take the source's rows" in err
    meta = json.loads((run / "config.json").read_text())
    lm_meta = json.loads((tiny_runs["lm"] / "config.json").read_text())
    assert meta["init_from"]["sha256"] == read_source(tiny_runs["lm"], "classify").sha256
    assert meta["config"]["model"]["hidden_size"] == lm_meta["config"]["model"]["hidden_size"]
    # The classifier reads with its own words, then the language model's other words (with
    # their pretrained rows); --source-vocab false keeps to the training split's words.
    lm_vocab = json.loads((tiny_runs["lm"] / "vocab.json").read_text())
    lm_words = [t for t in lm_vocab["tokens"] if t not in lm_vocab["specials"]]
    tokens = json.loads((run / "vocab.json").read_text())["tokens"]
    own = tmp_path / "own"
    assert main(["train", *data, "--init-from", str(tiny_runs["lm"]), "--source-vocab", "false",
                 "--out", str(own)]) == 0
    own_tokens = json.loads((own / "vocab.json").read_text())["tokens"]
    added = [t for t in lm_words if t not in own_tokens]
    assert added and tokens == own_tokens + added
    capsys.readouterr()
    for args, match in (
        (["--init-from", str(tiny_runs["clf"])], "is a classify run"),
        (["--init-from", str(tmp_path / "none")], "no such run directory"),
        (["--init-from", str(tiny_runs["lm"]), "--hidden-size", "64"], "conflicts with"),
    ):
        out = tmp_path / "bad"
        assert main(["train", *data, *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
