"""Training-curve and histogram plots (matplotlib, headless)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from rnnkit.files import atomic_write


# Fonts tried in turn for each glyph, so that class names and titles in Chinese, Japanese or
# Korean draw where such a font is installed (DejaVu Sans, matplotlib's own, has none).
CJK_FONTS = ["WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC",
             "Droid Sans Fallback", "AR PL UMing CN"]


def _pyplot():
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    available = {f.name for f in font_manager.fontManager.ttflist}
    plt.rcParams["font.family"] = ["DejaVu Sans", *[f for f in CJK_FONTS if f in available]]
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    # Without any such font the characters draw as boxes: a plot, not a reason to warn.
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font",
                            category=UserWarning)
    return plt


def plot_curve(history: list[dict], metric: str, path: Path) -> None:
    """Train loss and the validation metric per epoch, side by side."""
    if not history:
        return
    plt = _pyplot()
    # an epoch the time budget ended (see train.end_of_epoch) sits where it stopped
    epochs = [h["epoch"] - 1 + h["partial"] if "partial" in h else h["epoch"] for h in history]
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


def plot_confusion(matrix: list[list[int]], names: list[str], path: Path, title: str) -> None:
    """The confusion matrix as a heat map: rows true classes, columns predicted, each cell's
    count written in it and coloured by its share of the row (so rare classes read as well
    as common ones); the figure grows with the number of classes."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(names)
    shares = counts / np.maximum(1, counts.sum(axis=1, keepdims=True))
    side = max(3.5, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), [str(x)[:20] for x in names], rotation=45 if n > 4 else 0,
                  ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), [str(x)[:20] for x in names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    size = 10 if n <= 6 else 8 if n <= 12 else 6
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{counts[i, j]:,}", ha="center", va="center", fontsize=size,
                    color="white" if shares[i, j] > 0.5 else "black")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def check_tensorboard() -> None:
    """--tensorboard needs the tensorboard package; say so before anything is written."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        from rnnkit.errors import UsageError

        raise UsageError("--tensorboard needs the tensorboard package: pip install "
                         "'rnnkit[tensorboard]' (or set --tensorboard false)") from None


def write_tensorboard(folder: Path, history: list[dict]) -> None:
    """TensorBoard scalars (train/valid loss, the validation metric, learning rate, ...) of
    every epoch in `history`, at each epoch's optimizer step. Like metrics.jsonl, the folder
    is rewritten from the history, so an interrupted and resumed run shows each epoch once."""
    import shutil
    import tempfile

    from torch.utils.tensorboard import SummaryWriter

    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        writer = SummaryWriter(log_dir=str(fresh))
        for row in history:
            for key, value in row.items():
                if key in ("epoch", "step") or isinstance(value, bool) or not isinstance(
                        value, (int, float)):
                    continue
                split, _, name = key.partition("_")
                tag = f"{split}/{name}" if split in ("train", "valid") and name else key
                writer.add_scalar(tag, value, global_step=row["step"])
        writer.close()
        if folder.exists():
            shutil.rmtree(folder)
        fresh.rename(folder)
    finally:
        if fresh.exists():
            shutil.rmtree(fresh, ignore_errors=True)
