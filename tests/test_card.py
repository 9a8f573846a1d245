"""What a run directory tells a person: its README (model card), the confusion matrix plot and
TensorBoard scalars."""

import json
import shlex

import pytest

from rnnkit import api, cli
from rnnkit.config import RunConfig
from rnnkit.errors import UsageError
from rnnkit.rundir import RunDir
from tiny_runs import train_classifier, train_lm


def _config_of_command(command: str) -> RunConfig:
    """The config `rnnkit train` builds from the card's command line."""
    words = shlex.split(command)
    assert words[:2] == ["rnnkit", "train"]
    args = cli.build_parser().parse_args(words[1:])
    overrides = cli.config_overrides(args)
    from rnnkit.config import preset

    return preset(args.preset).override(**overrides)


def test_a_classifier_run_explains_itself(tmp_path):
    pytest.importorskip("tensorboard")  # a dev dependency: installed wherever tests run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train_classifier(tmp_path, tensorboard=True)
    card = (run / "README.md").read_text()
    results = json.loads((run / "results.json").read_text())
    assert f"accuracy {results['valid']['accuracy']:.2%}" in card
    assert "## Data" in card and "Classes (2): neg, pos" in card
    assert "Intended use" in card and "Limits" in card and "cores" in card
    command = card.split("```\n")[1].split("\n")[0]
    assert _config_of_command(command) == RunDir(run).config()
    # The plot of the confusion matrix beside curve.png.
    assert (run / "confusion-valid.png").stat().st_size > 2000
    # TensorBoard: one scalar per epoch for each figure.
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "valid/loss", "valid/accuracy", "lr"} <= set(tags)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [e.step for e in events.Scalars("valid/accuracy")]
    values = [e.value for e in events.Scalars("valid/accuracy")]
    assert steps == [h["step"] for h in history]
    assert values == pytest.approx([h["valid_accuracy"] for h in history])


def test_evaluate_plots_the_confusion_matrix_of_the_file_it_read(tmp_path):
    run = train_classifier(tmp_path, epochs=1)
    metrics = api.evaluate_run(run, "test", {"test": str(tmp_path / "dev.tsv")},
                               log=lambda *a, **k: None)
    assert len(metrics["confusion_matrix"]) == 2
    assert (run / "confusion-test-dev.tsv.png").is_file()


def test_a_language_model_card_reports_perplexity(tmp_path):
    run = train_lm(tmp_path, epochs=2)
    card = (run / "README.md").read_text()
    results = json.loads((run / "results.json").read_text())
    assert f"perplexity {results['valid']['perplexity']:.2f}" in card
    assert "language model" in card and "--preset lm" in card


def test_tensorboard_missing_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("tensorboard") or name == "torch.utils.tensorboard":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(UsageError, match=r"--tensorboard needs the tensorboard package"):
        train_classifier(tmp_path, tensorboard=True)
    assert not (tmp_path / "clf").exists()
