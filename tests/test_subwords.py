"""SentencePiece subword vocabularies: learned from the training split only, carried in the
run, used identically by every command, no unknown tokens, perplexity per word as well."""

import contextlib
import io
import json
import math
from collections import Counter

import pytest

pytest.importorskip("sentencepiece")  # a dev dependency: installed wherever tests run

from rnnkit import api
from rnnkit.data import splits as data_module
from rnnkit.data.tokenizers import sentencepiece as subwords
from rnnkit.config import preset
from rnnkit.errors import UsageError
from rnnkit.cli import main
from rnnkit.generate import LanguageModelRunner
from rnnkit.predict import Predictor
from rnnkit.rundir import RunDir
from rnnkit.data.vocab import PAD, UNK, Vocab
from conftest import make_reviews

QUIET = dict(log=lambda *a, **k: None)
SMALL = dict(embedding_dim=16, hidden_size=16, batch_size=16, lr=0.01, epochs=2,
             tokenizer="sentencepiece", vocab_size=300)


def _files(tmp_path):
    rows = make_reviews(600)
    for name, part in (("train", rows[:400]), ("test", rows[400:])):
        (tmp_path / f"{name}.tsv").write_text(
            "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))
    return rows


def test_a_subword_classifier_learns_its_pieces_from_the_training_split_only(tmp_path,
                                                                            monkeypatch):
    rows = _files(tmp_path)
    seen = []
    real = subwords.train

    def spy(texts, *args):
        texts = list(texts)
        seen.extend(texts)
        return real(texts, *args)

    monkeypatch.setattr(subwords, "train", spy)
    cfg = preset("lstm-classifier").override(train=str(tmp_path / "train.tsv"),
                                             test=str(tmp_path / "test.tsv"), **SMALL)
    results = api.train_run(cfg, tmp_path / "run", **QUIET)
    train_texts = {t for t, _ in rows[:400]}
    # 10% of train is carved for validation: the model saw the other 360 texts, no test text.
    assert len(seen) == 360 and set(seen) <= train_texts
    vocab = RunDir(tmp_path / "run").vocab()
    assert len(vocab) == 300 and vocab.subword_model is not None
    assert vocab.itos[:2] == ["<pad>", "<unk>"]
    # The pieces by falling frequency in the training texts (an adaptive softmax's head is
    # the first ids); the byte pieces, unused by this text, are among the closing unused ones.
    tokenize = subwords.tokenizer(vocab.subword_model)
    counts = Counter(piece for text in seen for piece in tokenize(text.lower()))
    frequencies = [counts[p] for p in vocab.itos[2:]]
    assert frequencies == sorted(frequencies, reverse=True) and frequencies[0] > 100
    unused = vocab.itos[2 + frequencies.index(0):]
    assert {f"<0x{b:02X}>" for b in range(256)} <= set(unused)
    # Every command tokenizes with the run's own model: evaluate equals the training report.
    again = api.evaluate_run(tmp_path / "run", "test", **QUIET)
    assert again["accuracy"] == results["test"]["accuracy"]
    predictor = Predictor.load(tmp_path / "run")
    ids = data_module.encode_texts(["家具 très bien ✓"], predictor.cfg.data, vocab)[0]
    assert vocab.unk_id not in ids.tolist()  # unseen characters become their bytes
    assert len(predictor.predict(["good film"])) == 1


def test_a_subword_language_model_reports_perplexity_per_token_and_per_word(tmp_path):
    lines = [" ".join(t.split()[:12]) for t, _ in make_reviews(800)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    cfg = preset("lm").override(train=str(tmp_path / "corpus.txt"), num_steps=10,
                                **{**SMALL, "batch_size": 8, "lr": 5.0, "dropout": 0.0})
    results = api.train_run(cfg, tmp_path / "lm", **QUIET)
    valid = results["valid"]
    words = sum(len(line.split()) + 1 for line in lines[-80:])  # the carved closing 10%
    assert valid["words"] == words
    expected = math.exp(valid["loss"] * valid["tokens"] / (words - 1))
    assert valid["word_perplexity"] == pytest.approx(expected)
    assert valid["tokens"] > words  # pieces outnumber words: per word is the larger figure
    runner = LanguageModelRunner.load(tmp_path / "lm")
    scored = runner.score(lines[-80:])
    assert scored["unknown_tokens"] == 0
    assert scored["word_perplexity"] == pytest.approx(valid["word_perplexity"], rel=1e-4)
    out = io.StringIO()  # `rnnkit evaluate` prints the per-word figure too
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["evaluate", str(tmp_path / "lm"), "--split", "valid"]) == 0
    assert f"per word {valid['word_perplexity']:.2f} over {words:,} words" in out.getvalue()


def test_subword_settings_errors_are_one_line_and_leave_nothing(tmp_path):
    _files(tmp_path)
    base = preset("lstm-classifier").override(train=str(tmp_path / "train.tsv"),
                                              **{**SMALL, "vocab_size": 50000})
    with pytest.raises(UsageError, match=r"--vocab-size 50000 is more than the training text "
                                         r"allows \(at most \d+ entries here\)"):
        api.train_run(base, tmp_path / "big", **QUIET)
    assert not (tmp_path / "big").exists()
    with pytest.raises(UsageError, match="too small for sentencepiece"):
        api.train_run(base.override(vocab_size=100), tmp_path / "small", **QUIET)


def test_a_classifier_started_from_a_subword_lm_uses_its_pieces(tmp_path):
    rows = _files(tmp_path)
    (tmp_path / "corpus.txt").write_text("\n".join(t for t, _ in rows[:400]) + "\n")
    lm_cfg = preset("lm").override(train=str(tmp_path / "corpus.txt"), num_steps=10,
                                   **{**SMALL, "batch_size": 8, "epochs": 1})
    api.train_run(lm_cfg, tmp_path / "lm", **QUIET)
    cfg = preset("lstm-classifier").override(
        train=str(tmp_path / "train.tsv"), init_from=str(tmp_path / "lm"), tokenizer="basic",
        **{k: v for k, v in SMALL.items() if k not in ("embedding_dim", "hidden_size",
                                                       "tokenizer")})
    api.train_run(cfg, tmp_path / "clf", explicit=(), **QUIET)
    clf, lm = RunDir(tmp_path / "clf"), RunDir(tmp_path / "lm")
    assert clf.config().data.tokenizer == "sentencepiece"
    assert clf.vocab().subword_model == lm.vocab().subword_model
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["init_from"]["sha256"]


def test_the_corpus_unknown_marker_stays_one_token(tmp_path):
    """PTB and WikiText write unknown words as the text <unk>: a model keeps it as rnnkit's
    <unk> (one token, as the word-level model reads it) and learns no pieces of it; models of
    0.4.0 (whose own unknown piece is named <unk>) still read it as the pieces they learned."""
    lines = [" ".join(t.split()[:12]) for t, _ in make_reviews(400)]
    marked = [line.replace(" the ", " <unk> ") for line in lines]
    assert sum(line.count("<unk>") for line in marked) > 100
    model = subwords.train(marked, 300, "unigram")
    assert subwords.keeps_unk(model)
    assert not {"<", "unk", ">", "\u2581<"} & set(subwords.pieces(model))
    split = subwords.tokenizer(model)
    tokens = split("a <unk> film<unk> <unk>")
    assert tokens.count("<unk>") == 3 and "<" not in "".join(tokens).replace("<unk>", "")
    assert subwords.detokenize(tokens).split() == ["a", "<unk>", "film", "<unk>", "<unk>"]
    assert split("a film") == subwords.processor(model).EncodeAsPieces("a film")
    vocab = Vocab.from_subwords(model, [PAD, UNK])
    assert vocab.encode(tokens).count(vocab.unk_id) == 3
    assert len(vocab) == 300 + 1  # the model's unknown piece is our <unk>: <pad> more
    spm = pytest.importorskip("sentencepiece")
    old = io.BytesIO()  # as rnnkit 0.4.0 trained them
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(marked), model_writer=old, vocab_size=300, byte_fallback=True,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=2)
    old = old.getvalue()
    assert not subwords.keeps_unk(old)
    assert "<unk>" not in subwords.tokenizer(old)("a <unk> film")
    assert Vocab.from_subwords(old, [PAD, UNK]).itos[:2] == [PAD, UNK]
