"""Export a trained run for other runtimes: `export_run("runs/imdb", "onnx")`.

What the exported graph computes:
- classifier:      ids int64 (B, T), lengths int64 (B,)  ->  probabilities float32 (B, C)
                   (ids right-padded with the vocabulary's pad id, as `Predictor` does)
- language model:  ids int64 (B, T), h (L, B, H) [, c (L, B, H) for LSTMs]
                   ->  logits (B, T, V), h [, c]     (start from zeros; feed h, c back;
                   adaptive-softmax runs give log-probabilities in place of logits)
Batch and time axes stay dynamic. Runs with the n-gram branch (data.ngram_order > 0) are
refused: its hashed features are computed in Python, outside the network.

Format: ONNX, through the legacy TorchScript-based exporter, which keeps the dynamic axes.
`torch.export` is not offered: in torch 2.13 it unrolls nn.LSTM over the example's length and
guards on it, so the program accepts that one sequence length only.
"""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import torch
from torch import nn

from rnnkit.errors import UsageError
from rnnkit.generate import LanguageModelRunner
from rnnkit.models.classifier import Classifier
from rnnkit.models.lm import LanguageModel
from rnnkit.predict import Predictor
from rnnkit.rundir import RunDir

FORMATS = ("onnx",)


class ClassifierProbabilities(nn.Module):
    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return Classifier.log_probs(self.model(ids, lengths)).exp()  # (B, C)


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


def exportable(run_dir: Path | str) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[str],
                                              list[str], dict[str, dict[int, str]]]:
    """The module to export, example inputs, input and output names, dynamic axes."""
    task = RunDir(run_dir).meta()["task"]
    if task == "classify":
        predictor = Predictor.load(run_dir)
        if predictor.ngrams is not None:
            raise UsageError(f"{run_dir}: runs with the n-gram branch (ngram_order > 0) cannot "
                             "be exported; its features are computed outside the network")
        module = ClassifierProbabilities(predictor.model).eval()
        ids = torch.full((2, 7), predictor.vocab.unk_id, dtype=torch.long)
        lengths = torch.tensor([7, 4], dtype=torch.long)
        axes = {"ids": {0: "batch", 1: "time"}, "lengths": {0: "batch"},
                "probabilities": {0: "batch"}}
        return module, (ids, lengths), ["ids", "lengths"], ["probabilities"], axes
    runner = LanguageModelRunner.load(run_dir)
    state = runner.model.initial_state(2)
    module = (LanguageModelStep if len(state) == 2 else RecurrentStep)(runner.model).eval()
    names = ["h", "c"][: len(state)]
    ids = torch.zeros((2, 7), dtype=torch.long)
    axes: dict[str, dict[int, str]] = {"ids": {0: "batch", 1: "time"},
                                       "logits": {0: "batch", 1: "time"}}
    for name in names:
        axes[name] = axes[name + "_out"] = {1: "batch"}
    return (module, (ids, *state), ["ids", *names], ["logits", *[n + "_out" for n in names]],
            axes)


def export_run(run_dir: Path | str, fmt: str = "onnx", out: Path | str | None = None) -> Path:
    """Write the run's network in `fmt`; returns the file written (default RUN/model.onnx)."""
    if fmt == "torch-export":
        raise UsageError("torch-export is not supported: torch.export fixes the sequence "
                         "length of nn.LSTM (torch 2.13); use --format onnx")
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    module, example, inputs, outputs, axes = exportable(run_dir)
    path = Path(out) if out else Path(run_dir) / "model.onnx"
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such directory for --out")
    _export_onnx(module, example, inputs, outputs, axes, path)
    return path


def _export_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str],
                 outputs: list[str], axes: dict[str, dict[int, str]], path: Path) -> None:
    try:
        import onnx  # noqa: F401  (the legacy exporter needs it to write the file)
    except ImportError:
        raise UsageError("ONNX export needs the onnx package: install rnnkit[export]") from None
    # The legacy exporter keeps batch and time dynamic (the dynamo one may fix the output
    # length); it warns that it is deprecated, and prints a hint, both silenced here.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
