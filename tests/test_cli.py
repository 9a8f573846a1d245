"""End-to-end command-line tests on small data made here."""

import json
import random
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import LM_CLASSIC
from rnnkit.cli import main
from rnnkit.data.tokenizers import get_tokenizer

TINY = ["--embedding-dim", "16", "--hidden-size", "16", "--epochs", "3", "--batch-size", "16",
        "--lr", "0.01", "--min-freq", "1"]


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_classifier_train_evaluate_predict(tmp_path, tsv_data, capsys):
    run = tmp_path / "run"
    code, out, err = cli(capsys, "train", "--preset", "lstm-classifier", "--train", tsv_data["train"],
                         "--valid", tsv_data["dev"], "--test", tsv_data["test"],
                         "--text-field", "sentence", "--label-field", "label", "--out", run, *TINY)
    assert code == 0, err
    for name in ("config.json", "vocab.json", "labels.json", "model.safetensors", "trainer.pt",
                 "metrics.jsonl", "results.json", "curve.png"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3

    code, out, err = cli(capsys, "evaluate", run, "--split", "test", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["accuracy"] >= 0.9  # the synthetic task is easy
    assert metrics["labels"] == ["neg", "pos"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 100

    code, out, err = cli(capsys, "predict", run, "a wonderful superb film", "boring awful waste")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("pos\t") and lines[1].startswith("neg\t")

    (tmp_path / "in.txt").write_text("loved it , brilliant\n\nterrible plot\n")
    code, out, err = cli(capsys, "predict", run, "--file", tmp_path / "in.txt", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["label"] for r in rows] == ["pos", "neg"]
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5


def test_predict_reads_stdin(tmp_path, tsv_data):
    run = tmp_path / "run"
    assert main(["train", "--train", str(tsv_data["train"]), "--text-field", "sentence",
                 "--out", str(run), *TINY, "--epochs", "1"]) == 0
    proc = subprocess.run([sys.executable, "-m", "rnnkit", "predict", str(run), "--json"],
                          input="great fun\nawful\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2


@pytest.mark.parametrize("extra", [["--ngram-order", "0"],
                                   ["--ngram-order", "2", "--ngram-buckets", "4096"]])
def test_resume_is_exact(tmp_path, tsv_data, capsys, extra):
    common = ["--train", tsv_data["train"], "--valid", tsv_data["dev"], "--text-field",
              "sentence", *TINY, "--epochs", "2", "--dropout", "0.3", *extra]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(capsys, "train", "--out", straight, *common)[0] == 0
    assert cli(capsys, "train", "--out", split, *common, "--max-steps", "30")[0] == 0
    assert not json.loads((split / "results.json").read_text())["finished"]
    code, out, err = cli(capsys, "train", "--resume", split)
    assert code == 0, err
    a = torch.load(straight / "trainer.pt", weights_only=True)["model"]
    b = torch.load(split / "trainer.pt", weights_only=True)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert load_file(straight / "model.safetensors").keys() == load_file(
        split / "model.safetensors").keys()
    metrics = json.loads(cli(capsys, "evaluate", split, "--split", "valid", "--json")[1])
    assert metrics["accuracy"] >= 0.7  # two short epochs: this test is about exactness
    history = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    if "2" in extra:  # each branch's own accuracy is reported beside the combined one
        assert set(metrics["branch_accuracy"]) == {"encoder", "ngrams"}
        assert {"valid_encoder_accuracy", "valid_ngrams_accuracy"} <= set(history[-1])
        assert "encoder alone" in err
        # the encoder's weight in the mix is fitted at each validation and saved with the
        # best epoch's weights, which `evaluate` reads
        best = max(history, key=lambda r: r["valid_accuracy"])
        assert metrics["encoder_weight"] == best["encoder_weight"]
        assert "mix" in load_file(split / "model.safetensors")
        line = cli(capsys, "evaluate", split, "--split", "valid")[1].splitlines()[0]
        assert f"encoder weight {metrics['encoder_weight']:.2f}" in line
    else:
        assert "branch_accuracy" not in metrics and "valid_ngrams_accuracy" not in history[-1]
    out = cli(capsys, "predict", split, "superb brilliant film", "dull waste")[1]
    assert [line.split("\t")[0] for line in out.splitlines()] == ["pos", "neg"]


def test_lm_train_evaluate_generate_score(tmp_path, corpus_files, capsys):
    run = tmp_path / "lm"
    code, out, err = cli(capsys, "train", "--preset", "lm", *LM_CLASSIC,
                         "--train", corpus_files["train"],
                         "--valid", corpus_files["valid"], "--test", corpus_files["test"],
                         "--out", run, "--embedding-dim", "32", "--hidden-size", "32",
                         "--epochs", "20", "--num-steps", "10", "--batch-size", "8", "--lr", "5",
                         "--dropout", "0")
    assert code == 0, err
    code, out, err = cli(capsys, "evaluate", run, "--split", "test", "--json")
    metrics = json.loads(out)
    assert set(metrics) >= {"perplexity", "loss", "tokens"}
    assert metrics["perplexity"] < 6  # 12-word grammar: a uniform guess would score ~14
    args = ["generate", run, "--prompt", "the cat", "--max-tokens", "12", "--seed", "3", "--json"]
    first, second = cli(capsys, *args)[1], cli(capsys, *args)[1]
    assert first == second and len(json.loads(first)["tokens"]) == 12
    assert cli(capsys, *args[:-2], "4", "--json")[1] != first  # another seed, another text
    greedy = cli(capsys, "generate", run, "--prompt", "the cat", "--greedy", "--max-tokens", "3")
    assert greedy[1].split()[2:] == ["sat", "on", "the"]
    code, out, err = cli(capsys, "score", run, corpus_files["test"], "--json")
    assert code == 0 and json.loads(out)["tokens"] > 100


def test_lm_preset_reads_chinese_per_character_with_no_tokenizer_flag(tmp_path, capsys):
    rng = random.Random(2)
    words = ["很快", "好吃", "味道", "不错", "送餐", "太慢", "下次", "还会", "再来", "Good"]
    lines = ["，".join("".join(rng.sample(words, 3)) for _ in range(rng.randint(1, 3))) + "。"
             for _ in range(300)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = tmp_path / "lm"
    code, out, err = cli(capsys, "train", "--preset", "lm", *LM_CLASSIC, "--train", corpus,
                         "--out", run, "--embedding-dim", "16", "--hidden-size", "16",
                         "--max-steps", "3", "--batch-size", "4", "--num-steps", "10")
    assert code == 0, err
    assert "warning" not in err  # one token per character: no vocabulary of one-off lines
    tokens = json.loads((run / "vocab.json").read_text(encoding="utf-8"))["tokens"]
    assert "Good" in tokens and "好" in tokens and "。" in tokens
    assert all(len(t) == 1 for t in tokens if not t.isascii())
    code, out, err = cli(capsys, "generate", run, "--prompt", "味道", "--max-tokens", "5",
                         "--json")
    generated = json.loads(out)
    assert code == 0 and generated["text"].rstrip("\n") == "".join(
        t for t in generated["tokens"] if t != "<eos>")  # no spaces between characters
    code, out, err = cli(capsys, "score", run, corpus, "--json")
    spaced = get_tokenizer("spaced", lowercase=False)
    # every token after the first is scored: characters, words and one <eos> a line
    assert code == 0 and json.loads(out)["tokens"] == sum(len(spaced(t)) + 1 for t in lines) - 1


@pytest.mark.parametrize("args,match", [
    (["train", "--preset", "nope", "--out", "x"], "unknown preset 'nope'"),
    (["train", "--dataset", "mnist", "--out", "{tmp}/x"], "unknown dataset 'mnist'"),
    (["train", "--train", "{tmp}/missing.tsv", "--out", "{tmp}/x"], "missing.tsv: no such file"),
    (["train", "--train", "{tmp}/train.tsv", "--out", "{tmp}/x"], "no column 'text'"),
    (["train", "--train", "{tmp}/train.tsv", "--dropout", "1.5", "--out", "{tmp}/x"],
     "dropout must be in"),
    (["train", "--train", "{tmp}/train.tsv", "--device", "gpu", "--out", "{tmp}/x"],
     "device must be auto, cpu, cuda or cuda:N"),
    pytest.param(["train", "--train", "{tmp}/train.tsv", "--text-field", "sentence",
                  "--device", "cuda", "--out", "{tmp}/x"], "sees no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
    (["evaluate", "{tmp}"], "not an rnnkit run directory"),
    (["evaluate", "{tmp}", "--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    (["predict", "{tmp}/nowhere", "hi"], "no such run directory"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, tsv_data, capsys, monkeypatch, args,
                                           match):
    folder = tsv_data["train"].parent
    monkeypatch.chdir(folder)  # a relative --out lands here
    before = set(folder.iterdir())
    code, out, err = cli(capsys, *[a.format(tmp=folder) for a in args])
    assert code == 2
    assert match in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert set(folder.iterdir()) == before  # nothing written, not even an empty folder


def test_wrong_task_and_bad_generation_settings(tmp_path, tsv_data, corpus_files, capsys):
    clf, lm = tmp_path / "clf", tmp_path / "lm"
    assert cli(capsys, "train", "--train", tsv_data["train"], "--text-field", "sentence",
               "--out", clf, *TINY, "--epochs", "1")[0] == 0
    assert cli(capsys, "train", "--preset", "lm", *LM_CLASSIC,
               "--train", corpus_files["train"], "--out", lm,
               "--embedding-dim", "8", "--hidden-size", "8", "--epochs", "1")[0] == 0
    for args, match in (
        (["generate", clf, "--prompt", "hi"], "generate and score need a language model"),
        (["predict", lm, "hi"], "predict needs a classifier"),
        (["generate", lm, "--prompt", "zebra quokka"], "no word of the prompt"),
        (["generate", lm, "--prompt", "the", "--max-tokens", "0"], "max_tokens must be"),
        (["generate", lm, "--prompt", "the", "--temperature", "-1"], "temperature must not"),
        (["score", lm, tmp_path / "absent.txt"], "no such file"),
        (["train", "--out", clf, "--train", tsv_data["train"]], "a run already exists"),
    ):
        code, _, err = cli(capsys, *args)
        assert code == 2 and match in err, (args, err)
    (clf / "model.safetensors").write_bytes(b"garbage")
    code, _, err = cli(capsys, "predict", clf, "hi")
    assert code == 2 and "checksum mismatch" in err
    (clf / "config.json").write_text("{not json")
    code, _, err = cli(capsys, "predict", clf, "hi")
    assert code == 2 and "corrupted" in err


def test_unknown_label_in_test_split(tmp_path, tsv_data, capsys):
    bad = tmp_path / "test.tsv"
    bad.write_text("sentence\tlabel\ngood\tpos\nmeh\tneutral\n")
    code, _, err = cli(capsys, "train", "--train", tsv_data["train"], "--test", bad,
                       "--text-field", "sentence", "--out", tmp_path / "r", *TINY)
    assert code == 2 and "'neutral'" in err and "not seen in training" in err
    assert not (tmp_path / "r").exists()


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rnnkit", "evaluate", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("rnnkit: error:")


def test_lm_resume_is_exact_with_carried_state(tmp_path, corpus_files, capsys):
    common = ["--preset", "lm", *LM_CLASSIC, "--train", corpus_files["train"], "--valid",
              corpus_files["valid"], "--embedding-dim", "16", "--hidden-size", "16",
              "--epochs", "2", "--num-steps", "5", "--batch-size", "4", "--lr", "5"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(capsys, "train", "--out", straight, *common)[0] == 0
    assert cli(capsys, "train", "--out", split, *common, "--max-steps", "17")[0] == 0
    saved = torch.load(split / "trainer.pt", weights_only=True)
    assert saved["state"] is not None  # the LM state at the stop is kept for the resume
    assert cli(capsys, "train", "--resume", split)[0] == 0
    a = torch.load(straight / "trainer.pt", weights_only=True)["model"]
    b = torch.load(split / "trainer.pt", weights_only=True)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_non_finite_loss_stops_with_the_step(tmp_path, corpus_files, capsys):
    # 1e38: the weights overflow float32 after one step. (At 1e30 the loss is finite but huge
    # once the gates saturate; only oneDNN's LSTM turned saturated gates into NaN.)
    code, _, err = cli(capsys, "train", "--preset", "lm", *LM_CLASSIC, "--train",
                       corpus_files["train"],
                       "--out", tmp_path / "nan", "--embedding-dim", "8", "--hidden-size", "8",
                       "--lr", "1e38", "--clip", "0", "--epochs", "1")
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the progress lines on standard error
    assert last.startswith("rnnkit: error: non-finite loss at epoch 1, step")
    assert "nothing was kept" in last
    assert not (tmp_path / "nan").exists()  # the same --out can be used again
    assert not list(tmp_path.glob(".nan.*"))  # nor a staging folder


def test_report_option_picks_the_final_evaluation(tmp_path, corpus_files, capsys):
    common = ["--preset", "lm", *LM_CLASSIC,
              "--train", corpus_files["train"], "--valid", corpus_files["valid"],
              "--embedding-dim", "8", "--hidden-size", "8", "--epochs", "1"]
    assert cli(capsys, "train", "--out", tmp_path / "none", *common, "--report", "none")[0] == 0
    results = json.loads((tmp_path / "none" / "results.json").read_text())
    assert "valid" not in results and "test" not in results
    assert cli(capsys, "train", "--out", tmp_path / "valid", *common, "--report", "valid")[0] == 0
    assert "perplexity" in json.loads((tmp_path / "valid" / "results.json").read_text())["valid"]
    code, _, err = cli(capsys, "train", "--out", tmp_path / "bad", *common, "--report", "tests")
    assert code == 2 and "--report" in err and not (tmp_path / "bad").exists()


def test_empty_corpus_files_exit_2(tmp_path, corpus_files, capsys):
    empty, blank = tmp_path / "empty.txt", tmp_path / "blank.txt"
    empty.write_text("")
    blank.write_text("\n  \n\n")
    for path in (empty, blank):
        code, _, err = cli(capsys, "train", "--preset", "lm", *LM_CLASSIC, "--train", path,
                           "--out", tmp_path / "lm")
        assert code == 2 and f"{path}: the corpus is empty" in err
        assert not (tmp_path / "lm").exists()
    lm = tmp_path / "good"
    assert cli(capsys, "train", "--preset", "lm", *LM_CLASSIC,
               "--train", corpus_files["train"], "--out", lm,
               "--embedding-dim", "8", "--hidden-size", "8", "--epochs", "1")[0] == 0
    code, _, err = cli(capsys, "score", lm, empty)
    assert code == 2 and "needs at least two tokens" in err


def test_a_flag_given_as_none_clears_the_presets_value():
    # as a run's model card writes it: `--extra-train none` reads no extra text
    from rnnkit.cli import build_parser, config_overrides
    from rnnkit.config import preset

    parse = build_parser().parse_args
    args = parse(["train", "--preset", "imdb-lm", "--extra-train", "none", "--out", "x"])
    assert config_overrides(args) == {"extra_train": None}
    assert preset("imdb-lm").override(**config_overrides(args)).data.extra_train is None
    args = parse(["train", "--preset", "imdb-lm", "--out", "x"])  # not given: the preset's
    assert config_overrides(args) == {}
