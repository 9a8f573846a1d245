"""Run directories that describe themselves.

    RUN/config.json       what was trained: the full RunConfig, task, sizes, rnnkit version
    RUN/vocab.json        the vocabulary
    RUN/labels.json       class labels (classifiers)
    RUN/model.safetensors the best weights so far (by validation)
    RUN/trainer.pt        everything needed to resume exactly: latest weights, optimizer,
                          RNG, position in the epoch, carried LM state (tensors and plain
                          values only; loaded with weights_only=True)
    RUN/checksums.json    SHA-256 of model.safetensors and trainer.pt, checked on every load
    RUN/metrics.jsonl     one line per epoch (rewritten from trainer.pt's history)
    RUN/curve.png         training curve
    RUN/results.json      final validation and test metrics
Every file is written atomically, and a new run directory appears whole: it is assembled in a
hidden staging folder beside it (config, vocabulary, labels and the step-0 trainer state) and
renamed into place, so any run directory can be resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from rnnkit import __version__
from rnnkit.config import RunConfig
from rnnkit.errors import UsageError
from rnnkit.files import atomic_write, atomic_write_text
from rnnkit.data.vocab import Vocab


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
    def __init__(self, path: Path | str, writes: bool = True):
        self.path = Path(path)
        # False in the processes of a distributed run other than rank 0: they read the run
        # (resume) and compute as rank 0 does, but every write is rank 0's.
        self.writes = writes

    config_path = property(lambda self: self.path / "config.json")
    vocab_path = property(lambda self: self.path / "vocab.json")
    labels_path = property(lambda self: self.path / "labels.json")
    weights_path = property(lambda self: self.path / "model.safetensors")
    trainer_path = property(lambda self: self.path / "trainer.pt")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    results_path = property(lambda self: self.path / "results.json")
    curve_path = property(lambda self: self.path / "curve.png")
    checksums_path = property(lambda self: self.path / "checksums.json")

    # --- a new run ----------------------------------------------------------------------

    def check_new(self) -> None:
        """Refuse an --out that cannot become a new run, before any data is read."""
        out = self.path
        for parent in out.parents:
            if parent.exists() and not parent.is_dir():
                raise UsageError(f"--out {out}: {parent} is a file, not a folder")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out}: is a file; give a folder for the run")
        if self.config_path.exists():
            raise UsageError(f"{out}: a run already exists here; use --resume to continue it "
                             "or choose another --out")
        if out.is_dir() and any(out.iterdir()):
            raise UsageError(f"--out {out}: the folder is not empty and is not an rnnkit run; "
                             "choose a new or empty folder (rnnkit never overwrites files)")
        ancestor = next(p for p in (out, *out.parents) if p.exists())
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out}: cannot write in {ancestor} (permission denied)")

    def staging(self) -> Path:
        return self.path.parent / f".{self.path.name}.rnnkit-staging-{os.getpid()}"

    def create(self, cfg: RunConfig, vocab: Vocab, meta: dict[str, Any],
               labels: dict[str, Any] | None, trainer_state: dict[str, Any]) -> None:
        """Write a new run (config, vocabulary, labels, the step-0 trainer state) into a
        staging folder and rename it into place: the run directory appears whole or not at
        all, and can always be resumed."""
        if not self.writes:
            return
        self.check_new()
        for stale in self.path.parent.glob(f".{self.path.name}.rnnkit-staging-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed process
        stage = RunDir(self.staging())
        try:
            stage.path.mkdir(parents=True)
            vocab.save(stage.vocab_path)
            if labels is not None:
                atomic_write_text(stage.labels_path, json.dumps(labels, indent=1))
            record = {"rnnkit": __version__, "task": cfg.model.task, **meta,
                      "config": cfg.to_dict()}
            atomic_write_text(stage.config_path, json.dumps(record, indent=1))
            stage.save_trainer(trainer_state)
            stage.record_checksums(stage.vocab_path, stage.labels_path)
            if self.path.is_dir():
                self.path.rmdir()  # empty (checked): rename cannot replace it otherwise
            os.rename(stage.path, self.path)
        except OSError as exc:
            raise UsageError(f"--out {self.path}: cannot write the run ({exc.strerror or exc})"
                             ) from None
        finally:
            if stage.path.exists():
                shutil.rmtree(stage.path, ignore_errors=True)

    def remove_stale_temporaries(self) -> None:
        """Temporary files of a writer that was killed mid-write (atomic_write's `.NAME.*.tmp`)."""
        if not self.writes:
            return
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    # --- writing ------------------------------------------------------------------------

    def _checked_write(self, path: Path, write: Any) -> None:
        """atomic_write that records the new file's SHA-256 in checksums.json. Both the old
        and the new sum are listed while the file is replaced, so a kill at any moment leaves
        a file whose sum is listed."""
        def write_and_record(tmp: Path) -> None:
            write(tmp)
            sums = self._checksums()
            previous = sums.get(path.name, [])
            sums[path.name] = [sha256_file(tmp)] + previous[:1]
            atomic_write_text(self.checksums_path, json.dumps(sums, indent=1))

        atomic_write(path, write_and_record)
        sums = self._checksums()
        sums[path.name] = sums.get(path.name, [])[:1]
        atomic_write_text(self.checksums_path, json.dumps(sums, indent=1))

    def _checksums(self) -> dict[str, list[str]]:
        if not self.checksums_path.is_file():
            return {}
        try:
            sums = json.loads(self.checksums_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.checksums_path}: corrupted ({exc}); restore the file or "
                             "retrain") from None
        return sums if isinstance(sums, dict) else {}

    def record_checksums(self, *paths: Path) -> None:
        """Record the sums of files written once (vocabulary, labels)."""
        sums = self._checksums()
        for path in paths:
            if path.is_file():
                sums[path.name] = [sha256_file(path)]
        atomic_write_text(self.checksums_path, json.dumps(sums, indent=1))

    def verify(self, path: Path) -> None:
        """A weights or trainer file whose SHA-256 is not the one recorded when it was written
        is damaged: an error naming it, never silently used."""
        known = self._checksums().get(path.name)
        if known is None:
            return  # a run written before checksums were recorded
        if sha256_file(path) not in known:
            raise UsageError(f"{path}: checksum mismatch: the file changed after rnnkit wrote "
                             "it (damaged or edited); restore it or retrain")

    def save_weights(self, model: nn.Module) -> None:
        if not self.writes:
            return
        tensors, metadata = _compact_state(model)
        if tensors is None:
            self._checked_write(self.weights_path,
                                lambda tmp: safetensors.torch.save_model(model, str(tmp)))
        else:
            self._checked_write(self.weights_path, lambda tmp: safetensors.torch.save_file(
                tensors, str(tmp), metadata=metadata))

    def save_trainer(self, state: dict[str, Any]) -> None:
        if not self.writes:
            return
        compact = _compact_tree(state)
        self._checked_write(self.trainer_path, lambda tmp: torch.save(compact, tmp))

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """metrics.jsonl from the epochs recorded in the trainer state, one line each."""
        if not self.writes:
            return
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in history))

    def write_results(self, results: dict[str, Any]) -> None:
        if not self.writes:
            return
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
        self.verify(self.vocab_path)
        return Vocab.load(self.vocab_path)

    def labels(self) -> dict[str, Any]:
        labels = self._json(self.labels_path)
        self.verify(self.labels_path)
        if not isinstance(labels, dict) or not isinstance(labels.get("classes"), list) \
                or not isinstance(labels.get("names"), list):
            raise UsageError(f"{self.labels_path}: corrupted label file (needs lists "
                             "'classes' and 'names')")
        expected = self.meta().get("num_classes")
        sizes = {len(labels["classes"]), len(labels["names"])}
        if sizes != {expected or len(labels["classes"])}:
            raise UsageError(f"{self.labels_path}: {len(labels['classes'])} classes and "
                             f"{len(labels['names'])} names, but the model was trained with "
                             f"{expected} classes; restore the run's labels.json")
        return labels

    def load_weights(self, model: nn.Module, path: Path | None = None) -> None:
        path = path or self.weights_path
        if not path.is_file():
            raise UsageError(f"{self.path}: no trained weights yet ({path.name}); finish or "
                             f"resume training with `rnnkit train --resume {self.path}`")
        self.verify(path)
        try:
            with safetensors.safe_open(str(path), "pt") as f:
                sparse = json.loads((f.metadata() or {}).get(SPARSE_KEY, "{}"))
            if sparse:
                state = _expand_state(safetensors.torch.load_file(str(path)), sparse)
                missing, unexpected = model.load_state_dict(state, strict=False)
            else:
                missing, unexpected = safetensors.torch.load_model(model, str(path),
                                                                   strict=False)
        except Exception as exc:  # safetensors and torch raise several types for these
            raise UsageError(f"{path}: corrupted weights or weights of another model "
                             f"({_first_line(exc)})") from None
        missing = [k for k in missing if k not in getattr(model, "optional_state", ())]
        if missing or unexpected:
            raise UsageError(f"{path}: weights do not match config.json (missing "
                             f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")

    def load_trainer(self) -> dict[str, Any] | None:
        if not self.trainer_path.is_file():
            return None
        self.verify(self.trainer_path)
        try:
            # On the CPU first: a GPU run resumes on another device, or on none.
            saved = torch.load(self.trainer_path, map_location="cpu", weights_only=True)
            return _expand_tree(saved)
        except Exception as exc:  # damaged file
            raise UsageError(f"{self.trainer_path}: corrupted trainer state "
                             f"({_first_line(exc)}); restore it or train a new run") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    """torch's messages run over several lines; ours are one."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
