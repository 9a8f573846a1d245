"""Training in several processes (torchrun, gloo on the CPU): the same results as one process
with the same global batch, rank 0 alone writing, resume under torchrun, two "nodes" on
loopback, and a restarted group continuing its run by itself."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import write_review_tsvs
from tiny_runs import SENTENCES

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RNNKIT_NO_TCMALLOC": "1",
       "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}


def rnnkit(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnkit", *map(str, args)], env=env or ENV,
                          capture_output=True, text=True, timeout=300)


def torchrun(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *map(str, args)],
                            env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def close(a: float, b: float, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * abs(b)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import random

    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(SENTENCES)) for _ in range(600)) + "\n")
    return path


def lm_args(corpus, epochs=2):
    return ["--preset", "lm", "--train", corpus, "--embedding-dim", "8", "--hidden-size", "8",
            "--num-steps", "6", "--epochs", epochs, "--dropout", "0", "--lr", "5",
            "--weight-drop", "0", "--embedding-dropout", "0", "--precision", "fp32",
            "--report", "valid", "--seed", "3"]


@pytest.fixture(scope="module")
def one_process(corpus, tmp_path_factory):
    """The one-process reference run (global batch 8) several tests compare against."""
    run = tmp_path_factory.mktemp("one") / "run"
    done = rnnkit("train", *lm_args(corpus), "--batch-size", "8", "--out", run)
    assert done.returncode == 0, done.stderr
    return run


# Two processes, 2 epochs of 74 steps, dropout drawn per process, checkpoints every 10 steps.
def resumable_args(corpus):
    return [*lm_args(corpus, 2), "--batch-size", "4", "--dropout", "0.3",
            "--checkpoint-every", "10"]


@pytest.fixture(scope="module")
def two_process_runs(corpus, tmp_path_factory):
    """(straight, part): the uninterrupted two-process run, and the same command stopped by
    --max-steps 100 in epoch 2 (tests continue copies of it)."""
    root = tmp_path_factory.mktemp("two")
    straight = rnnkit("train", *resumable_args(corpus), "--nproc", "2", "--out",
                      root / "straight")
    assert straight.returncode == 0, straight.stderr
    part = rnnkit("train", *resumable_args(corpus), "--nproc", "2", "--max-steps", "100",
                  "--out", root / "part")
    assert part.returncode == 0, part.stderr
    return root / "straight", root / "part"


def copy_run(run, dest):
    shutil.copytree(run, dest)
    return dest


def test_two_processes_train_the_language_model_one_process_trains(tmp_path, corpus,
                                                                  one_process):
    two = rnnkit("train", *lm_args(corpus), "--batch-size", "4", "--nproc", "2", "--out",
                 tmp_path / "two")
    assert two.returncode == 0, two.stderr
    assert "distributed: 2 processes (gloo), --batch-size 4 each, global batch 8" in two.stderr
    assert two.stderr.count("valid: perplexity") == 1  # rank 0 alone prints
    a, b = metrics(one_process), metrics(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):  # the same losses and validation figures, to float rounding
        assert close(x["train_loss"], y["train_loss"], 1e-6)
        assert close(x["valid_perplexity"], y["valid_perplexity"])
    meta = json.loads((tmp_path / "two" / "config.json").read_text())
    assert meta["world_size"] == 2 and meta["global_batch_size"] == 8
    assert not list(tmp_path.glob(".*rnnkit-staging*"))


def test_two_processes_train_the_classifier_one_process_trains(tmp_path):
    files = write_review_tsvs(tmp_path)
    args = ["--train", files["train"], "--valid", files["dev"], "--embedding-dim", "8",
            "--hidden-size", "8", "--lr", "0.02", "--min-freq", "1", "--epochs", "2",
            "--dropout", "0", "--report", "valid", "--ngram-order", "0"]
    # 45 examples a batch: the plan's batches split 23 + 22, and the last one is ragged.
    one = rnnkit("train", *args, "--batch-size", "90", "--out", tmp_path / "one")
    two = rnnkit("train", *args, "--batch-size", "45", "--nproc", "2", "--out", tmp_path / "two")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    for x, y in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two")):
        assert close(x["train_loss"], y["train_loss"]) and close(x["valid_loss"], y["valid_loss"])
        assert x["valid_accuracy"] == y["valid_accuracy"]


def test_resume_under_torchrun_is_exact(tmp_path, two_process_runs):
    straight, part = two_process_runs
    split = copy_run(part, tmp_path / "split")
    rest = rnnkit("train", "--resume", split, "--nproc", "2")
    assert rest.returncode == 0, rest.stderr
    # dropout 0.3 draws per process: exact only because each rank's random state was saved
    assert metrics(straight) == [
        {**r, "seconds": s["seconds"]} for r, s in zip(metrics(split), metrics(straight))]
    # another number of processes that divides the global batch continues it too
    again = rnnkit("train", "--resume", split, "--epochs", "3")
    assert again.returncode == 0, again.stderr
    assert len(metrics(split)) == 3
    bad = rnnkit("train", "--resume", split, "--nproc", "3", "--epochs", "4")
    assert bad.returncode == 2 and "cannot be split over 3 processes" in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_loopback_give_one_process_s_result(tmp_path, corpus, one_process):
    port = _free_port()
    nodes = [torchrun("--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(k),
                      "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                      "--rdzv-id", "rnnkit-test", "-m", "rnnkit", "train", *lm_args(corpus),
                      "--batch-size", "4", "--out", tmp_path / "nodes")
             for k in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err
    for x, y in zip(metrics(one_process), metrics(tmp_path / "nodes")):
        assert close(x["valid_perplexity"], y["valid_perplexity"])


def test_a_restarted_group_resumes_its_run_by_itself(tmp_path, corpus, two_process_runs):
    """What torchrun --max-restarts does after a worker dies: it starts the same command
    again in every process, with TORCHELASTIC_RESTART_COUNT > 0. The processes (started here
    by hand, as torchrun starts them) find the run their command created and continue it from
    its last checkpoint, to the uninterrupted run's result."""
    straight, part = two_process_runs  # part stopped in epoch 2 (74 steps an epoch)
    run = copy_run(part, tmp_path / "restarted")
    args = resumable_args(corpus)
    port = _free_port()
    workers = [subprocess.Popen(
        [sys.executable, "-m", "rnnkit", "train", *map(str, args), "--out", str(run)],
        env={**ENV, "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
             "LOCAL_WORLD_SIZE": "2", "MASTER_PORT": str(port),
             "TORCHELASTIC_RESTART_COUNT": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    errs = [w.communicate(timeout=300)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errs
    assert "resuming at epoch 2, batch 26" in errs[0]
    a, b = metrics(straight), metrics(run)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in a] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in b]
