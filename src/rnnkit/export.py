"""Export a trained run for other runtimes: `export_run("runs/imdb", "onnx")`.

What the exported graph computes:
- classifier:      ids int64 (B, T), lengths int64 (B,)  ->  probabilities float32 (B, C)
  `ids`: each text's token ids (the run's tokenizer and vocabulary), right-padded; row i's
  first lengths[i] ids are the text (0 <= lengths[i] <= T). The graph cuts each text as the
  run does (`max_len`, `truncate`), so whole texts or texts already cut give the same result,
  that of `Predictor`; an empty text (length 0, or T = 0) is read as one unknown token, as
  `Predictor` reads it. (The cut is in the graph because results depend on it: a long text
  read whole gets other probabilities than the run gives it.)
- language model:  ids int64 (B, T), h (L, B, H) [, c (L, B, H) for LSTMs]
                   ->  logits (B, T, V), h [, c]     (start from zeros; feed h, c back;
                   adaptive-softmax runs give log-probabilities in place of logits)
  T must be at least 1: fed T = 0, ONNX Runtime aborts the whole process on a GRU graph
  (LSTM and Elman graphs return empty logits); feed at least one token per call.
Batch and time axes stay dynamic. The model file's metadata (`custom_metadata_map` in ONNX
Runtime) records the task, these rules (`min_length`, `max_len`, `truncate`) and the ids a
caller needs (`pad_id`, `unk_id`, `labels`), and the tokenizer (`tokenizer`, `lowercase`; for
`sentencepiece`, the model itself as base64 in `sentencepiece_model`).

A classifier with the n-gram branch (data.ngram_order > 0) takes two inputs more:
  ngrams int64 (N,), owner int64 (N,): the hashed n-gram features of every text of the batch
  and the row of the text each belongs to (any order; a text may have none). A text's
  features are those of its whole id sequence, before any cut: `NgramFeatures.features` in
  rnnkit.ngrams, the metadata's `ngram_order`, `ngram_buckets` and `ngram_base` (the
  vocabulary size + 1). In words: with u = ids + 1 as unsigned 64-bit integers, the n-gram
  (u_i, ..., u_{i+n-1}) for n = 1..order is g = u_i * base^(n-1) + ... + u_{i+n-1}; its
  feature is (((g + n) * 0x9E3779B97F4A7C15 mod 2^64) >> 20) mod buckets; a text's features
  are the distinct values. The graph mixes both branches with the run's fitted weight.

Format: ONNX, through the legacy TorchScript-based exporter, which keeps the dynamic axes.
`torch.export` is not offered: in torch 2.13 it unrolls nn.LSTM over the example's length and
guards on it, so the program accepts that one sequence length only.
"""

from __future__ import annotations

import base64
import io
import json
import os
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rnnkit.errors import UsageError
from rnnkit.generate import LanguageModelRunner
from rnnkit.models.classifier import Classifier
from rnnkit.models.lm import LanguageModel
from rnnkit.predict import Predictor
from rnnkit.runner import load
from rnnkit.data.tokenizers import kept_ends

FORMATS = ("onnx",)


class ClassifierProbabilities(nn.Module):
    """The classifier from raw ids: the run's cut, empty texts as one unknown token, then the
    network's class probabilities."""

    def __init__(self, model: Classifier, max_len: int, truncate: str, unk_id: int,
                 pad_id: int):
        super().__init__()
        self.model = model
        self.max_len = max_len
        self.head = kept_ends(max_len, truncate)[0] if max_len else 0  # ids kept in front
        self.unk_id, self.pad_id = unk_id, pad_id if pad_id >= 0 else unk_id

    def cut(self, ids: torch.Tensor, lengths: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T), lengths (B,) -> the ids the network reads (B, T') and their lengths.

        A column of <unk> goes in front: an empty text reads it. A text longer than max_len
        keeps its first `head` ids, then skips `lengths - max_len` of them (tokenize.cut)."""
        full = torch.cat([torch.zeros_like(lengths).unsqueeze(1) + self.unk_id, ids], 1)
        column = torch.arange(full.shape[1], device=ids.device)  # 0 .. T
        kept = lengths
        if self.max_len:
            column, kept = column[: self.max_len], lengths.clamp(max=self.max_len)
        source = column.unsqueeze(0) + 1  # (1, T'): position j reads column j + 1 ...
        if self.max_len:  # ... plus the skipped middle, past the head of a long text
            skipped = (lengths - self.max_len).clamp(min=0).unsqueeze(1)
            source = source + (column >= self.head).unsqueeze(0) * skipped
        source = torch.minimum(source, lengths.unsqueeze(1))  # an empty row reads column 0
        kept = kept.clamp(min=1)
        real = column.unsqueeze(0) < kept.unsqueeze(1)
        return torch.where(real, full.gather(1, source), self.pad_id), kept

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids, lengths = self.cut(ids, lengths)
        return self.model.log_probs(self.model(ids, lengths)).exp()  # (B, C)


class TwoBranchProbabilities(ClassifierProbabilities):
    """The same with the n-gram branch: its features come in as (ngrams, owner)."""

    def __init__(self, model: Classifier, max_len: int, truncate: str, unk_id: int,
                 pad_id: int):
        super().__init__(model, max_len, truncate, unk_id, pad_id)
        bag = model.ngrams
        assert bag is not None
        # Each feature's score per class, ratio x weight, as one table: half the file.
        self.register_buffer("scores", (bag.ratios * bag.weight.weight).detach())

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor,  # type: ignore[override]
                ngrams: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        ids, lengths = self.cut(ids, lengths)
        encoder = self.model(ids, lengths)[0]
        bag = self.model.ngrams
        assert bag is not None
        # NgramBag's sum per text, as a scatter-add: the exporter turns index_add_ into a
        # scatter that keeps one of a row's features and drops the others.
        per_feature = self.scores[ngrams]  # (N, C)
        rows = owner.unsqueeze(1).expand(-1, per_feature.shape[1])
        sums = torch.zeros(ids.shape[0], per_feature.shape[1], dtype=per_feature.dtype)
        return self.model.log_probs([encoder, sums.scatter_add(0, rows, per_feature)
                                     + bag.bias]).exp()


class LanguageModelStep(nn.Module):
    """An LSTM language model with its state spelled out as tensors (ONNX has no tuples)."""

    def __init__(self, model: LanguageModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, (h, c) = self.model(ids, (h, c))
        return logits, h, c


class RecurrentStep(LanguageModelStep):
    """The same for GRU and Elman cells, whose state is h alone."""

    def forward(self, ids: torch.Tensor, h: torch.Tensor  # type: ignore[override]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, (h,) = self.model(ids, (h,))
        return logits, h


@dataclass
class Exportable:
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    axes: dict[str, dict[int, str]]
    metadata: dict[str, str]  # written into the model file
    summary: str  # the model file's doc string


def _classifier(run_dir: Path | str, predictor: Predictor) -> Exportable:
    data, vocab, grams = predictor.cfg.data, predictor.vocab, predictor.ngrams
    kind = ClassifierProbabilities if grams is None else TwoBranchProbabilities
    module = kind(predictor.model, data.max_len, data.truncate, vocab.unk_id,
                  vocab.pad_id).eval()
    ids = torch.full((2, 7), vocab.unk_id, dtype=torch.long)
    lengths = torch.tensor([7, 4], dtype=torch.long)
    example: tuple[torch.Tensor, ...] = (ids, lengths)
    inputs = ["ids", "lengths"]
    axes = {"ids": {0: "batch", 1: "time"}, "lengths": {0: "batch"},
            "probabilities": {0: "batch"}}
    metadata = {"task": "classify", "min_length": "0", "max_len": str(data.max_len),
                "truncate": data.truncate, "pad_id": str(vocab.pad_id),
                "unk_id": str(vocab.unk_id), "labels": json.dumps(predictor.names)}
    summary = ("rnnkit classifier: ids int64 (B, T) right-padded token ids, lengths int64 (B,) "
               "-> probabilities (B, C). Texts are cut to max_len as the run cuts them; an "
               "empty text reads as one <unk>.")
    if grams is not None:
        example += (torch.tensor([3, 5, 8, 1, 2], dtype=torch.long),
                    torch.tensor([0, 0, 0, 1, 1], dtype=torch.long))
        inputs += ["ngrams", "owner"]
        axes.update({"ngrams": {0: "features"}, "owner": {0: "features"}})
        metadata.update({"ngram_order": str(data.ngram_order),
                         "ngram_buckets": str(data.ngram_buckets),
                         "ngram_base": str(int(grams.base))})
        summary += (" With the n-gram branch: ngrams int64 (N,) the hashed n-gram features of "
                    "each whole text (rnnkit.ngrams.NgramFeatures), owner int64 (N,) the row "
                    "of each.")
    return Exportable(module, example, inputs, ["probabilities"], axes, metadata, summary)


def _language_model(run_dir: Path | str, runner: LanguageModelRunner) -> Exportable:
    state = runner.model.initial_state(2)
    module = (LanguageModelStep if len(state) == 2 else RecurrentStep)(runner.model).eval()
    names = ["h", "c"][: len(state)]
    ids = torch.zeros((2, 7), dtype=torch.long)
    axes: dict[str, dict[int, str]] = {"ids": {0: "batch", 1: "time"},
                                       "logits": {0: "batch", 1: "time"}}
    for name in names:
        axes[name] = axes[name + "_out"] = {1: "batch"}
    scores = "log_probs" if runner.model.adaptive is not None else "logits"
    metadata = {"task": "lm", "min_length": "1", "state": ",".join(names), "scores": scores,
                "unk_id": str(runner.vocab.unk_id), "eos_id": str(runner.vocab.eos_id)}
    summary = (f"rnnkit language model: ids int64 (B, T), T >= 1, and the state "
               f"{', '.join(names)} (layers, B, hidden) -> {scores} (B, T, V) and the new state.")
    return Exportable(module, (ids, *state), ["ids", *names],
                      ["logits", *[n + "_out" for n in names]], axes, metadata, summary)


_BY_TASK = {"classify": _classifier, "lm": _language_model}


def exportable(run_dir: Path | str) -> Exportable:
    """The module to export, example inputs, input and output names, dynamic axes, metadata."""
    runner = load(run_dir)
    found = _BY_TASK[runner.task](run_dir, runner)
    data = runner.cfg.data
    found.metadata.update({"tokenizer": data.tokenizer, "lowercase": str(data.lowercase).lower()})
    if runner.vocab.subword_model is not None:  # what a caller needs to make the ids
        found.metadata["sentencepiece_model"] = base64.b64encode(
            runner.vocab.subword_model).decode("ascii")
    return found


def export_run(run_dir: Path | str, fmt: str = "onnx", out: Path | str | None = None) -> Path:
    """Write the run's network in `fmt`; returns the file written (default RUN/model.onnx).
    The module docstring says what the graph computes and what inputs it accepts."""
    if fmt == "torch-export":
        raise UsageError("torch-export is not supported: torch.export fixes the sequence "
                         "length of nn.LSTM (torch 2.13); use --format onnx")
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    path = Path(out) if out else Path(run_dir) / "model.onnx"
    if out is not None and path.exists():  # RUN_DIR/model.onnx is the run's own: redone
        raise UsageError(f"{path}: exists; choose another --out or remove it first")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such directory for --out")
    found = exportable(run_dir)
    # Written beside the target, then renamed: a failed or interrupted export leaves no
    # partial model file.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        _export_onnx(found, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _export_onnx(found: Exportable, path: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise UsageError("ONNX export needs the onnx package: install rnnkit[export]") from None
    # The legacy exporter keeps batch and time dynamic (the dynamo one may fix the output
    # length); it warns that it is deprecated, and prints a hint, both silenced here.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(found.module, found.example, str(path), input_names=found.inputs,
                          output_names=found.outputs, dynamic_axes=found.axes,
                          opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, found.metadata)
    model.doc_string = found.summary
    onnx.save(model, str(path))
