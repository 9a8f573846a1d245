"""The Python API behind every command: train a run, evaluate it, load it for use.

    from rnnkit import api, config
    cfg = config.preset("imdb-seed").override(epochs=2)
    results = api.train_run(cfg, "runs/imdb")
    api.evaluate_run("runs/imdb", "test")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rnnkit.classification import ClassificationTask
from rnnkit.config import RunConfig
from rnnkit.data import load_classification, load_corpus
from rnnkit.errors import UsageError
from rnnkit.language_model import LanguageModelTask
from rnnkit.precision import evaluation_device, resolve_device
from rnnkit.rundir import RunDir
from rnnkit.train import train


def build_task(cfg: RunConfig, want: tuple[str, ...], run: RunDir | None = None,
               log: Any = print) -> ClassificationTask | LanguageModelTask:
    """Load the data a task needs; with `run`, reuse that run's vocabulary and labels."""
    vocab = run.vocab() if run is not None else None
    if cfg.model.task == "lm":
        return LanguageModelTask(cfg, load_corpus(cfg.data, want, vocab))
    classes = run.labels()["classes"] if run is not None else None
    data = load_classification(cfg.data, cfg.train.seed, want, vocab, classes)
    for note in data.notes:
        log(note)
    return ClassificationTask(cfg, data)


def train_run(cfg: RunConfig, out: Path | str, resume: bool = False, max_steps: int = 0,
              log: Any = print, log_every: int = 0,
              report: tuple[str, ...] = ("valid", "test")) -> dict:
    """Train (or resume) the run in `out`, then report the metrics of the best weights on the
    `report` splits. Returns the results that are also written to results.json."""
    run = RunDir(out)
    if resume:
        saved = run.config()
        if cfg.model != saved.model or cfg.data != saved.data:
            raise UsageError(f"{out}: --resume keeps the run's data and model settings; "
                             "only training settings (epochs, max_minutes, ...) may change")
    elif run.config_path.exists():
        raise UsageError(f"{out}: a run already exists here; use --resume to continue it or "
                         "choose another --out")
    resolve_device(cfg.train.device)  # a missing GPU is said before anything is written
    started = time.monotonic()
    task = build_task(cfg, ("train", "valid", "test"), run if resume else None, log)
    data = task.data
    meta: dict[str, Any] = {"vocab_size": len(data.vocab)}
    labels = None
    if isinstance(task, ClassificationTask):
        meta["num_classes"] = len(task.data.classes)
        labels = {"classes": task.data.classes, "names": task.data.label_names}
        sizes = {k: len(v.ids) for k, v in task.data.splits.items()}
    else:
        sizes = {k: len(v) for k, v in task.data.splits.items()}
    if not resume:
        run.write_meta(cfg, data.vocab, meta, labels)
    log(f"data: {', '.join(f'{k} {v:,}' for k, v in sizes.items())}; vocabulary "
        f"{len(data.vocab):,}")
    progress = train(run, cfg, task, resume=resume, max_steps=max_steps, log=log,
                     log_every=log_every)
    results = final_report(run, task, log, report)
    results["train_seconds"] = round(progress["elapsed"], 1)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    results["finished"] = progress["finished"]
    run.write_results(results)
    return results


def final_report(run: RunDir, task: ClassificationTask | LanguageModelTask, log: Any = print,
                 splits: tuple[str, ...] = ("valid", "test")) -> dict:
    model = task.build_model()
    run.load_weights(model)
    model.to(evaluation_device(task.cfg.train.device))
    results: dict[str, Any] = {}
    for split in splits:
        if split in task.data.splits:
            metrics = task.evaluate(model, split)
            results[split] = metrics
            log(f"{split}: " + _summary(metrics))
    return results


def _summary(metrics: dict) -> str:
    if "perplexity" in metrics:
        return f"perplexity {metrics['perplexity']:.2f} over {metrics['tokens']:,} tokens"
    return (f"accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
            f"({metrics['examples']:,} examples)")


def evaluate_run(path: Path | str, split: str = "test", data_overrides: dict | None = None,
                 log: Any = print, device: str | None = None) -> dict:
    """Metrics of a trained run on one split of its data (or of files given in overrides), on
    `device` (default: where the run trained, if that device is here, else the CPU)."""
    explicit = resolve_device(device) if device else None
    run = RunDir(path)
    cfg = run.config()
    if data_overrides:
        cfg = cfg.override(**data_overrides)
    target = explicit or evaluation_device(cfg.train.device)
    if split not in ("train", "valid", "test"):
        raise UsageError(f"unknown split {split!r}; use train, valid or test")
    task = build_task(cfg, (split,), run, log)
    if split not in task.data.splits:
        raise UsageError(f"{path}: the run's data has no {split} split; give the file with "
                         f"--{split} FILE")
    model = task.build_model()
    run.load_weights(model)
    model.to(target)
    return task.evaluate(model, split)
