"""The classification task: batching, the loss of a batch, and evaluation.

Batches are length-bucketed by default: the epoch's shuffled texts are cut into pools of 50
batches, each pool sorted by length and split into batches, and the batches shuffled. Each
batch is padded only to its own longest text, and the model masks padding exactly, so this
changes speed, never results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rnnkit import distributed
from rnnkit.config import RunConfig
from rnnkit.data.splits import ClassificationData, LabeledSplit, load_classification
from rnnkit.data.embeddings import embedding_matrix
from rnnkit.metrics import classification_report
from rnnkit.models.classifier import Classifier, mix_log_probs
from rnnkit.ngrams import NgramFeatures
from rnnkit.precision import autocast
from rnnkit.runner import build_model
from rnnkit.data.vocab import Vocab

POOL_BATCHES = 50


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T) right-padded token ids
    lengths: torch.Tensor  # (B,)
    labels: torch.Tensor  # (B,)
    ngrams: tuple[torch.Tensor, torch.Tensor] | None = None  # (features, owner row)

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    def to(self, device: torch.device) -> "Batch":
        if device.type == "cpu":
            return self
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.ids), move(self.lengths), move(self.labels),
                     tuple(move(t) for t in self.ngrams) if self.ngrams else None)


def collate(ids: list[np.ndarray], pad_id: int, labels: np.ndarray | None = None,
            ngrams: list[np.ndarray] | None = None) -> Batch:
    lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
    matrix = np.full((len(ids), int(lengths.max())), pad_id, dtype=np.int64)
    for row, a in enumerate(ids):
        matrix[row, : len(a)] = a
    features = None
    if ngrams is not None:
        owner = np.repeat(np.arange(len(ngrams)), [len(f) for f in ngrams])
        features = (torch.from_numpy(np.concatenate(ngrams)), torch.from_numpy(owner))
    return Batch(torch.from_numpy(matrix), torch.from_numpy(lengths),
                 torch.from_numpy(labels if labels is not None else np.zeros(len(ids), np.int64)),
                 features)


def batch_plan(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
               bucket: bool) -> list[np.ndarray]:
    """Index arrays, one per batch. rng=None: evaluation order (sorted by length)."""
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    if not bucket:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start: start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def branch_note(metrics: dict) -> str:
    """Each branch's own accuracy, for a run with the n-gram branch ("" without one)."""
    branches = metrics.get("branch_accuracy")
    if not branches:
        return ""
    return (f"encoder alone {branches['encoder']:.4f}, n-grams alone {branches['ngrams']:.4f}, "
            f"encoder weight {metrics.get('encoder_weight', 0.5):.2f}")


MIX_GRID = 20  # the encoder's weight is fitted among 0, 1/20, ..., 1


def fit_mix(parts: list[torch.Tensor], labels: torch.Tensor) -> float:
    """The encoder's weight w in w * encoder + (1 - w) * n-grams (log-probabilities,
    renormalized) that is most accurate on these examples; among equally accurate weights,
    the one of least log-loss, then the one nearest 0.5 (the plain average). Accuracy, the
    metric that keeps an epoch's weights, and not log-loss alone: fitted on one half of a
    validation split and scored on the other, it was as good or better on every run tried
    (IMDB and short reviews), where log-loss alone fell below the plain average once."""
    best, best_key = 0.5, (-1.0, 0.0)
    for k in sorted(range(MIX_GRID + 1), key=lambda k: abs(k - MIX_GRID / 2)):
        weight = k / MIX_GRID
        mixed = mix_log_probs(parts, weight)
        key = (float((mixed.argmax(-1) == labels).sum()), -float(F.nll_loss(mixed, labels)))
        more_accurate = key[0] > best_key[0]
        if more_accurate or (key[0] == best_key[0] and key[1] > best_key[1] + 1e-12):
            best, best_key = weight, key
    return best


class ClassificationTask:
    metric = "accuracy"
    higher_is_better = True

    def __init__(self, cfg: RunConfig, data: ClassificationData):
        self.cfg = cfg
        self.data = data
        self.pad_id = data.vocab.pad_id
        self.ngrams: NgramFeatures | None = None
        self._features: dict[str, list[np.ndarray]] = {}
        if cfg.data.ngram_order:
            self.ngrams = NgramFeatures(cfg.data.ngram_order, cfg.data.ngram_buckets,
                                        len(data.vocab))

    @classmethod
    def load(cls, cfg: RunConfig, want: tuple[str, ...], vocab: Vocab | None = None,
             labels: dict | None = None, log: Any = print, subwords: bytes | None = None,
             known: Sequence[str] = ()) -> "ClassificationTask":
        """Read the splits in `want`; a saved run's vocabulary and labels are reused; a new
        vocabulary also takes the `known` words (an --init-from source's)."""
        classes = labels["classes"] if labels is not None else None
        data = load_classification(cfg.data, cfg.train.seed, want, vocab, classes, subwords,
                                   known=known)
        for note in data.notes:
            log(note)
        return cls(cfg, data)

    def meta(self) -> dict[str, Any]:
        """What config.json records about the data."""
        return {"vocab_size": len(self.data.vocab), "num_classes": len(self.data.classes)}

    def labels(self) -> dict[str, Any]:
        return {"classes": self.data.classes, "names": self.data.label_names}

    def sizes(self) -> dict[str, int]:
        return {split: len(part.ids) for split, part in self.data.splits.items()}

    def token_loss(self, loss: torch.Tensor) -> float:
        return float(loss)

    def epoch_extras(self, train_loss: float, valid: dict) -> dict[str, float]:
        extras = {f"valid_{name}_accuracy": accuracy
                  for name, accuracy in valid.get("branch_accuracy", {}).items()}
        if "encoder_weight" in valid:
            extras["encoder_weight"] = valid["encoder_weight"]
        return extras

    def valid_note(self, valid: dict) -> str:
        alone = branch_note(valid)
        return f" ({alone})" if alone else ""

    def live(self, loss: float, rate: float) -> dict[str, str]:
        return {"loss": f"{loss:.3f}", "ex/s": f"{rate:,.0f}"}

    def summary(self, metrics: dict) -> str:
        alone = branch_note(metrics)
        return (f"accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
                f"({metrics['examples']:,} examples){'; ' + alone if alone else ''}")

    def build_model(self) -> Classifier:
        return build_model(self.cfg, self.data.vocab, len(self.data.classes))

    def prepare(self, model: Classifier, log=print) -> None:
        """Fill what comes from outside the weights: pretrained embedding rows and the n-gram
        log-count ratios of the training split."""
        cfg = self.cfg
        if cfg.data.embeddings:
            itos = self.data.vocab.itos
            freq = np.bincount(np.concatenate(self.data.splits["train"].ids), minlength=len(itos))
            counts = {itos[i]: int(freq[i]) for i in np.flatnonzero(freq)}
            matrix, coverage = embedding_matrix(self.data.vocab, cfg.data.embeddings,
                                                cfg.model.embedding_dim,
                                                cfg.data.embeddings_unknown, counts,
                                                cfg.train.seed)
            model.encoder.embedding.weight.data.copy_(matrix)
            log(str(coverage))
        if self.ngrams is not None and model.ngrams is not None:
            train = self.data.splits["train"]
            ratios = self.ngrams.log_count_ratios(self.features("train"), train.labels,
                                                  len(self.data.classes))
            model.ngrams.ratios.copy_(torch.from_numpy(ratios))

    def features(self, split: str) -> list[np.ndarray]:
        assert self.ngrams is not None
        if split not in self._features:
            source = self.data.splits[split]
            self._features[split] = [self.ngrams.features(a)
                                     for a in (source.full_ids or source.ids)]
        return self._features[split]

    def _batch(self, split: str, index: np.ndarray) -> Batch:
        source: LabeledSplit = self.data.splits[split]
        ngrams = [self.features(split)[i] for i in index] if self.ngrams is not None else None
        return collate([source.ids[i] for i in index], self.pad_id, source.labels[index], ngrams)

    def train_batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's global batches (the same plan in every process of a distributed run)."""
        split = self.data.splits["train"]
        lengths = np.fromiter((len(a) for a in split.ids), dtype=np.int64)
        rng = np.random.default_rng([self.cfg.train.seed, epoch])
        return batch_plan(lengths, self.cfg.train.batch_size * distributed.world_size(), rng,
                          self.cfg.train.bucket)

    def train_step(self, model: Classifier, index: np.ndarray, state: None
                   ) -> tuple[torch.Tensor, int, None]:
        if distributed.active():  # this process's part of the global batch
            index = np.array_split(index, distributed.world_size())[distributed.rank()]
            if not len(index):  # a last batch smaller than the world: nothing here
                trainable = [p for p in model.parameters() if p.requires_grad]
                return sum(p.sum() for p in trainable) * 0.0, 0, None
        device = _device(model)
        batch = self._batch("train", index).to(device)
        with autocast(self.cfg.train.precision, device):  # bf16 matmuls and RNN, if asked
            branches = model(batch.ids, batch.lengths, batch.ngrams)
        loss = sum(F.cross_entropy(logits.float(), batch.labels) for logits in branches)
        return loss, batch.size, None  # type: ignore[return-value]

    @torch.inference_mode()
    def evaluate(self, model: Classifier, split: str, fit: bool = False) -> dict:
        """Metrics of `model` on `split`. fit (validation during training): first fit the
        encoder's weight in the mix of the two branches on this split (see fit_mix)."""
        model.eval()
        source = self.data.splits[split]
        lengths = np.fromiter((len(a) for a in source.ids), dtype=np.int64)
        parts: list[torch.Tensor] | None = None  # each branch's log-probabilities, in order
        for index in batch_plan(lengths, self.cfg.train.eval_batch_size, None, True):
            batch = self._batch(split, index).to(_device(model))
            branches = model(batch.ids, batch.lengths, batch.ngrams)
            if parts is None:
                parts = [torch.zeros(len(source.ids), b.shape[1]) for b in branches]
            rows = torch.from_numpy(index)
            for part, logits in zip(parts, branches):
                part[rows] = F.log_softmax(logits.float(), dim=-1).cpu()
        parts = parts or [torch.zeros(0, len(self.data.classes))]
        labels = torch.from_numpy(np.asarray(source.labels, dtype=np.int64))
        if fit and len(parts) > 1:
            model.mix.fill_(fit_mix(parts, labels))
        log_probs = model.log_probs_of(parts)
        pred = log_probs.argmax(-1).numpy()
        report = classification_report(source.labels, pred, self.data.label_names)
        loss = float(F.nll_loss(log_probs, labels, reduction="sum"))
        report["loss"] = loss / max(1, len(pred))
        if len(parts) > 1:  # each branch on its own, to see what each brings
            report["branch_accuracy"] = {
                name: int((part.argmax(-1) == labels).sum()) / max(1, len(pred))
                for name, part in zip(("encoder", "ngrams"), parts)}
            report["encoder_weight"] = round(float(model.mix), 4)
        return report
