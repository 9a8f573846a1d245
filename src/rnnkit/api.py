"""The Python API behind every command: train a run, evaluate it, load it for use.

    from rnnkit import api, config
    cfg = config.preset("imdb-seed").override(epochs=2)
    results = api.train_run(cfg, "runs/imdb")
    api.evaluate_run("runs/imdb", "test")
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from rnnkit import distributed
from rnnkit.data import sources
from rnnkit.config import RunConfig, flag
from rnnkit.errors import UsageError
from rnnkit.card import write_card
from rnnkit.plots import check_tensorboard, plot_confusion
from rnnkit.precision import evaluation_device, resolve_device
from rnnkit.rundir import RunDir
from rnnkit.runner import build_model, training_class
from rnnkit.train import Task, start_session, train
from rnnkit.data.vocab import PAD, UNK, Vocab

# Settings a resumed run may change: none of them changes the finished steps, the batch plan
# or the random streams (epochs, patience and max_minutes only say when to stop).
RESUMABLE_CHANGES = ("epochs", "max_minutes", "patience", "threads", "device",
                     "eval_batch_size", "tensorboard", "checkpoint_every")


def build_task(cfg: RunConfig, want: tuple[str, ...], run: RunDir | None = None,
               log: Any = print, subwords: bytes | None = None,
               known: Sequence[str] = ()) -> Any:
    """Load the data a task needs; with `run`, reuse that run's vocabulary and labels;
    `subwords`: a SentencePiece model to tokenize with (from an --init-from source); `known`:
    words a new classifier vocabulary takes beside its training split's."""
    task_class = training_class(cfg.model.task)
    vocab = run.vocab() if run is not None else None
    labels = run.labels() if run is not None and cfg.model.task == "classify" else None
    extra = {"known": known} if known else {}
    return task_class.load(cfg, want, vocab, labels, log, subwords, **extra)


def check_resume(saved: RunConfig, cfg: RunConfig, out: Path | str) -> None:
    """Exact resume or none: refuse any change that would make the resumed run differ from
    an uninterrupted one, naming the setting."""
    for group in ("data", "model", "train"):
        old, new = dataclasses.asdict(getattr(saved, group)), dataclasses.asdict(
            getattr(cfg, group))
        for name, value in new.items():
            if value != old[name] and not (group == "train" and name in RESUMABLE_CHANGES):
                raise UsageError(
                    f"{out}: --resume cannot change {flag(name)} ({old[name]!r} -> {value!r}): "
                    "it would change the steps already trained or their batches and random "
                    "streams; only " + ", ".join(flag(n) for n in RESUMABLE_CHANGES)
                    + " may change (train a new run with --out for other settings)")


def check_home() -> None:
    """The cache folder must be writable before any data is read."""
    home = sources.home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=home).close()
    except OSError as exc:
        raise UsageError(f"RNNKIT_HOME {home}: not writable ({exc.strerror or exc}); point "
                         "RNNKIT_HOME at a folder of yours") from None


def _available_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_memory(task: Task | None, cfg: RunConfig, vocab_size: int = 2,
                 num_classes: int = 2) -> None:
    """Refuse a model whose weights, gradients and optimizer state (four copies in float32)
    cannot fit in this machine's free memory, before it is built. The model is counted on
    torch's `meta` device, which allocates nothing."""
    # A dry count: torch's notes on building it (zero-sized adaptive-softmax projections of a
    # tiny model, say) are not the user's business here.
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task is not None:
            model = task.build_model()
        else:  # before the data is read: the smallest vocabulary the settings allow
            if cfg.model.task == "lm" and cfg.model.softmax == "adaptive":
                vocab_size = max(vocab_size, max(cfg.model.cutoff_list()) + 2)
            words = [PAD, UNK] + [f"w{i}" for i in range(max(0, vocab_size - 2))]
            model = build_model(cfg, Vocab(words, [PAD, UNK]), num_classes)
    tensors = list(model.parameters()) + list(model.buffers())
    need = 4 * sum(t.numel() * t.element_size() for t in tensors)
    free = _available_memory()
    if need > free:
        m = cfg.model
        raise UsageError(
            f"the model needs about {need / 2**30:,.1f} GiB to train (weights, gradients and "
            f"optimizer state) and this machine has {free / 2**30:,.1f} GiB free: lower "
            f"--hidden-size ({m.hidden_size}), --num-layers ({m.num_layers}), "
            f"--embedding-dim ({m.embedding_dim}), --max-vocab or --ngram-buckets")


def train_run(cfg: RunConfig, out: Path | str, resume: bool = False, max_steps: int = 0,
              log: Any = print, log_every: int = 0,
              report: tuple[str, ...] = ("valid", "test"),
              explicit: frozenset[str] = frozenset()) -> dict:
    """Train (or resume) the run in `out`, then report the metrics of the best weights on the
    `report` splits. Returns the results that are also written to results.json.

    Everything that can be checked is checked before anything is written; a new run
    directory appears whole, with a step-0 trainer state, so it can always be resumed.
    With `cfg.train.init_from`, the model starts from that language-model run's weights and
    takes over its model settings; `explicit` names the settings the user gave, which must
    not contradict the source's.
    """
    if max_steps < 0:
        raise UsageError(f"--max-steps must be >= 0, got {max_steps}")
    if log_every < 0:
        raise UsageError(f"--log-every must be >= 0, got {log_every}")
    run = RunDir(out, writes=distributed.is_main())
    world = distributed.world_size()
    if not run.writes:
        log = _silent  # rank 0 speaks for a distributed run
    if resume:
        saved = run.config()
        saved_world = int(run.meta().get("world_size", 1))
        if saved_world != world:
            cfg, saved = _rebatch(cfg, saved, saved_world, world, out, explicit)
        check_resume(saved, cfg, out)
        if not run.trainer_path.is_file():
            raise UsageError(f"{out}: nothing to resume (no trainer.pt: the run was written by "
                             "an older rnnkit and stopped before its first checkpoint); "
                             "remove it and train again")
    else:
        run.check_new()
    if world > 1 and cfg.data.ngram_order:
        raise UsageError("the n-gram branch trains in one process only (its sparse table's "
                         "gradients are not summed across processes): add --ngram-order 0, "
                         "or train in one process")
    distributed.barrier()  # every process has checked --out before rank 0 writes it
    source, known = None, []
    if cfg.train.init_from and not resume:
        from rnnkit.transfer import inherit_settings, read_source, words_to_take

        source = read_source(cfg.train.init_from, cfg.model.task)
        cfg = inherit_settings(cfg, source, set(explicit))
        known = words_to_take(source, cfg)
    check_home()
    if cfg.train.tensorboard:
        check_tensorboard()
    resolve_device(cfg.train.device)  # a missing GPU is said before anything is written
    check_memory(None, cfg)
    started = time.monotonic()
    task = build_task(cfg, ("train", "valid", "test"), run if resume else None, log,
                      source.vocab.subword_model if source is not None else None, known)
    check_memory(task, cfg)
    log(f"data: {', '.join(f'{k} {v:,}' for k, v in task.sizes().items())}; vocabulary "
        f"{len(task.data.vocab):,}")
    if world > 1:
        log(f"distributed: {world} processes ({distributed.backend()}), --batch-size "
            f"{cfg.train.batch_size} each, global batch {cfg.train.batch_size * world}")
    if resume:
        run.remove_stale_temporaries()
        session = start_session(cfg, task, run.load_trainer(), log)
    else:
        session = start_session(cfg, task, None, log, init=source)
        meta = {**task.meta(), **({"init_from": source.record()} if source else {}),
                "world_size": world, "global_batch_size": cfg.train.batch_size * world}
        state = session.trainer_state()  # a collective in a distributed run: every process
        run.create(cfg, task.data.vocab, meta, task.labels(), state)
        if run.writes:
            write_card(run)
        distributed.barrier()
    try:
        progress = train(run, cfg, task, session, max_steps=max_steps, log=log,
                         log_every=log_every)
    except Exception as exc:
        if not resume and not run.weights_path.exists() and isinstance(exc, UsageError):
            # Nothing was learned: leave no run behind, so the same --out can be used again.
            if run.writes:
                shutil.rmtree(run.path, ignore_errors=True)
            raise UsageError(f"{exc}; nothing was kept in {out}") from None
        if isinstance(exc, UsageError):
            raise UsageError(f"{exc}; the last good checkpoint is kept in {run.trainer_path}"
                             ) from None
        raise
    distributed.barrier()  # rank 0's last writes are done before anyone reads the weights
    results = final_report(run, task, log, report)
    results["train_seconds"] = round(progress["elapsed"], 1)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    results["finished"] = progress["finished"]
    run.write_results(results)
    if run.writes:
        write_card(run, results)
    distributed.barrier()
    return results


def _silent(*args: Any, **kwargs: Any) -> None:
    pass


def _rebatch(cfg: RunConfig, saved: RunConfig, saved_world: int, world: int, out: Path | str,
             explicit: frozenset[str]) -> tuple[RunConfig, RunConfig]:
    """Resuming with another number of processes: the same global batch, cut anew. The
    result equals the uninterrupted run's up to dropout draws and float rounding."""
    total = saved.train.batch_size * saved_world
    if total % world:
        raise UsageError(f"{out}: the run's global batch of {total} ({saved_world} processes x "
                         f"{saved.train.batch_size}) cannot be split over {world} processes; "
                         f"resume with a number of processes that divides {total}")
    per = total // world
    if "batch_size" in explicit and cfg.train.batch_size != per:
        raise UsageError(f"{out}: with {world} processes the run's global batch of {total} "
                         f"means --batch-size {per}; leave --batch-size out")
    return cfg.override(batch_size=per), saved.override(batch_size=per)


def final_report(run: RunDir, task: Any, log: Any = print,
                 splits: tuple[str, ...] = ("valid", "test")) -> dict:
    model = task.build_model()
    run.load_weights(model)
    model.to(evaluation_device(task.cfg.train.device))
    results: dict[str, Any] = {}
    for split in splits:
        if split in task.data.splits:
            metrics = task.evaluate(model, split)
            results[split] = metrics
            log(f"{split}: " + task.summary(metrics))
            if run.writes:
                plot_confusion_of(run, split, metrics, log)
    return results


def plot_confusion_of(run: RunDir, name: str, metrics: dict, log: Any = print) -> None:
    """RUN/confusion-NAME.png beside curve.png, for a classifier's metrics (a run folder that
    cannot be written to is noted, not fatal)."""
    if "confusion_matrix" not in metrics:
        return
    path = run.path / f"confusion-{name}.png"
    try:
        plot_confusion(metrics["confusion_matrix"], metrics["labels"], path,
                       f"{run.path.name}: {name} ({metrics['examples']:,} texts)")
    except OSError as exc:
        log(f"note: the confusion matrix plot was not written ({path}: "
            f"{exc.strerror or exc})")
        return
    log(f"confusion matrix plot: {path}")


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
    if run.weights_path.is_file():
        run.verify(run.weights_path)  # a damaged file is said before the data is read
    task = build_task(cfg, (split,), run, log)
    if split not in task.data.splits:
        raise UsageError(f"{path}: the run's data has no {split} split; give the file with "
                         f"--{split} FILE")
    model = task.build_model()
    run.load_weights(model)
    model.to(target)
    metrics = task.evaluate(model, split)
    given = (data_overrides or {}).get(split)
    plot_confusion_of(run, f"{split}-{Path(given).name}" if given else split, metrics, log)
    return metrics
