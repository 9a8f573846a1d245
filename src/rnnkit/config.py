"""Typed run configuration: data, model and training settings, and the named presets.

A run is described by one `RunConfig` made of three frozen dataclasses. Presets live in
`PRESETS`; the command line builds its flags from the same fields, so every field of a preset
can be overridden (`--hidden-size 128`). The whole config is saved as `config.json` in each run
directory, which is enough to rebuild the model.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from rnnkit.errors import UsageError

TASKS = ("classify", "lm")
CELLS = ("lstm", "gru", "rnn")
POOLINGS = ("last", "mean", "max", "meanmax", "attention")
TOKENIZERS = ("basic", "tutorial", "whitespace", "char")


@dataclass(frozen=True)
class DataConfig:
    dataset: str | None = None  # a registered dataset name (imdb, ptb, ...) or None for files
    train: str | None = None  # paths of user files; override the dataset's splits
    valid: str | None = None
    test: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    tokenizer: str = "basic"
    lowercase: bool = True
    max_len: int = 0  # classification: keep at most this many tokens (0 = all)
    truncate: str = "head"  # head | tail | head+tail: which tokens survive the cut
    min_freq: int = 1
    max_vocab: int = 0  # 0 = no limit
    valid_fraction: float = 0.1  # carved from train when no valid split is given
    limit_train: int = 0  # use only the first N training examples (after shuffling)
    add_eos: bool = True  # language models: append <eos> to each line
    embeddings: str | None = None  # a registered name (glove-6b-50d) or a vectors file
    embeddings_unknown: str = "random"  # random | mean: rows for words the vectors lack
    ngram_order: int = 0  # classification: > 0 adds an n-gram bag branch up to this order
    ngram_buckets: int = 1 << 22  # hashed n-gram table size

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_choice("tokenizer", self.tokenizer, TOKENIZERS)
        _check_choice("truncate", self.truncate, ("head", "tail", "head+tail"))
        _check_choice("embeddings_unknown", self.embeddings_unknown, ("random", "mean"))
        _check_range("max_len", self.max_len, 0)
        _check_range("min_freq", self.min_freq, 1)
        _check_range("max_vocab", self.max_vocab, 0)
        _check_range("limit_train", self.limit_train, 0)
        _check_range("ngram_order", self.ngram_order, 0, 4)
        _check_range("ngram_buckets", self.ngram_buckets, 1024, MAX_NGRAM_BUCKETS)
        if not 0.0 <= self.valid_fraction < 1.0:
            raise UsageError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")


@dataclass(frozen=True)
class ModelConfig:
    task: str = "classify"
    cell: str = "lstm"
    embedding_dim: int = 50
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.25  # on non-recurrent connections (embeddings, between layers, output)
    pooling: str = "last"  # classification: how a sequence of states becomes one vector
    freeze_embeddings: bool = False
    tie_weights: bool = False  # language models: decoder shares the embedding matrix
    softmax: str = "full"  # language models: full | adaptive (exact, normalized, faster)
    cutoffs: str = "2000,6000"  # adaptive softmax: where the head and tail clusters split
    init_range: float = 0.0  # > 0: every weight uniform in [-init_range, init_range]
    ngram_dropout: float = 0.0  # classification: share of n-gram features dropped in training

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_choice("task", self.task, TASKS)
        _check_choice("cell", self.cell, CELLS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("softmax", self.softmax, ("full", "adaptive"))
        if self.softmax == "adaptive" and self.tie_weights:
            raise UsageError("the adaptive softmax cannot be tied to the embeddings; "
                             "set --tie-weights false")
        cutoffs = self.cutoff_list()
        if any(c <= 0 for c in cutoffs) or cutoffs != sorted(set(cutoffs)):
            raise UsageError(f"--cutoffs must be increasing positive integers, got "
                             f"{self.cutoffs!r}")
        if self.tie_weights and self.embedding_dim != self.hidden_size:
            raise UsageError(f"--tie-weights needs --embedding-dim equal to --hidden-size "
                             f"({self.embedding_dim} != {self.hidden_size})")
        _check_range("embedding_dim", self.embedding_dim, 1, MAX_WIDTH)
        _check_range("hidden_size", self.hidden_size, 1, MAX_WIDTH)
        _check_range("num_layers", self.num_layers, 1, MAX_LAYERS)
        if self.init_range < 0:
            raise UsageError(f"--init-range must not be negative, got {self.init_range}")
        for name in ("dropout", "ngram_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.task == "lm" and self.bidirectional:
            raise UsageError("a language model cannot be bidirectional: set --bidirectional false")
        if self.tie_weights and self.task != "lm":
            raise UsageError("tie_weights applies to language models only")


    def cutoff_list(self) -> list[int]:
        try:
            return [int(c) for c in self.cutoffs.split(",")]
        except ValueError:
            raise UsageError(f"--cutoffs must be comma-separated integers, got "
                             f"{self.cutoffs!r}") from None


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    sparse_lr: float = 0.1  # Adagrad rate for sparse tables (the n-gram branch)
    batch_size: int = 24
    eval_batch_size: int = 256  # classification only; LM evaluation is one exact stream
    num_steps: int = 35  # language models: BPTT window length
    epochs: int = 10
    max_minutes: float = 0.0  # stop training (and checkpoint) after this many minutes; 0 = none
    clip: float = 0.0  # max global gradient norm; 0 = no clipping
    loss_scale: str = "mean"  # mean | sum_steps (Zaremba: sum over steps of the batch mean)
    schedule: str = "none"  # none | step | plateau | cosine
    lr_decay: float = 0.5  # step: factor per epoch once past decay_start; plateau: factor
    decay_start: int = 0  # step: epochs at the full rate before decaying
    patience: int = 0  # early stopping: epochs without validation improvement; 0 = off
    bucket: bool = True  # classification: batch reviews of similar length together
    seed: int = 1
    threads: int = 0  # torch threads; 0 = torch's default
    precision: str = "fp32"  # fp32 | bf16 (autocast matmuls to bfloat16; weights stay fp32)
    device: str = "auto"  # auto (a CUDA GPU if one is visible, else the CPU) | cpu | cuda[:N]

    def __post_init__(self) -> None:
        _check_finite(self)
        check_device_name(self.device)
        _check_choice("optimizer", self.optimizer, ("adam", "adamw", "sgd"))
        _check_choice("loss_scale", self.loss_scale, ("mean", "sum_steps"))
        _check_choice("schedule", self.schedule, ("none", "step", "plateau", "cosine"))
        _check_choice("precision", self.precision, ("fp32", "bf16"))
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        _check_range("eval_batch_size", self.eval_batch_size, 1, MAX_BATCH)
        _check_range("num_steps", self.num_steps, 1, MAX_BATCH)
        _check_range("epochs", self.epochs, 1, 1_000_000)
        _check_range("patience", self.patience, 0)
        _check_range("decay_start", self.decay_start, 0)
        _check_range("threads", self.threads, 0, 4096)
        _check_range("seed", self.seed, 0, MAX_SEED)
        for name in ("lr", "sparse_lr"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "clip", "max_minutes"):
            if getattr(self, name) < 0:
                raise UsageError(f"{flag(name)} must not be negative, got {getattr(self, name)}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise UsageError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        try:
            return cls(
                data=DataConfig(**raw["data"]),
                model=ModelConfig(**raw["model"]),
                train=TrainConfig(**raw["train"]),
                preset=raw.get("preset"),
            )
        except (KeyError, TypeError) as exc:
            raise UsageError(f"config does not match this rnnkit version ({exc})") from None

    def override(self, **values: Any) -> "RunConfig":
        """Return a copy with fields replaced by flat name (`hidden_size=128`)."""
        groups: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "train": {}}
        for name, value in values.items():
            group = FIELD_GROUP.get(name)
            if group is None:
                raise UsageError(f"unknown setting {name!r}")
            groups[group][name] = value
        return RunConfig(
            data=dataclasses.replace(self.data, **groups["data"]),
            model=dataclasses.replace(self.model, **groups["model"]),
            train=dataclasses.replace(self.train, **groups["train"]),
            preset=self.preset,
        )


# Bounds that no real run reaches; beyond them a setting is a typo. Whether a model of
# allowed sizes fits in memory is checked once the vocabulary is known (api.check_memory).
MAX_WIDTH = 1 << 16  # embedding_dim, hidden_size
MAX_LAYERS = 64
MAX_BATCH = 1 << 20
MAX_NGRAM_BUCKETS = 1 << 30
MAX_SEED = 2 ** 32 - 1  # the per-epoch torch seed is seed * 1000 + epoch, below 2^64


def flag(name: str) -> str:
    """The command-line flag of a config field: hidden_size -> --hidden-size."""
    return "--" + name.replace("_", "-")


def _check_finite(config: Any) -> None:
    """NaN and infinity pass every comparison test unnoticed: refuse them by name first."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.type == "float" and not (isinstance(value, (int, float))
                                      and math.isfinite(value)):
            raise UsageError(f"{flag(f.name)} must be a finite number, got {value}")


def check_device_name(name: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise UsageError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{flag(name)} must be one of {', '.join(choices)}; got {value!r}")


def _check_range(name: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise UsageError(f"{flag(name)} must be {bound}, got {value}")


FIELD_GROUP: dict[str, str] = {
    f.name: group
    for group, klass in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))
    for f in dataclasses.fields(klass)
}

# --- presets --------------------------------------------------------------------------------
# Each preset lists only what differs from the dataclass defaults.

_ZAREMBA = {
    # name: (hidden, steps, init, dropout, epochs at full lr, decay, total epochs, clip)
    "ptb-small": (200, 20, 0.1, 0.0, 4, 0.5, 13, 5.0),
    "ptb-medium": (650, 35, 0.05, 0.5, 6, 1 / 1.2, 39, 5.0),
    "ptb-large": (1500, 35, 0.04, 0.65, 14, 1 / 1.15, 55, 10.0),
}


def _zaremba(name: str) -> dict[str, dict[str, Any]]:
    hidden, steps, init, dropout, keep, decay, epochs, clip = _ZAREMBA[name]
    return {
        "data": dict(dataset="ptb", tokenizer="whitespace", lowercase=False),
        "model": dict(task="lm", embedding_dim=hidden, hidden_size=hidden, num_layers=2,
                      dropout=dropout, init_range=init),
        "train": dict(optimizer="sgd", lr=1.0, batch_size=20, num_steps=steps, epochs=epochs,
                      clip=clip, loss_scale="sum_steps", schedule="step", lr_decay=decay,
                      decay_start=keep),
    }


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The IMDB tutorial's model, done right: frozen GloVe 50d, one 64-unit LSTM, the output at
    # each review's last real token, reviews cut at 250 tokens, batch 24, Adam 1e-3, keep 0.75.
    # The cut keeps a long review's last 250 tokens: reviews end on their verdict, and the
    # last state remembers the end best (validation 87.96% against 85.68% keeping the start).
    "imdb-seed": {
        "data": dict(dataset="imdb", max_len=250, truncate="tail", embeddings="glove-6b-50d",
                     min_freq=2),
        "model": dict(embedding_dim=50, hidden_size=64, pooling="last", dropout=0.25,
                      freeze_embeddings=True),
        "train": dict(batch_size=24, lr=1e-3, epochs=20, clip=5.0, patience=3, max_minutes=10),
    },
    # Our best sentiment recipe: a bidirectional LSTM over fine-tuned GloVe with max+mean
    # pooling, beside an n-gram bag branch whose features are weighted by naive-Bayes log-count
    # ratios (the NBSVM idea); each branch is trained with its own loss and the prediction
    # averages their log-probabilities. Reviews keep their first and last tokens up to 400.
    "imdb-best": {
        "data": dict(dataset="imdb", max_len=400, truncate="head+tail", embeddings="glove-6b-50d",
                     min_freq=2, ngram_order=3, ngram_buckets=1 << 24),
        "model": dict(embedding_dim=50, hidden_size=96, bidirectional=True, pooling="meanmax",
                      dropout=0.4, ngram_dropout=0.5),
        "train": dict(batch_size=32, lr=2e-3, epochs=5, clip=5.0, schedule="cosine", patience=2,
                      max_minutes=30),
    },
    # A general classifier for the user's own files.
    "lstm-classifier": {
        "data": dict(min_freq=2, max_vocab=50000, max_len=400),
        "model": dict(embedding_dim=100, hidden_size=128, bidirectional=True, pooling="meanmax",
                      dropout=0.3),
        "train": dict(batch_size=32, lr=2e-3, epochs=10, clip=5.0, patience=3),
    },
    "ptb-small": _zaremba("ptb-small"),
    # ptb-small's model (2x200 LSTM, batch 20 x 20 steps) made fast: an adaptive softmax in
    # place of the full one (still an exact, normalized distribution), bf16 matmuls where the
    # CPU has them, a little dropout, 8 epochs (validation perplexity passes 116 in the 7th).
    "ptb-small-fast": {
        **_zaremba("ptb-small"),
        "model": dict(task="lm", embedding_dim=200, hidden_size=200, num_layers=2, dropout=0.2,
                      init_range=0.1, softmax="adaptive", cutoffs="2000,6000"),
        "train": dict(optimizer="sgd", lr=1.0, batch_size=20, num_steps=20, epochs=8,
                      clip=5.0, loss_scale="sum_steps", schedule="step", lr_decay=0.5,
                      decay_start=5, precision="bf16", max_minutes=20),
    },
    "ptb-medium": _zaremba("ptb-medium"),
    "ptb-large": _zaremba("ptb-large"),
    # A general word-level language model for the user's own plain-text corpus.
    "lm": {
        "data": dict(tokenizer="whitespace", lowercase=False, max_vocab=50000),
        "model": dict(task="lm", embedding_dim=256, hidden_size=256, num_layers=2, dropout=0.3,
                      tie_weights=True, init_range=0.1),
        "train": dict(optimizer="sgd", lr=20.0, batch_size=20, num_steps=35, epochs=20,
                      clip=0.25, schedule="plateau", lr_decay=0.25, patience=4),
    },
}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    spec = PRESETS[name]
    return RunConfig(
        data=DataConfig(**spec.get("data", {})),
        model=ModelConfig(**spec.get("model", {})),
        train=TrainConfig(**spec.get("train", {})),
        preset=name,
    )
