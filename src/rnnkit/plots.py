"""Training-curve and histogram plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnkit.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curve(history: list[dict], metric: str, path: Path) -> None:
    """Train loss and the validation metric per epoch, side by side."""
    if not history:
        return
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    left.plot(epochs, [h["valid_loss"] for h in history], "o-", label="valid")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    right.plot(epochs, [h[f"valid_{metric}"] for h in history], "o-", color="tab:green")
    right.set_xlabel("epoch")
    right.set_ylabel(f"valid {metric}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def plot_histogram(lengths: np.ndarray, cut: int, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    top = np.percentile(lengths, 99)
    ax.hist(np.minimum(lengths, top), bins=60, color="tab:blue")
    ax.axvline(cut, color="tab:red", linestyle="--", label=f"suggested max_len {cut}")
    ax.set_xlabel("tokens per text (clipped at the 99th percentile)")
    ax.set_ylabel("texts")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
