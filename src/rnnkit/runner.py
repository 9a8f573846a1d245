"""One door to a trained run: `rnnkit.load(run_dir)` gives the runner its task calls for.

    clf = rnnkit.load("runs/imdb-seed")   # a Predictor:  clf.predict(["I loved it"])
    lm = rnnkit.load("runs/ptb-small")    # a LanguageModelRunner:  lm.generate("the")

`TASKS` is the one registry of tasks: for each, the task class that trains and evaluates it
(data, batches, loss, metrics), the runner class that loads a trained run of it, how
messages name such a model, and the network it builds (`build_model`, used when a run is
trained, evaluated and loaded).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from rnnkit.config import RunConfig
from rnnkit.errors import UsageError
from rnnkit.models.classifier import Classifier
from rnnkit.models.lm import LanguageModel
from rnnkit.rundir import RunDir
from rnnkit.data.vocab import Vocab

if TYPE_CHECKING:
    from rnnkit.generate import LanguageModelRunner
    from rnnkit.predict import Predictor

    Runner = Predictor | LanguageModelRunner


def _classifier(cfg: RunConfig, vocab: Vocab, num_classes: int) -> nn.Module:
    buckets = cfg.data.ngram_buckets if cfg.data.ngram_order else 0
    return Classifier(len(vocab), num_classes, cfg.model, vocab.pad_id, buckets)


def _language_model(cfg: RunConfig, vocab: Vocab, num_classes: int) -> nn.Module:
    return LanguageModel(len(vocab), cfg.model)


@dataclass(frozen=True)
class Task:
    training: str  # "module:Class" of the training task (rnnkit.train.Task)
    runner: str  # "module:Class" of the runner; its `load(run_dir)` loads a run
    what: str  # how messages name a model of this task
    build: Callable[[RunConfig, Vocab, int], nn.Module]


TASKS: dict[str, Task] = {
    "classify": Task("rnnkit.classification:ClassificationTask", "rnnkit.predict:Predictor",
                     "a classifier", _classifier),
    "lm": Task("rnnkit.language_model:LanguageModelTask", "rnnkit.generate:LanguageModelRunner",
               "a language model", _language_model),
}


def task_of(name: str) -> Task:
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; rnnkit knows: {', '.join(TASKS)}")
    return TASKS[name]


def build_model(cfg: RunConfig, vocab: Vocab, num_classes: int = 0) -> nn.Module:
    """The untrained network of a run with this config and vocabulary (`num_classes`: the
    classifier's labels; language models ignore it)."""
    return task_of(cfg.model.task).build(cfg, vocab, num_classes)


def _import(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def runner_class(task: str) -> Any:
    """The class whose `load(run_dir)` loads a run of `task` (imported on first use)."""
    return _import(task_of(task).runner)


def training_class(task: str) -> Any:
    """The class whose `load(cfg, want, vocab, labels, log)` reads a task's data for training
    and evaluation."""
    return _import(task_of(task).training)


def load(run_dir: Path | str) -> "Runner":
    """The run's runner: a Predictor for a classifier, a LanguageModelRunner for a language
    model (UsageError for a missing or unreadable run directory)."""
    return runner_class(RunDir(run_dir).meta()["task"]).load(run_dir)
