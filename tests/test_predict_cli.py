"""`rnnkit predict`: options may stand anywhere among the texts."""

import json

import pytest

from rnnkit.cli import main


@pytest.fixture(scope="module")
def run(tiny_runs):
    return tiny_runs["clf"]


@pytest.mark.parametrize("order", [
    ["--json", "RUN", "a superb film", "dull and boring"],  # options first
    ["RUN", "--json", "a superb film", "dull and boring"],  # between the run and the texts
    ["RUN", "a superb film", "--json", "dull and boring"],  # among the texts
    ["RUN", "a superb film", "dull and boring", "--json"],  # last
])
def test_json_flag_anywhere(run, capsys, order):
    assert main(["predict", *(str(run) if a == "RUN" else a for a in order)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["a superb film", "dull and boring"]
    assert all(r["label"] in ("pos", "neg") for r in rows)


def test_texts_and_a_file_in_any_order(run, tmp_path, capsys):
    (tmp_path / "more.txt").write_text("a wonderful story\n")
    args = ["predict", str(run), "a superb film", "--file", str(tmp_path / "more.txt"), "dull",
            "--json"]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["a superb film", "dull", "a wonderful story"]
