"""Run directories that describe themselves.

    RUN/config.json       what was trained: the full RunConfig, task, sizes, rnnkit version
    RUN/vocab.json        the vocabulary
    RUN/labels.json       class labels (classifiers)
    RUN/model.safetensors the best weights so far (by validation)
    RUN/trainer.pt        everything needed to resume exactly: latest weights, optimizer,
                          RNG, position in the epoch, carried LM state (tensors and plain
                          values only; loaded with weights_only=True)
    RUN/metrics.jsonl     one line per evaluation
    RUN/curve.png         training curve
    RUN/results.json      final validation and test metrics
Every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from rnnkit import __version__
from rnnkit.config import RunConfig
from rnnkit.errors import UsageError
from rnnkit.io import atomic_write, atomic_write_text
from rnnkit.vocab import Vocab


# Large tables that are mostly zero rows (a hashed n-gram table: a 16M-row table of which
# IMDB fills a quarter) are stored as their non-zero rows and those rows' indices: in
# model.safetensors the file's metadata names them with their shapes; in trainer.pt each is a
# small dict marked ROWS_MARK. Other tensors are stored as they are.
SPARSE_KEY = "rnnkit.sparse_rows"
SPARSE_MIN_ELEMENTS = 1 << 20
ROWS_MARK = "__rnnkit_nonzero_rows__"  # trainer.pt: a table stored as its non-zero rows


def _nonzero_rows(t: torch.Tensor) -> torch.Tensor | None:
    """Indices of the non-zero rows of a large 2-D table that is mostly zero rows, else None."""
    if t.dim() != 2 or t.numel() < SPARSE_MIN_ELEMENTS:
        return None
    rows = t.ne(0).any(1).nonzero().squeeze(1)
    if 2 * len(rows) >= t.shape[0]:
        return None
    return rows.to(torch.int32) if t.shape[0] < 2 ** 31 else rows


def _rows_to_table(values: torch.Tensor, rows: torch.Tensor, shape: list[int]) -> torch.Tensor:
    return values.new_zeros(shape).index_copy_(0, rows.long(), values)


def _compact_tree(obj: Any) -> Any:
    """The trainer state with each mostly-zero table (n-gram weights, their optimizer sums)
    replaced by its non-zero rows; `_expand_tree` gives back exactly the same tensors."""
    if isinstance(obj, torch.Tensor):
        rows = _nonzero_rows(obj)
        if rows is None:
            return obj
        return {ROWS_MARK: rows, "values": obj[rows.long()], "rows_of": list(obj.shape)}
    if isinstance(obj, dict):
        return {k: _compact_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_compact_tree(v) for v in obj)
    return obj


def _expand_tree(obj: Any) -> Any:
    if isinstance(obj, dict):
        if ROWS_MARK in obj:
            return _rows_to_table(obj["values"], obj[ROWS_MARK], obj["rows_of"])
        return {k: _expand_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_expand_tree(v) for v in obj)
    return obj


def _compact_state(model: nn.Module) -> tuple[dict[str, torch.Tensor] | None, dict[str, str]]:
    """(tensors, metadata) with the mostly-zero tables compacted; (None, {}) when there is
    nothing to compact or tensors share memory (tied weights: left to safetensors)."""
    state = model.state_dict()
    storages = [t.untyped_storage().data_ptr() for t in state.values()]
    if len(set(storages)) != len(storages):
        return None, {}
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, t in state.items():
        rows = _nonzero_rows(t)
        if rows is None:
            tensors[name] = t.contiguous()
        else:
            tensors[f"{name}:rows"] = rows
            tensors[f"{name}:values"] = t[rows.long()].contiguous()
            shapes[name] = list(t.shape)
    if not shapes:
        return None, {}
    return tensors, {SPARSE_KEY: json.dumps(shapes)}


def _expand_state(tensors: dict[str, torch.Tensor], shapes: dict[str, list[int]]
                  ) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in tensors.items() if not k.endswith((":rows", ":values"))}
    for name, shape in shapes.items():
        state[name] = _rows_to_table(tensors[f"{name}:values"], tensors[f"{name}:rows"], shape)
    return state


class RunDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    vocab_path = property(lambda self: self.path / "vocab.json")
    labels_path = property(lambda self: self.path / "labels.json")
    weights_path = property(lambda self: self.path / "model.safetensors")
    trainer_path = property(lambda self: self.path / "trainer.pt")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    results_path = property(lambda self: self.path / "results.json")
    curve_path = property(lambda self: self.path / "curve.png")

    # --- writing ------------------------------------------------------------------------

    def write_meta(self, cfg: RunConfig, vocab: Vocab, meta: dict[str, Any],
                   labels: dict[str, Any] | None = None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        vocab.save(self.vocab_path)
        if labels is not None:
            atomic_write_text(self.labels_path, json.dumps(labels, indent=1))
        record = {"rnnkit": __version__, "task": cfg.model.task, **meta, "config": cfg.to_dict()}
        atomic_write_text(self.config_path, json.dumps(record, indent=1))

    def save_weights(self, model: nn.Module) -> None:
        tensors, metadata = _compact_state(model)
        if tensors is None:
            atomic_write(self.weights_path,
                         lambda tmp: safetensors.torch.save_model(model, str(tmp)))
        else:
            atomic_write(self.weights_path, lambda tmp: safetensors.torch.save_file(
                tensors, str(tmp), metadata=metadata))

    def save_trainer(self, state: dict[str, Any]) -> None:
        compact = _compact_tree(state)
        atomic_write(self.trainer_path, lambda tmp: torch.save(compact, tmp))

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_text(self.results_path, json.dumps(results, indent=1))

    # --- reading ------------------------------------------------------------------------

    def _json(self, path: Path) -> Any:
        if not path.is_file():
            raise UsageError(f"{self.path}: not an rnnkit run directory (no {path.name}); "
                             "train one with `rnnkit train --out DIR`")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: corrupted ({exc}); retrain or restore the file") from None

    def meta(self) -> dict[str, Any]:
        if not self.path.is_dir():
            raise UsageError(f"{self.path}: no such run directory")
        meta = self._json(self.config_path)
        if not isinstance(meta, dict) or "config" not in meta or "task" not in meta:
            raise UsageError(f"{self.config_path}: not an rnnkit run config")
        return meta

    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.meta()["config"])

    def vocab(self) -> Vocab:
        if not self.vocab_path.is_file():
            raise UsageError(f"{self.path}: run directory has no vocab.json; it is incomplete")
        return Vocab.load(self.vocab_path)

    def labels(self) -> dict[str, Any]:
        labels = self._json(self.labels_path)
        if not isinstance(labels, dict) or "classes" not in labels or "names" not in labels:
            raise UsageError(f"{self.labels_path}: corrupted label file")
        return labels

    def load_weights(self, model: nn.Module, path: Path | None = None) -> None:
        path = path or self.weights_path
        if not path.is_file():
            raise UsageError(f"{self.path}: no trained weights yet ({path.name}); finish or "
                             f"resume training with `rnnkit train --resume {self.path}`")
        try:
            with safetensors.safe_open(str(path), "pt") as f:
                sparse = json.loads((f.metadata() or {}).get(SPARSE_KEY, "{}"))
            if sparse:
                state = _expand_state(safetensors.torch.load_file(str(path)), sparse)
                missing, unexpected = model.load_state_dict(state, strict=False)
            else:
                missing, unexpected = safetensors.torch.load_model(model, str(path),
                                                                   strict=False)
        except Exception as exc:  # safetensors raises several types for damaged files
            raise UsageError(f"{path}: corrupted or foreign weights ({exc})") from None
        if missing or unexpected:
            raise UsageError(f"{path}: weights do not match config.json (missing "
                             f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")

    def load_trainer(self) -> dict[str, Any] | None:
        if not self.trainer_path.is_file():
            return None
        try:
            # On the CPU first: a GPU run resumes on another device, or on none.
            saved = torch.load(self.trainer_path, map_location="cpu", weights_only=True)
            return _expand_tree(saved)
        except Exception as exc:  # damaged file
            raise UsageError(f"{self.trainer_path}: corrupted trainer state ({exc}); delete it "
                             "to start over") from None
