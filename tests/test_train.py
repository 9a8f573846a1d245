"""The training loop: schedules, early stopping, the time budget, exact resume (after a graceful
stop, Ctrl-C and kill -9), what a resume may change, and the run directory's bookkeeping."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import LM_CLASSIC, lm_cfg, write_review_tsvs
from rnnkit import api
from rnnkit.cli import main
from rnnkit.config import preset
from rnnkit.errors import UsageError
from rnnkit.rundir import RunDir
from rnnkit.train import cosine_lr, epoch_lr

QUIET = dict(log=lambda *a, **k: None)


@pytest.fixture
def clf_files(tmp_path) -> dict[str, Path]:
    return write_review_tsvs(tmp_path)


def classifier_cfg(files, **settings):
    return preset("lstm-classifier").override(**{**dict(
        train=str(files["train"]), valid=str(files["dev"]), embedding_dim=8, hidden_size=8,
        batch_size=16, lr=0.02, min_freq=1, epochs=3, dropout=0.3, ngram_order=0), **settings})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return RunDir(run).load_trainer()["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def history(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    return rows


# --- schedules ------------------------------------------------------------------------------


def test_schedule_rates():
    cfg = preset("ptb-small")  # lr 1, full rate for 4 epochs, then halved each epoch
    assert [epoch_lr(cfg, e, 0.0) for e in range(6)] == [1, 1, 1, 1, 0.5, 0.25]
    plateau = preset("lm").override(schedule="plateau")
    assert epoch_lr(plateau, 3, 0.0) == plateau.train.lr and epoch_lr(plateau, 3, 1.25) == 1.25
    cos = preset("imdb-best")
    assert cosine_lr(cos, 0, 100) == cos.train.lr
    assert math.isclose(cosine_lr(cos, 50, 100), cos.train.lr / 2)
    assert cosine_lr(cos, 100, 100) == 0 and cosine_lr(cos, 150, 100) == 0


def test_the_schedule_reaches_the_optimizer(clf_files):
    """The rate logged per epoch is the one the optimizer used (step decay, halving)."""
    cfg = classifier_cfg(clf_files, schedule="step", lr_decay=0.5, decay_start=1)
    run = clf_files["train"].parent / "step"
    api.train_run(cfg, run, report=(), **QUIET)
    assert [r["lr"] for r in history(run)] == [0.02, 0.01, 0.005]
    groups = RunDir(run).load_trainer()["optimizer"]["main"]["param_groups"]
    assert groups[0]["lr"] == 0.005


def test_early_stopping_and_plateau_decay(clf_files):
    # A rate this high cannot keep improving on validation: patience 1 stops the run early.
    cfg = classifier_cfg(clf_files, lr=0.5, epochs=30, patience=1, schedule="plateau",
                         lr_decay=0.5)
    run = clf_files["train"].parent / "early"
    results = api.train_run(cfg, run, report=("valid",), **QUIET)
    rows = history(run)
    assert results["finished"] and len(rows) < 30
    best = None
    for i, row in enumerate(rows):
        improved = best is None or row["valid_accuracy"] > best
        best = row["valid_accuracy"] if improved else best
        if i + 1 < len(rows):  # after an epoch without improvement: half the rate
            assert rows[i + 1]["lr"] == (row["lr"] if improved else row["lr"] / 2)
    assert not improved  # the last epoch is the one that used up the patience


def test_time_budget_stops_resumably(clf_files):
    cfg = classifier_cfg(clf_files, max_minutes=1e-6)  # spent after the first batch
    run = clf_files["train"].parent / "budget"
    results = api.train_run(cfg, run, report=(), **QUIET)
    saved = RunDir(run).load_trainer()["progress"]
    assert not results["finished"] and saved["step"] == 1 and saved["epoch"] == 0
    straight = clf_files["train"].parent / "straight"
    api.train_run(classifier_cfg(clf_files), straight, report=(), **QUIET)
    api.train_run(RunDir(run).config().override(max_minutes=0.0), run, resume=True,
                  report=(), **QUIET)
    assert_same_weights(straight, run)
    assert history(straight) == history(run)


@pytest.mark.parametrize("task", ["classify", "lm"])
def test_time_budget_ends_an_annealed_schedule_with_a_validation(clf_files, lm_file, task):
    """Cosine and slanted rates anneal over --max-minutes: when it is spent the schedule has
    ended, so the part of the epoch that ran is validated (its weights kept if best) and the
    run is finished; a resume has nothing to do until the budget grows."""
    make = (lambda **k: classifier_cfg(clf_files, **k)) if task == "classify" else (
        lambda **k: lm_cfg(lm_file, **k))
    cfg = make(schedule="cosine" if task == "lm" else "slanted", max_minutes=1e-6)
    run = lm_file.parent / f"annealed-{task}"
    lines: list[str] = []
    results = api.train_run(cfg, run, report=("valid",), log=lambda *a, **k: lines.append(
        " ".join(map(str, a))))
    rows = history(run)
    assert results["finished"] and len(rows) == 1
    saved = RunDir(run).load_trainer()["progress"]
    assert saved["step"] == 1 and saved["finished"]
    assert 0 < rows[0]["partial"] < 1
    assert any(line.startswith("epoch 1 (") and "of it): train loss" in line for line in lines)
    assert (run / "model.safetensors").exists() and (run / "results.json").exists()
    lines.clear()
    api.train_run(RunDir(run).config(), run, resume=True, report=(),
                  log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert any("nothing to resume" in line for line in lines)
    assert RunDir(run).load_trainer()["progress"]["step"] == 1
    # a larger budget continues it (a new epoch from the rate the budget now gives)
    api.train_run(RunDir(run).config().override(max_minutes=0.0), run, resume=True,
                  report=(), **QUIET)
    assert len(history(run)) == 3 and "partial" not in history(run)[-1]


# --- exact resume ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classify", "lm"])
@pytest.mark.parametrize("schedule", ["none", "step", "plateau", "cosine"])
def test_resume_is_exact_with_every_schedule(clf_files, lm_file, task, schedule):
    settings = dict(schedule=schedule, lr_decay=0.5, decay_start=1)
    make = (lambda **k: classifier_cfg(clf_files, **k)) if task == "classify" else (
        lambda **k: lm_cfg(lm_file, **k))
    cfg = make(**settings)
    root = lm_file.parent / f"{task}-{schedule}"
    straight, split = root / "straight", root / "split"
    api.train_run(cfg, straight, report=(), **QUIET)
    steps_per_epoch = RunDir(straight).load_trainer()["progress"]["step"] // 3
    api.train_run(cfg, split, max_steps=steps_per_epoch + 3, report=(), **QUIET)  # in epoch 2
    api.train_run(cfg, split, resume=True, report=(), **QUIET)
    assert_same_weights(straight, split)
    # the interrupted epoch's training loss covers all of its batches, not the resumed part
    assert history(straight) == history(split)


def _start(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", RNNKIT_NO_TCMALLOC="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "rnnkit", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop_in_epoch(args: list[str], epoch: int, sig: int) -> str:
    """Start a training, send `sig` once it logs a batch of `epoch`, return its stderr."""
    proc = _start(args + ["--log-every", "1"])
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(f"epoch {epoch} "):
            proc.send_signal(sig)
            break
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode in (0, -signal.SIGKILL), "".join(lines) + rest
    return "".join(lines) + rest


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
@pytest.mark.parametrize("task", ["classify", "lm"])
def test_resume_after_kill_or_ctrl_c_is_exact(clf_files, lm_file, tmp_path, task, sig):
    if task == "classify":
        cfg = classifier_cfg(clf_files, schedule="cosine", epochs=4)
        data = ["--train", clf_files["train"], "--valid", clf_files["dev"], "--ngram-order", "0",
                "--embedding-dim",
                "8", "--hidden-size", "8", "--batch-size", "16", "--lr", "0.02", "--min-freq",
                "1", "--epochs", "4", "--dropout", "0.3", "--schedule", "cosine"]
    else:
        cfg = lm_cfg(lm_file, schedule="step", lr_decay=0.5, decay_start=1, epochs=4)
        data = ["--preset", "lm", *LM_CLASSIC,
                "--train", lm_file, "--embedding-dim", "8", "--hidden-size",
                "8", "--batch-size", "4", "--num-steps", "6", "--epochs", "4", "--dropout",
                "0.3", "--lr", "5", "--schedule", "step", "--lr-decay", "0.5",
                "--decay-start", "1"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    api.train_run(cfg, straight, report=(), **QUIET)
    log = _stop_in_epoch(["train", "--out", stopped, "--report", "none", *data], 2, sig)
    before = RunDir(stopped).load_trainer()["progress"]
    assert not before["finished"], log  # stopped before the end
    if sig == signal.SIGINT:
        assert before["batch"] > 0  # a graceful stop checkpoints inside the epoch
    code = main(["train", "--resume", str(stopped), "--report", "none"])
    assert code == 0
    assert_same_weights(straight, stopped)
    assert history(straight) == history(stopped)
    assert not list(stopped.glob(".*.tmp"))


@pytest.mark.parametrize("task", ["classify", "lm"])
def test_a_kill_inside_an_epoch_loses_only_the_steps_since_a_checkpoint(clf_files, lm_file,
                                                                       tmp_path, task):
    """--checkpoint-every 2: a kill -9 in epoch 2 resumes from the last checkpoint inside
    that epoch, and the result equals an uninterrupted run's."""
    if task == "classify":
        cfg = classifier_cfg(clf_files, epochs=3)
        data = ["--train", clf_files["train"], "--valid", clf_files["dev"], "--ngram-order", "0",
                "--embedding-dim",
                "8", "--hidden-size", "8", "--batch-size", "16", "--lr", "0.02", "--min-freq",
                "1", "--epochs", "3", "--dropout", "0.3"]
    else:
        cfg = lm_cfg(lm_file, epochs=3)
        data = ["--preset", "lm", *LM_CLASSIC,
                "--train", lm_file, "--embedding-dim", "8", "--hidden-size",
                "8", "--batch-size", "4", "--num-steps", "6", "--epochs", "3", "--dropout",
                "0.3", "--lr", "5"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    api.train_run(cfg, straight, report=(), **QUIET)
    per_epoch = RunDir(straight).load_trainer()["progress"]["step"] // 3
    proc = _start(["train", "--out", killed, "--report", "none", "--log-every", "1",
                   "--checkpoint-every", "2", *data])
    for line in proc.stderr:
        if line.startswith("epoch 2 6/"):  # batch 5 done and any checkpoint after it
            proc.kill()
            break
    proc.communicate(timeout=120)
    saved = RunDir(killed).load_trainer()["progress"]
    assert saved["epoch"] == 1 and saved["batch"] >= 4 and saved["step"] % 2 == 0
    assert saved["step"] >= per_epoch + 4
    assert main(["train", "--resume", str(killed), "--report", "none"]) == 0
    assert_same_weights(straight, killed)
    assert history(straight) == history(killed)


def test_killed_before_the_first_epoch_ends_is_resumable(clf_files, tmp_path):
    run = tmp_path / "early-kill"
    args = ["train", "--out", run, "--report", "none", "--train", clf_files["train"],
            "--valid", clf_files["dev"], "--embedding-dim", "8", "--hidden-size", "8",
            "--batch-size", "16", "--lr", "0.02", "--min-freq", "1", "--epochs", "2"]
    _stop_in_epoch(args, 1, signal.SIGKILL)
    assert (run / "trainer.pt").is_file() and (run / "config.json").is_file()
    assert main(["train", "--resume", str(run), "--report", "none"]) == 0
    assert RunDir(run).load_trainer()["progress"]["finished"]


# --- what a resume may change ---------------------------------------------------------------


@pytest.fixture
def stopped_run(clf_files) -> Path:
    run = clf_files["train"].parent / "stopped"
    api.train_run(classifier_cfg(clf_files), run, max_steps=5, report=(), **QUIET)
    return run


@pytest.mark.parametrize("flag,value", [
    ("--batch-size", "64"), ("--seed", "2"), ("--bucket", "false"), ("--lr", "0.1"),
    ("--dropout", "0.1"), ("--schedule", "cosine"), ("--hidden-size", "16"),
    ("--max-len", "10"), ("--optimizer", "sgd"), ("--precision", "bf16"),
])
def test_resume_refuses_settings_that_change_the_result(stopped_run, capsys, flag, value):
    before = (stopped_run / "trainer.pt").read_bytes()
    code = main(["train", "--resume", str(stopped_run), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and f"--resume cannot change {flag}" in err
    assert len(err.strip().splitlines()) == 1
    assert (stopped_run / "trainer.pt").read_bytes() == before


def test_resume_accepts_stopping_settings(stopped_run, capsys):
    code = main(["train", "--resume", str(stopped_run), "--epochs", "1", "--patience", "5",
                 "--max-minutes", "30", "--threads", "1", "--report", "none"])
    assert code == 0, capsys.readouterr().err


def test_a_finished_run_is_extended_by_epochs(clf_files, tmp_path):
    two = tmp_path / "two"
    api.train_run(classifier_cfg(clf_files, epochs=2), two, report=(), **QUIET)
    one = tmp_path / "one"
    api.train_run(classifier_cfg(clf_files, epochs=1), one, report=(), **QUIET)
    assert RunDir(one).load_trainer()["progress"]["finished"]
    api.train_run(classifier_cfg(clf_files, epochs=2), one, resume=True, report=(), **QUIET)
    assert_same_weights(two, one)
    assert history(two) == history(one)
    logs = []
    api.train_run(classifier_cfg(clf_files, epochs=2), one, resume=True, report=(),
                  log=lambda *a, **k: logs.append(" ".join(map(str, a))))
    assert any("nothing to resume" in line for line in logs)


def test_bookkeeping_survives_a_kill_between_writes(stopped_run):
    """A metrics row written after the last checkpoint, and temporary files of a killed
    writer, are cleaned up by the resume."""
    run = RunDir(stopped_run)
    (stopped_run / "metrics.jsonl").write_text('{"epoch": 1, "stray": true}\n')
    (stopped_run / ".trainer.pt.x1y2.tmp").write_bytes(b"")
    (stopped_run / ".curve.png.x1y2.tmp").write_bytes(b"")
    api.train_run(run.config(), stopped_run, resume=True, report=(), **QUIET)
    rows = history(stopped_run)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all("stray" not in r for r in rows)
    assert not list(stopped_run.glob(".*.tmp"))


# --- run directories ------------------------------------------------------------------------


def test_out_that_is_not_a_run_is_never_overwritten(clf_files, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.safetensors").write_bytes(b"my own model")
    (mine / "metrics.jsonl").write_text("my metrics\n")
    (tmp_path / "afile").write_text("x")
    base = ["train", "--train", str(clf_files["train"]), "--epochs", "1"]
    for out, match in ((mine, "not empty and is not an rnnkit run"),
                       (tmp_path / "afile", "is a file"),
                       (tmp_path / "afile" / "sub", "is a file, not a folder")):
        code = main([*base, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert (mine / "model.safetensors").read_bytes() == b"my own model"
    assert (mine / "metrics.jsonl").read_text() == "my metrics\n"
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.jsonl", "model.safetensors"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, "--out", str(empty), "--embedding-dim", "8", "--hidden-size", "8",
                 "--report", "none"]) == 0
    assert (empty / "config.json").is_file()


def test_unwritable_home_is_one_line_before_data_loads(clf_files, tmp_path, capsys,
                                                       monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("RNNKIT_HOME", str(tmp_path / "afile" / "home"))
    code = main(["train", "--train", str(clf_files["train"]), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "RNNKIT_HOME" in err and "not writable" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args,match", [
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--dropout", "nan"], "--dropout must be a finite number"),
    (["--max-minutes", "nan"], "--max-minutes must be a finite number"),
    (["--weight-decay", "-1"], "--weight-decay must not be negative"),
    (["--sparse-lr", "-1"], "--sparse-lr must be positive"),
    (["--seed", "-1"], "--seed must be in"),
    (["--seed", str(2 ** 63 + 5)], "--seed must be in"),
    (["--num-layers", "1000000"], "--num-layers must be in"),
    (["--hidden-size", "1000000000000"], "--hidden-size must be in"),
    (["--embedding-dim", "100000"], "--embedding-dim must be in"),
    (["--ngram-order", "2", "--ngram-buckets", str(1 << 40)], "--ngram-buckets must be in"),
    (["--hidden-size", "60000", "--num-layers", "60"], "GiB to train"),
    (["--max-steps", "-5"], "--max-steps must be >= 0"),
    (["--log-every", "-1"], "--log-every must be >= 0"),
    (["--lr-decay", "0"], "--lr-decay must be in (0, 1]"),
    (["--embeddings", "{tmp}/no-vectors.txt"], "no-vectors.txt"),
])
def test_nonsense_settings_are_refused_before_work(clf_files, tmp_path, capsys, args, match):
    out = tmp_path / "run"
    started = time.monotonic()
    code = main(["train", "--train", str(clf_files["train"]), "--out", str(out),
                 *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and match in err, err
    assert err.strip().splitlines()[-1].startswith("rnnkit: error:")
    assert "Traceback" not in err and not out.exists()
    assert not list(tmp_path.glob(".run.*"))
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("args,match", [
    (["--cutoffs", "6000,2000", "--softmax", "adaptive", "--tie-weights", "false"],
     "--cutoffs must be increasing"),
    (["--cell", "jordan", "--num-layers", "2"], "--cell jordan has one layer"),
    (["--batch-size", "100000"], "--batch-size 100000 is too large for a training corpus"),
])
def test_language_model_settings_refused_before_writing(lm_file, tmp_path, capsys, args,
                                                         match):
    code = main(["train", "--preset", "lm", *LM_CLASSIC, "--train", str(lm_file), "--out",
                 str(tmp_path / "lm"), *args])
    err = capsys.readouterr().err
    assert code == 2 and match in err and "Traceback" not in err, err
    assert not (tmp_path / "lm").exists()


def test_json_output_is_the_only_thing_on_stdout(clf_files, lm_file, tmp_path):
    clf, lm = tmp_path / "clf", tmp_path / "lm"
    tiny = ["--embedding-dim", "8", "--hidden-size", "8", "--epochs", "1", "--log-every", "1"]
    trains = (["train", "--train", clf_files["train"], "--out", clf, "--min-freq", "1", *tiny,
               "--json"],
              ["train", "--preset", "lm", *LM_CLASSIC, "--train", lm_file, "--out", lm, *tiny,
               "--json"])
    reads = (["evaluate", clf, "--split", "valid", "--json"],
             ["generate", lm, "--prompt", "the", "--json"],
             ["score", lm, lm_file, "--json"])
    for group in (trains, reads):  # the commands of a group run side by side
        procs = [(args, _start(args)) for args in group]
        for args, proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert isinstance(json.loads(out), dict), out  # one JSON object and nothing else
            if args[0] == "train":
                assert "epoch 1 1/" in err  # progress went to standard error
