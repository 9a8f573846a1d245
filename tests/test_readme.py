"""The README's quickstart, run as written.

The first command installs, trains the default model on IMDB and predicts. Here it runs in a
scratch folder laid out like a checkout (its `.venv` is this one, `../shared/data` is the
mirror), with `bash scripts/install.sh` taken as done (CI runs that script itself before the
tests) and RNNKIT_TRAIN_ARGS bounding the training to one short epoch. The second command is
the one CI runs; here it is only checked to be the one .ci/run runs.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "bash scripts/install.sh && "


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no Quickstart bash block"
    commands = [line for line in block.group(1).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 2, commands
    return commands


@pytest.mark.slow
def test_first_command_trains_and_predicts(mirror, tmp_path):
    command = quickstart_commands()[0]
    assert command.startswith(INSTALL), command
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(mirror.resolve())
    env = dict(os.environ, RNNKIT_TRAIN_ARGS="--limit-train 5000 --epochs 1")
    done = subprocess.run(["bash", "-c", "set -e; " + command[len(INSTALL):]], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = done.stdout.strip().splitlines()[-2:]
    labels = [line.split("\t")[0] for line in predictions]
    assert labels == ["pos", "neg"], done.stdout  # "I loved this movie", "Dull and far too long"
    assert (work / "runs" / "imdb-seed" / "model.safetensors").is_file()
    assert "test: accuracy" in done.stderr  # the final report covers the test split


def test_second_command_is_what_ci_runs():
    command = quickstart_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command.startswith(INSTALL) and "scripts/install-browser.sh" in command
    assert "bash scripts/install.sh" in ci and "bash scripts/install-browser.sh" in ci
    assert re.search(r"\.venv/bin/python -m pytest -q\b", command)
    assert re.search(r"\.venv/bin/python -m pytest -q\b", ci)
