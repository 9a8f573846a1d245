"""Predictions from a trained classifier run: `Predictor.load(run).predict(texts)`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnnkit.classification import collate
from rnnkit.config import DataConfig, RunConfig
from rnnkit.data import encode_texts, truncate
from rnnkit.errors import UsageError
from rnnkit.models.classifier import Classifier
from rnnkit.ngrams import NgramFeatures
from rnnkit.rundir import RunDir
from rnnkit.vocab import Vocab


@dataclass
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"label": self.label, "probability": self.probability,
                "probabilities": self.probabilities}


class Predictor:
    def __init__(self, cfg: RunConfig, vocab: Vocab, names: list[str], model: Classifier):
        self.cfg = cfg
        self.vocab = vocab
        self.names = names
        self.model = model.eval()
        self.ngrams = (NgramFeatures(cfg.data.ngram_order, cfg.data.ngram_buckets, len(vocab))
                       if cfg.data.ngram_order else None)

    @classmethod
    def load(cls, path: Path | str) -> "Predictor":
        run = RunDir(path)
        meta = run.meta()
        if meta["task"] != "classify":
            raise UsageError(f"{path}: is a {meta['task']} run; predict needs a classifier "
                             "(use `rnnkit generate` or `rnnkit score` for language models)")
        cfg, vocab, labels = run.config(), run.vocab(), run.labels()
        buckets = cfg.data.ngram_buckets if cfg.data.ngram_order else 0
        model = Classifier(len(vocab), len(labels["classes"]), cfg.model, vocab.pad_id, buckets)
        run.load_weights(model)
        return cls(cfg, vocab, labels["names"], model)

    @torch.inference_mode()
    def probabilities(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """(N, C) class probabilities; texts are batched by length for speed."""
        grams = None
        if self.ngrams is not None:  # the n-gram branch reads the whole text: tokenize once
            full = encode_texts(texts, self._untruncated(), self.vocab)
            grams = [self.ngrams.features(a) for a in full]
            data = self.cfg.data
            ids = [np.asarray(truncate(a.tolist(), data.max_len, data.truncate), dtype=np.int64)
                   if data.max_len and len(a) > data.max_len else a for a in full]
        else:
            ids = encode_texts(texts, self.cfg.data, self.vocab)
        out = np.zeros((len(ids), len(self.names)), dtype=np.float32)
        order = np.argsort([len(a) for a in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start: start + batch_size]
            batch = collate([ids[i] for i in index], self.vocab.pad_id,
                            ngrams=[grams[i] for i in index] if grams is not None else None)
            log_probs = Classifier.log_probs(self.model(batch.ids, batch.lengths, batch.ngrams))
            out[index] = log_probs.exp().numpy()
        return out

    def _untruncated(self) -> DataConfig:
        return dataclasses.replace(self.cfg.data, max_len=0)

    def predict(self, texts: list[str]) -> list[Prediction]:
        if not texts:
            return []
        probs = self.probabilities(texts)
        return [Prediction(self.names[int(p.argmax())], float(p.max()),
                           {name: float(v) for name, v in zip(self.names, p)}) for p in probs]
