"""Predictions from a trained classifier run: `Predictor.load(run).predict(texts)` (or
`rnnkit.load(run)`, which picks the runner from the run's task)."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnnkit.classification import collate
from rnnkit.config import RunConfig
from rnnkit.data.splits import encode_texts
from rnnkit.errors import UsageError
from rnnkit.models.classifier import Classifier
from rnnkit.ngrams import NgramFeatures
from rnnkit.rundir import RunDir
from rnnkit.runner import build_model
from rnnkit.data.tokenizers import cut
from rnnkit.data.vocab import Vocab


@dataclass
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"label": self.label, "probability": self.probability,
                "probabilities": self.probabilities}


class Predictor:
    task = "classify"

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
        model = build_model(cfg, vocab, len(labels["classes"]))
        run.load_weights(model)
        return cls(cfg, vocab, labels["names"], model)

    # Large inputs are pipelined: the calling thread tokenizes chunk after chunk while worker
    # threads run the model on the chunks already encoded (the model releases the GIL).
    PIPELINE_MIN_TEXTS = 2048
    PIPELINE_CHUNK = 1000  # texts tokenized, then sorted by length, at a time
    PIPELINE_BATCH = 128

    def probabilities(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """(N, C) class probabilities; texts are batched by length for speed."""
        if len(texts) >= self.PIPELINE_MIN_TEXTS and torch.get_num_threads() >= 2:
            return self._pipelined(texts)
        out = np.zeros((len(texts), len(self.names)), dtype=np.float32)
        ids, grams = self._encode(texts)
        order = np.argsort([len(a) for a in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start: start + batch_size]
            out[index] = self._run(ids, grams, index)
        return out

    def _encode(self, texts: list[str]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Token ids as the model reads them (cut), and the n-gram features (whole text)."""
        if self.ngrams is None:
            return encode_texts(texts, self.cfg.data, self.vocab), None
        full = encode_texts(texts, self.cfg.data, self.vocab, max_len=0)  # tokenize once
        ids = [cut(a, self.cfg.data.max_len, self.cfg.data.truncate) for a in full]
        return ids, [self.ngrams.features(a) for a in full]

    @torch.inference_mode()
    def _run(self, ids: list[np.ndarray], grams: list[np.ndarray] | None,
             index: np.ndarray) -> np.ndarray:
        batch = collate([ids[i] for i in index], self.vocab.pad_id,
                        ngrams=[grams[i] for i in index] if grams is not None else None)
        return self.model.log_probs(self.model(batch.ids, batch.lengths, batch.ngrams)).exp(
            ).numpy()

    def _pipelined(self, texts: list[str]) -> np.ndarray:
        """Two model workers, each with half the torch threads, beside the tokenizing thread.
        On 2 cores this is about 15% faster than tokenizing everything first (3,717 against
        3,238 reviews/s for imdb-seed in `benchmarks/imdb.py`). For the duration, torch's
        thread count and Python's thread switch interval (0.5 ms, so workers get the GIL back
        quickly between kernels) are changed, and restored after."""
        threads, interval = torch.get_num_threads(), sys.getswitchinterval()
        out = np.zeros((len(texts), len(self.names)), dtype=np.float32)
        jobs = []
        torch.set_num_threads(max(1, threads // 2))
        sys.setswitchinterval(min(interval, 0.0005))
        try:
            with ThreadPoolExecutor(2, thread_name_prefix="rnnkit-predict") as pool:
                for offset in range(0, len(texts), self.PIPELINE_CHUNK):
                    ids, grams = self._encode(texts[offset: offset + self.PIPELINE_CHUNK])
                    order = np.argsort([len(a) for a in ids], kind="stable")
                    for start in range(0, len(order), self.PIPELINE_BATCH):
                        index = order[start: start + self.PIPELINE_BATCH]
                        jobs.append((offset + index, pool.submit(self._run, ids, grams, index)))
                for index, job in jobs:
                    out[index] = job.result()
        finally:
            torch.set_num_threads(threads)
            sys.setswitchinterval(interval)
        return out

    def predict(self, texts: list[str]) -> list[Prediction]:
        if not texts:
            return []
        probs = self.probabilities(texts)
        return [Prediction(self.names[int(p.argmax())], float(p.max()),
                           {name: float(v) for name, v in zip(self.names, p)}) for p in probs]
