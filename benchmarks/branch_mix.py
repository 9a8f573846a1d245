"""How to fit the encoder's weight in a two-branch classifier's mix, judged on validation only.

    python benchmarks/branch_mix.py runs/imdb-ulmfit3 runs/imdb-best6 runs/exp/short-mix

For each run (a classifier with the n-gram branch), each branch's log-probabilities on the
validation split are computed once with the run's saved weights; then, 500 times, a random
half of the split fits the weight w (grid 0, 0.05, ..., 1) by one rule and the other half
scores it. Prints the mean held-out accuracy of: the accuracy rule (rnnkit's fit_mix: most
accurate, then least log-loss, then nearest 0.5), the log-loss rule, and the plain average.
The test split is never read.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from rnnkit.api import build_task
from rnnkit.classification import MIX_GRID, batch_plan, fit_mix
from rnnkit.models.classifier import mix_log_probs
from rnnkit.rundir import RunDir


@torch.inference_mode()
def branch_log_probs(path: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each branch's log-probabilities (N, C) on the run's validation split, and the labels."""
    run = RunDir(path)
    cfg = run.config()
    task = build_task(cfg, ("valid",), run, lambda *a, **k: None)
    model = task.build_model()
    run.load_weights(model)
    model.eval()
    source = task.data.splits["valid"]
    lengths = np.fromiter((len(a) for a in source.ids), dtype=np.int64)
    parts = [torch.zeros(len(source.ids), len(task.data.classes)) for _ in range(2)]
    for index in batch_plan(lengths, cfg.train.eval_batch_size, None, True):
        batch = task._batch("valid", index)
        branches = model(batch.ids, batch.lengths, batch.ngrams)
        if len(branches) != 2:
            raise SystemExit(f"{path}: not a run with the n-gram branch (--ngram-order > 0)")
        for part, logits in zip(parts, branches):
            part[torch.from_numpy(index)] = F.log_softmax(logits.float(), dim=-1)
    return parts, torch.from_numpy(np.asarray(source.labels, dtype=np.int64))


def least_log_loss(parts: list[torch.Tensor], labels: torch.Tensor) -> float:
    weights = sorted((k / MIX_GRID for k in range(MIX_GRID + 1)), key=lambda w: abs(w - 0.5))
    return min(weights, key=lambda w: float(F.nll_loss(mix_log_probs(parts, w), labels)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--halvings", type=int, default=500)
    args = parser.parse_args()
    print(f"{'run':<28} {'accuracy rule':>14} {'log-loss rule':>14} {'average':>8}")
    for path in args.runs:
        parts, labels = branch_log_probs(path)
        rng = np.random.default_rng(0)
        scores: dict[str, list[float]] = {"accuracy": [], "log-loss": [], "average": []}
        for _ in range(args.halvings):
            order = torch.from_numpy(rng.permutation(len(labels)))
            fit, held = order[: len(labels) // 2], order[len(labels) // 2:]
            fit_parts, held_parts = [p[fit] for p in parts], [p[held] for p in parts]
            for name, weight in (("accuracy", fit_mix(fit_parts, labels[fit])),
                                 ("log-loss", least_log_loss(fit_parts, labels[fit])),
                                 ("average", 0.5)):
                hits = mix_log_probs(held_parts, weight).argmax(-1) == labels[held]
                scores[name].append(float(hits.float().mean()))
        acc, loss, average = (100 * float(np.mean(scores[n])) for n in scores)
        print(f"{path:<28} {acc:>13.2f}% {loss:>13.2f}% {average:>7.2f}%")

if __name__ == "__main__":
    main()
