"""A two-branch classifier's n-gram branch retrained alone in variants, judged on validation.

    python benchmarks/ngram_branch.py runs/imdb-best7 [base,lr0.03,...]

The run's data settings give the splits and the hashed n-gram features; its saved encoder
gives the encoder's validation log-probabilities. Each variant (Adagrad rate, n-gram dropout,
a constant first weight, the n-gram order; otherwise the run's settings) trains the branch alone as training does (the
branches have separate losses and parameters), and prints per epoch on validation: the
branch's accuracy and log-loss, the mix with the saved encoder at the fitted weight (fit_mix,
on the same split, so a little optimistic) and at 0.5. The test split is never read.

The variant `lbfgs` fits no bag: scikit-learn's multinomial logistic regression (L2, L-BFGS to
convergence, C from 0.5, 2, 8, 32) on the same binary n-gram features, unscaled, as a
reference for what a fully fitted linear model of those features reaches.
"""
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from rnnkit.api import build_task
from rnnkit.classification import batch_plan, fit_mix
from rnnkit.models.classifier import NgramBag, mix_log_probs
from rnnkit.ngrams import NgramFeatures
from rnnkit.rundir import RunDir
from branch_mix import branch_log_probs  # this folder's script

VARIANTS = {
    "base": {},  # the run's settings (imdb-best: Adagrad 0.1, half the n-grams dropped,
    # weights from zero, uni- to trigrams, 5 epochs)
    "lr0.3": dict(lr=0.3),
    "lr0.03": dict(lr=0.03),
    "lr0.01": dict(lr=0.01),
    "drop0": dict(drop=0.0),
    "drop0-lr0.03": dict(drop=0.0, lr=0.03),
    "drop0.7": dict(drop=0.7),
    "drop0.3": dict(drop=0.3),
    "init0.05": dict(init=0.05),
    "order2": dict(order=2),
    "l2-1e-3": dict(l2=1e-3),
    "l2-1e-4": dict(l2=1e-4),
    "l2-1e-5": dict(l2=1e-5),
    "l2-1e-4-lr0.3": dict(l2=1e-4, lr=0.3),
    "nonb": dict(nb=False),  # presence features unscaled: plain logistic regression
    "nonb-lr0.3": dict(nb=False, lr=0.3),
    "nonb-lr0.03": dict(nb=False, lr=0.03),
    "nonb-drop0.3": dict(nb=False, drop=0.3),
    "norm": dict(norm=True),  # each text's sum scaled by 1/sqrt(its n-gram count)
    "norm-lr0.3": dict(norm=True, lr=0.3),
    "norm-lr1": dict(norm=True, lr=1.0),
    "norm-lr3": dict(norm=True, lr=3.0),
}


class NormalizedBag(NgramBag):
    """The bag with each text's features scaled by 1/sqrt(count): an l2-normalized binary
    vector, as TF-IDF baselines normalize theirs."""

    def forward(self, features, owner, batch_size):
        count = torch.bincount(owner, minlength=batch_size).clamp(min=1)
        logits = super().forward(features, owner, batch_size) - self.bias
        return logits * count.rsqrt().unsqueeze(1) + self.bias


class Branch:
    """The run's splits and its encoder's validation log-probabilities."""

    def __init__(self, path: str):
        run = RunDir(path)
        self.cfg = run.config()
        task = build_task(self.cfg, ("train", "valid"), run, lambda *a, **k: None)
        parts, self.labels = branch_log_probs(path)
        self.encoder = parts[0]
        self.vocab_size = len(task.data.vocab)
        self.train, self.valid = task.data.splits["train"], task.data.splits["valid"]
        self.train_labels = torch.from_numpy(np.asarray(self.train.labels, dtype=np.int64))
        self.num_classes = int(self.encoder.shape[1])
        self._features: dict = {}
        print(f"{path}: saved encoder {accuracy(self.encoder, self.labels):.4f}, n-grams "
              f"{accuracy(parts[1], self.labels):.4f} on validation", flush=True)

    def features(self, order: int, buckets: int):
        if (order, buckets) not in self._features:
            started = time.time()
            grams = NgramFeatures(order, buckets, self.vocab_size)
            train = [grams.features(a) for a in (self.train.full_ids or self.train.ids)]
            valid = [grams.features(a) for a in (self.valid.full_ids or self.valid.ids)]
            ratios = torch.from_numpy(grams.log_count_ratios(train, self.train.labels,
                                                                  self.num_classes))
            self._features[order, buckets] = train, valid, ratios
            print(f"features, order {order}: {time.time() - started:.0f} s", flush=True)
        return self._features[order, buckets]

    def run(self, name: str, order=None, buckets=None, lr=None, drop=None, epochs=None,
            init=0.0, batch_size=None, norm=False, l2=0.0, nb=True) -> None:
        """The run's own settings, but for those given."""
        data, train = self.cfg.data, self.cfg.train
        order = order or data.ngram_order
        buckets = buckets or data.ngram_buckets
        lr = lr or train.sparse_lr
        drop = self.cfg.model.ngram_dropout if drop is None else drop
        epochs = epochs or train.epochs
        batch_size = batch_size or train.batch_size
        torch.manual_seed(1)
        train, valid, ratios = self.features(order, buckets)
        bag = (NormalizedBag if norm else NgramBag)(buckets, self.num_classes, drop)
        bag.ratios.copy_(ratios if nb else torch.ones_like(ratios))
        if init:
            torch.nn.init.constant_(bag.weight.weight, init)
        table = torch.optim.Adagrad([bag.weight.weight], lr=lr)
        bias = torch.optim.Adam([bag.bias], lr=2e-3)
        lengths = np.fromiter((len(a) for a in self.train.ids), dtype=np.int64)
        for epoch in range(1, epochs + 1):
            bag.train()
            for index in batch_plan(lengths, batch_size, np.random.default_rng([1, epoch]), True):
                grams, owner = pack(train, index)
                loss = F.cross_entropy(bag(grams, owner, len(index)), self.train_labels[index])
                if l2:  # a penalty on the rows the batch touches, per occurrence
                    loss = loss + l2 * bag.weight(grams).pow(2).sum()
                table.zero_grad()
                bias.zero_grad()
                loss.backward()
                table.step()
                bias.step()
            bag.eval()
            with torch.no_grad():
                log_probs = torch.cat([
                    F.log_softmax(bag(*pack(valid, index), len(index)), -1)
                    for index in np.array_split(np.arange(len(valid)), 5)])
            weight = fit_mix([self.encoder, log_probs], self.labels)
            mixed = accuracy(mix_log_probs([self.encoder, log_probs], weight), self.labels)
            average = accuracy(mix_log_probs([self.encoder, log_probs], 0.5), self.labels)
            print(f"{name:<10} epoch {epoch}  n-grams {accuracy(log_probs, self.labels):.4f} "
                  f"log-loss {float(F.nll_loss(log_probs, self.labels)):.4f}  mix "
                  f"{mixed:.4f} (w {weight:.2f})  average {average:.4f}", flush=True)


def pack(features: list[np.ndarray], index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    picked = [features[i] for i in index]
    owner = np.repeat(np.arange(len(picked)), [len(f) for f in picked])
    return torch.from_numpy(np.concatenate(picked)), torch.from_numpy(owner)


def accuracy(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((log_probs.argmax(-1) == labels).float().mean())


def lbfgs(branch: Branch) -> None:
    import scipy.sparse as sparse
    from sklearn.linear_model import LogisticRegression

    cfg = branch.cfg.data
    train, valid, _ = branch.features(cfg.ngram_order, cfg.ngram_buckets)

    def matrix(features):
        rows = np.repeat(np.arange(len(features)), [len(f) for f in features])
        m = sparse.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(features))),
                              shape=(len(features), cfg.ngram_buckets))
        m.data[:] = 1.0  # presence, as the bag reads it
        return m

    x_train, x_valid = matrix(train), matrix(valid)
    used = np.unique(x_train.indices)
    x_train, x_valid = x_train[:, used], x_valid[:, used]
    for c in (0.5, 2.0, 8.0, 32.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, branch.train_labels.numpy())
        log_probs = torch.from_numpy(model.predict_log_proba(x_valid)).float()
        weight = fit_mix([branch.encoder, log_probs], branch.labels)
        mixed = accuracy(mix_log_probs([branch.encoder, log_probs], weight), branch.labels)
        print(f"lbfgs C={c:<4g} n-grams {accuracy(log_probs, branch.labels):.4f} log-loss "
              f"{float(F.nll_loss(log_probs, branch.labels)):.4f}  mix {mixed:.4f} "
              f"(w {weight:.2f})", flush=True)


def main() -> None:
    branch = Branch(sys.argv[1])
    for name in (sys.argv[2].split(",") if len(sys.argv) > 2 else VARIANTS):
        if name == "lbfgs":
            lbfgs(branch)
        else:
            branch.run(name, **VARIANTS[name])


if __name__ == "__main__":
    main()
