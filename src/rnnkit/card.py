"""RUN/README.md: a model card a person can read.

What was trained on what data, with which settings, how well it did on each split, how long it
took on which machine, the command that trains it again, and what it is (and is not) for.
Written when the run is created and rewritten when training ends, from the run's own files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
from typing import Any

import torch

from rnnkit import __version__
from rnnkit.config import DEFAULT_PRESET, PRESETS, RunConfig, flag, preset


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """'Intel(R) Xeon(R) Processor, 2 cores; torch 2.13.0+cpu' (and the GPU, if one is used)."""
    text = f"{cpu_model()}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(0)}"
    return f"{text}; torch {torch.__version__}; rnnkit {__version__}"


def command(cfg: RunConfig, out: str) -> str:
    """The `rnnkit train` command that trains this configuration: the preset and each setting
    that differs from it."""
    base = preset(cfg.preset if cfg.preset in PRESETS else DEFAULT_PRESET)
    words = ["rnnkit", "train"]
    if cfg.preset:
        words += ["--preset", cfg.preset]
    for part, base_part in ((cfg.data, base.data), (cfg.model, base.model),
                            (cfg.train, base.train)):
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if value != getattr(base_part, f.name):
                shown = str(value).lower() if isinstance(value, bool) else str(value)
                words += [flag(f.name), "none" if value is None else shown]
    return shlex.join(words + ["--out", out])


def _metrics_rows(results: dict[str, Any], task: str) -> list[str]:
    rows = []
    for split in ("valid", "test"):
        m = results.get(split)
        if not m:
            continue
        if task == "lm":
            rows.append(f"| {split} | perplexity {m['perplexity']:.2f} | "
                        f"{m.get('tokens', 0):,} tokens |")
        else:
            rows.append(f"| {split} | accuracy {m['accuracy']:.2%}, macro F1 "
                        f"{m['macro_f1']:.4f} | {m.get('examples', 0):,} texts |")
    return rows


def _uses(cfg: RunConfig, labels: dict[str, Any] | None) -> list[str]:
    d = cfg.data
    if cfg.model.task == "lm":
        return [
            "Intended use: scoring (perplexity) and continuing text like its training corpus, "
            "and starting other models (`--init-from`).",
            "Limits: it knows only its vocabulary (other words are `<unk>`); generated text is "
            "fluent at best and not factual; its perplexity on other kinds of text is unknown "
            "until scored (`rnnkit score`).",
        ]
    names = ", ".join((labels or {}).get("names") or (labels or {}).get("classes") or [])
    cut = (f"it reads at most {d.max_len} tokens of a text ({d.truncate})" if d.max_len
           else "it reads whole texts")
    return [
        f"Intended use: labelling texts like its training data with one of: {names}.",
        f"Limits: {cut}; words outside its vocabulary are `<unk>`; its accuracy on other "
        "kinds of text (other domains, languages, lengths) is unknown until measured "
        "(`rnnkit evaluate RUN --test FILE`); check the per-class figures before relying on "
        "rare classes.",
    ]


def write_card(run: Any, results: dict[str, Any] | None = None) -> None:
    """(Re)write RUN/README.md from the run's config, labels, metrics and `results`."""
    from rnnkit.files import atomic_write_text

    meta = run.meta()
    cfg = RunConfig.from_dict(meta["config"])
    task = meta["task"]
    labels = json.loads(run.labels_path.read_text()) if run.labels_path.is_file() else None
    history = []
    if run.metrics_path.is_file():
        history = [json.loads(line) for line in run.metrics_path.read_text().splitlines()
                   if line.strip()]
    d, m, t = cfg.data, cfg.model, cfg.train
    kind = "language model" if task == "lm" else "text classifier"
    sources = [f"{split} {getattr(d, split)}" for split in ("train", "extra_train", "valid",
                                                            "test") if getattr(d, split)]
    data = f"dataset {d.dataset}" if d.dataset else "files"
    if sources:
        data += " (" + "; ".join(sources) + ")"
    layers = (f"{m.num_layers} x {m.hidden_size}"
              + (f" (last {m.last_layer_size})" if m.last_layer_size else ""))
    lines = [
        f"# {run.path.name}: {kind}" + (f" (preset {cfg.preset})" if cfg.preset else ""),
        "",
        "## Data",
        f"- Source: {data}; text field `{d.text_field}`"
        + ("" if task == "lm" else f", label field `{d.label_field}`") + ".",
        f"- Tokenizer `{d.tokenizer}`" + (", lowercased" if d.lowercase else "")
        + f"; vocabulary {meta.get('vocab_size', 0):,} entries "
        + (f"(a SentencePiece {d.subword_model} model learned from the training split)."
           if d.tokenizer == "sentencepiece" else f"(min frequency {d.min_freq}"
           + (f", at most {d.max_vocab:,}" if d.max_vocab else "") + ")."),
    ]
    if labels:
        lines.append(f"- Classes ({len(labels['classes'])}): "
                     + ", ".join(labels.get("names") or labels["classes"]) + ".")
    if meta.get("init_from"):
        source = meta["init_from"]
        lines.append(f"- Initialised from `{source.get('path')}` (weights SHA-256 "
                     f"{str(source.get('sha256', ''))[:16]}...).")
    lines += [
        "",
        "## Model and training",
        f"- {m.cell.upper()} {layers}, embeddings {m.embedding_dim}"
        + (", bidirectional" if m.bidirectional else "")
        + (f", pooling {m.pooling}" if task != "lm" else f", {m.softmax} softmax")
        + (f", n-gram branch (order {d.ngram_order})" if d.ngram_order else "") + ".",
        f"- {t.optimizer} lr {t.lr:g}, schedule {t.schedule}, batch {t.batch_size}, "
        f"{t.epochs} epochs planned" + (f", at most {t.max_minutes:g} minutes"
                                         if t.max_minutes else "")
        + f", precision {t.precision}, seed {t.seed}.",
        "",
        "## Results",
    ]
    rows = _metrics_rows(results or {}, task)
    if rows:
        lines += ["| split | metric | size |", "|---|---|---|", *rows]
    elif history:
        lines.append(f"Training in progress or stopped: {len(history)} epochs recorded; "
                     "final figures come with the end of training (`rnnkit evaluate`).")
    else:
        lines.append("Not trained yet.")
    if history:
        best_key = "valid_perplexity" if task == "lm" else "valid_accuracy"
        lines += ["", "Per epoch: " + "; ".join(
            f"{epoch_label(h)}: {best_key.split('_')[1]} {h[best_key]:.4g}"
            for h in history if best_key in h) + "."]
    if results:
        seconds = results.get("train_seconds")
        wall = results.get("wall_seconds")
        if seconds is not None:
            lines += ["", f"Training took {seconds / 60:.1f} min"
                      + (f" ({wall / 60:.1f} min wall for the whole command)" if wall else "")
                      + f" on {hardware()}."]
    lines += [
        "",
        "## Reproduce",
        "```",
        command(cfg, str(run.path)),
        "```",
        "",
        "## Intended use and limits",
        *(f"- {line}" for line in _uses(cfg, labels)),
        "",
    ]
    atomic_write_text(run.path / "README.md", "\n".join(lines))


def epoch_label(record: dict) -> str:
    """An epoch as the card and the training log name it: 3, or 4 (62% of it) when the time
    budget ended it."""
    if "partial" in record:
        return f"{record['epoch']} ({record['partial']:.0%} of it)"
    return str(record["epoch"])
