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
from rnnkit.files import check_encoding

TASKS = ("classify", "lm")
CELLS = ("lstm", "gru", "rnn", "jordan")
POOLINGS = ("last", "mean", "max", "meanmax", "concat", "attention")
TOKENIZERS = ("basic", "tutorial", "whitespace", "spaced", "char", "jieba",
              "sentencepiece")


@dataclass(frozen=True)
class DataConfig:
    dataset: str | None = None  # a registered dataset name (imdb, ptb, ...) or None for files
    train: str | None = None  # files (or dataset:split names) that override the dataset's splits
    valid: str | None = None
    extra_train: str | None = None  # language models: more training text read after train,
    # comma-separated files or dataset:split names (imdb:unsup)
    test: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    encoding: str = "utf-8"  # of the text files (CSV, TSV, JSONL, plain text)
    tokenizer: str = "basic"
    vocab_size: int = 8000  # sentencepiece: subword vocabulary size
    subword_model: str = "unigram"  # sentencepiece: unigram | bpe
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
        _check_values(self)
        check_encoding(self.encoding)
        _check_range("vocab_size", self.vocab_size, 8, MAX_WIDTH * 16)
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
    # Units of the last RNN layer; 0 = hidden_size. AWD-LSTM gives it embedding_dim units, so
    # that it ties to the embeddings directly (bounded by the cell's tanh) with no projection.
    last_layer_size: int = 0
    bidirectional: bool = False
    dropout: float = 0.25  # on non-recurrent connections (embeddings, between layers, output)
    # AWD-LSTM's regularisers (Merity et al. 2017; rnnkit.models.regularizers), all off by
    # default. The three rates below replace `dropout` at one place each; None keeps it.
    input_dropout: float | None = None  # on the embeddings (AWD: dropouti)
    hidden_dropout: float | None = None  # between RNN layers (AWD: dropouth)
    output_dropout: float | None = None  # on the last layer's outputs (AWD: dropout)
    locked_dropout: bool = False  # those three draw one mask per sequence, kept over time
    embedding_dropout: float = 0.0  # share of word types dropped from the batch (AWD: dropoute)
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights (AWD: wdrop)
    pooling: str = "last"  # classification: how a sequence of states becomes one vector
    freeze_embeddings: bool = False
    tie_weights: bool = False  # language models: decoder shares the embedding matrix
    softmax: str = "full"  # language models: full | adaptive (exact, normalized, faster)
    cutoffs: str = "2000,6000"  # adaptive softmax: where the head and tail clusters split
    init_range: float = 0.0  # > 0: every weight uniform in [-init_range, init_range]
    ngram_dropout: float = 0.0  # classification: share of n-gram features dropped in training

    def __post_init__(self) -> None:
        _check_values(self)
        if self.softmax == "adaptive" and self.tie_weights:
            raise UsageError("the adaptive softmax cannot be tied to the embeddings; "
                             "set --tie-weights false")
        cutoffs = self.cutoff_list()
        if any(c <= 0 for c in cutoffs) or cutoffs != sorted(set(cutoffs)):
            raise UsageError(f"--cutoffs must be increasing positive integers, got "
                             f"{self.cutoffs!r}")
        _check_range("embedding_dim", self.embedding_dim, 1, MAX_WIDTH)
        _check_range("hidden_size", self.hidden_size, 1, MAX_WIDTH)
        _check_range("num_layers", self.num_layers, 1, MAX_LAYERS)
        _check_range("last_layer_size", self.last_layer_size, 0, MAX_WIDTH)
        if self.last_layer_size and self.last_layer_size != self.hidden_size:
            if self.num_layers < 2 or self.bidirectional or self.cell == "jordan":
                raise UsageError("--last-layer-size needs a unidirectional lstm, gru or rnn "
                                 "stack of --num-layers 2 or more")
        if self.init_range < 0:
            raise UsageError(f"--init-range must not be negative, got {self.init_range}")
        for name in ("dropout", "ngram_dropout", "input_dropout", "hidden_dropout",
                     "output_dropout", "embedding_dropout", "weight_drop"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise UsageError(f"{flag(name)} must be in [0, 1), got {value}")
        if self.cell == "jordan":
            if self.num_layers != 1:
                raise UsageError(f"--cell jordan has one layer: set --num-layers 1, got "
                                 f"{self.num_layers}")
            if self.bidirectional:
                raise UsageError("--cell jordan reads one way only: set --bidirectional false")
            if self.weight_drop:
                raise UsageError("--weight-drop applies to the lstm, gru and rnn cells, not "
                                 "--cell jordan; set --weight-drop 0")
        if self.task == "lm" and self.bidirectional:
            raise UsageError("a language model cannot be bidirectional: set --bidirectional false")
        if self.tie_weights and self.task != "lm":
            raise UsageError("tie_weights applies to language models only")

    def rate(self, place: str) -> float:
        """The dropout rate at `place` (input | hidden | output): its own setting, else
        `dropout`."""
        value = getattr(self, f"{place}_dropout")
        return self.dropout if value is None else value

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
    eval_batch_size: int = 256  # classification: texts per evaluation batch
    eval_streams: int = 1  # language models: evaluation reads the split as N parallel parts
    num_steps: int = 35  # language models: BPTT window length
    epochs: int = 10
    max_minutes: float = 0.0  # stop training (and checkpoint) after this many minutes; 0 = none
    checkpoint_every: int = 0  # write trainer.pt every N steps inside epochs; 0 = every 10 min
    clip: float = 0.0  # max global gradient norm; 0 = no clipping
    loss_scale: str = "mean"  # mean | sum_steps (Zaremba: sum over steps of the batch mean)
    schedule: str = "none"  # none | step | plateau | cosine | slanted
    warmup_fraction: float = 0.1  # slanted: share of the steps over which the rate rises
    layer_lr_decay: float = 1.0  # > 1: each layer below the top learns this much slower
    gradual_unfreeze: bool = False  # epoch 1 trains the top layer group only, then one more
    lr_decay: float = 0.5  # step: factor per epoch once past decay_start; plateau: factor
    decay_start: int = 0  # step: epochs at the full rate before decaying
    patience: int = 0  # early stopping: epochs without validation improvement; 0 = off
    bucket: bool = True  # classification: batch reviews of similar length together
    seed: int = 1
    threads: int = 0  # torch threads; 0 = torch's default
    precision: str = "fp32"  # fp32 | bf16 (autocast matmuls to bfloat16; weights stay fp32)
    device: str = "auto"
    init_from: str | None = None  # a language-model run whose weights start this model
    source_vocab: bool = True  # with init_from, a classifier also takes the source's words
    tensorboard: bool = False  # write scalars under RUN/tensorboard (needs tensorboard)
    # AWD-LSTM's training aids (language models; all off by default):
    ar_alpha: float = 0.0  # AR: alpha * mean(h^2) of the last layer's dropped-out outputs
    tar_beta: float = 0.0  # TAR: beta * mean((h_t - h_{t-1})^2) of its raw outputs
    variable_bptt: bool = False  # window lengths drawn around num_steps, lr scaled to length
    nt_asgd: bool = False  # average the SGD weights once validation stops improving (NT-ASGD)
    nonmono: int = 5  # NT-ASGD: trigger on a loss worse than the best of those > N epochs ago

    def __post_init__(self) -> None:
        _check_values(self)
        check_device_name(self.device)

        if not 0.0 < self.warmup_fraction < 1.0:
            raise UsageError(f"--warmup-fraction must be in (0, 1), got {self.warmup_fraction}")
        if self.layer_lr_decay < 1.0:
            raise UsageError(f"--layer-lr-decay must be >= 1, got {self.layer_lr_decay}")
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        _check_range("eval_batch_size", self.eval_batch_size, 1, MAX_BATCH)
        _check_range("eval_streams", self.eval_streams, 1, MAX_BATCH)
        _check_range("num_steps", self.num_steps, 1, MAX_BATCH)
        _check_range("epochs", self.epochs, 1, 1_000_000)
        _check_range("patience", self.patience, 0)
        _check_range("checkpoint_every", self.checkpoint_every, 0)
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
        for name in ("ar_alpha", "tar_beta"):
            if getattr(self, name) < 0:
                raise UsageError(f"{flag(name)} must not be negative, got {getattr(self, name)}")
        _check_range("nonmono", self.nonmono, 0, 1_000_000)
        if self.nt_asgd and self.optimizer != "sgd":
            raise UsageError(f"--nt-asgd averages SGD's weights: set --optimizer sgd, got "
                             f"{self.optimizer!r}")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.model.task != "lm":
            for name in ("ar_alpha", "tar_beta", "variable_bptt"):
                if getattr(self.train, name):
                    raise UsageError(f"{flag(name)} applies to language models only")

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


def _check_values(config: Any) -> None:
    """Refuse NaN and infinity by name (they pass every comparison test unnoticed), and string
    settings outside their CHOICES."""
    for f in dataclasses.fields(config):
        if f.name in CHOICES:
            _check_choice(f.name, getattr(config, f.name), CHOICES[f.name])
        value = getattr(config, f.name)
        if f.type == "float | None" and value is None:
            continue
        if f.type in ("float", "float | None") and not (isinstance(value, (int, float))
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
    # mixes their log-probabilities, the encoder's weight fitted on validation (for accuracy).
    # Reviews keep their first and last tokens up to 400. The n-gram table's Adagrad rate is
    # 0.03 (0.1 until 0.6.1): the branch alone is better and better calibrated on validation
    # (91.92 against 91.28%, log-loss 0.21 against 0.33), the mix 93.28 against 93.12%.
    "imdb-best": {
        "data": dict(dataset="imdb", max_len=400, truncate="head+tail", embeddings="glove-6b-50d",
                     min_freq=2, ngram_order=3, ngram_buckets=1 << 24),
        "model": dict(embedding_dim=50, hidden_size=96, bidirectional=True, pooling="meanmax",
                      dropout=0.4, ngram_dropout=0.5),
        "train": dict(batch_size=32, lr=2e-3, sparse_lr=0.03, epochs=5, clip=5.0,
                      schedule="cosine", patience=2, max_minutes=30),
    },
    # A general classifier for the user's own files, in any language: a bidirectional LSTM
    # with mean+max pooling beside an NB-weighted uni+bigram branch (bigrams of characters
    # for Chinese or Japanese text, which the default tokenizer splits per character); the
    # branch was chosen on validation (short English reviews: 74.5% -> 77.4%).
    "lstm-classifier": {
        "data": dict(min_freq=2, max_vocab=50000, max_len=400, ngram_order=2,
                     ngram_buckets=1 << 21),
        "model": dict(embedding_dim=100, hidden_size=128, bidirectional=True, pooling="meanmax",
                      dropout=0.3, ngram_dropout=0.5),
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
    # AWD-LSTM as published for PTB (Merity et al. 2017; the awd-lstm-lm README's command:
    # --batch_size 20 --dropouti 0.4 --dropouth 0.25 --seed 141 --epoch 500, defaults
    # dropout 0.4, dropoute 0.1, wdrop 0.5, bptt 70, lr 30, clip 0.25, emsize 400, nhid 1150,
    # nlayers 3, alpha 2, beta 1, wdecay 1.2e-6): a 1150-1150-400 LSTM whose 400-unit last
    # layer ties to the 400-d embeddings directly (24M parameters, as AWD's), with locked
    # dropout, weight drop, embedding dropout, AR/TAR, variable BPTT and NT-ASGD. Weights start
    # uniform in [-0.03, 0.03] (AWD: the embedding in 0.1, the LSTM at torch's 1/sqrt(H), 0.029
    # for 1150 units; 0.1 everywhere starts with gradient norms of 15-45 and learns far slower).
    # For a GPU: on 2 CPU cores each epoch costs about three times ptb-hour's (24M against 8.4M
    # multiply-adds a token), 500 of them days. The paper: 60.0 valid, 57.3 test perplexity
    # before fine-tuning (rnnkit has no fine-tuning stage).
    "ptb-awd": {
        "data": dict(dataset="ptb", tokenizer="whitespace", lowercase=False),
        "model": dict(task="lm", embedding_dim=400, hidden_size=1150, num_layers=3,
                      last_layer_size=400, tie_weights=True, dropout=0.4, output_dropout=0.4,
                      hidden_dropout=0.25, input_dropout=0.4, embedding_dropout=0.1,
                      weight_drop=0.5, locked_dropout=True, init_range=0.03),
        "train": dict(optimizer="sgd", lr=30.0, weight_decay=1.2e-6, batch_size=20,
                      num_steps=70, epochs=500, clip=0.25, seed=141, ar_alpha=2.0,
                      tar_beta=1.0, variable_bptt=True, nt_asgd=True, nonmono=5),
    },
    # The best PTB model we expect this 2-core CPU (AVX-512 BF16/AMX) to train in one hour of
    # wall time, final exact evaluation included (target test perplexity <= 85). AWD-LSTM's
    # layout and regularisers, scaled to the budget: a 650-unit layer and a 400-unit last layer
    # tied to 400-d embeddings (8.4M parameters), AWD's dropouts at about two thirds of its PTB
    # rates (a short run needs less), AR/TAR and variable BPTT as published, SGD at AWD's rate
    # 30 with clip 0.25, cosine-annealed to zero over the run (the usual best schedule for a
    # fixed budget; NT-ASGD would rarely trigger in 20 epochs, and averaging a cosine run's
    # early iterates would hurt), bf16 matmuls. Measured with `rnnkit train` on an otherwise idle
    # machine: about 6,900 training tokens/s (an epoch of 929k tokens in 2.3 min) and 15 s for
    # the exact validation: 20 epochs in about 50 min, 0.5 min more for the final valid + test
    # evaluation; max_minutes stops a slower machine in time for it. No full-run figure yet.
    "ptb-hour": {
        "data": dict(dataset="ptb", tokenizer="whitespace", lowercase=False),
        "model": dict(task="lm", embedding_dim=400, hidden_size=650, num_layers=2,
                      last_layer_size=400, tie_weights=True, dropout=0.3, output_dropout=0.3,
                      hidden_dropout=0.2, input_dropout=0.3, embedding_dropout=0.05,
                      weight_drop=0.3, locked_dropout=True, init_range=0.04),
        "train": dict(optimizer="sgd", lr=30.0, weight_decay=1.2e-6, batch_size=20,
                      num_steps=70, epochs=20, clip=0.25, schedule="cosine", ar_alpha=2.0,
                      tar_beta=1.0, variable_bptt=True, precision="bf16", max_minutes=55),
    },
    # A language model of IMDB reviews, to start classifiers from (--init-from): the 25,000
    # training and 50,000 unlabelled reviews, never the test reviews, one review a line; the
    # closing 10% (unlabelled reviews) is validation. The classifier's tokenizer (basic,
    # lowercased), a 60k vocabulary, an adaptive softmax and bf16 matmuls for speed, locked
    # and weight dropout as in AWD-LSTM. Three epochs, SGD cosine-annealed over them (two gave
    # valid perplexity 104.65 and were still improving); validation reads its 2.06M tokens as
    # 16 parallel parts (several times faster than one stream).
    "imdb-lm": {
        "data": dict(train="imdb:train", extra_train="imdb:unsup", min_freq=3,
                     max_vocab=60000),
        "model": dict(task="lm", embedding_dim=256, hidden_size=512, num_layers=2,
                      dropout=0.2, locked_dropout=True, weight_drop=0.2,
                      embedding_dropout=0.05, softmax="adaptive", cutoffs="2000,10000,30000",
                      init_range=0.05),
        "train": dict(optimizer="sgd", lr=20.0, batch_size=32, num_steps=50, epochs=3,
                      clip=0.25, schedule="cosine", precision="bf16", max_minutes=90,
                      eval_streams=16),
    },
    # ULMFiT on IMDB: give the language model with --init-from (an imdb-lm run); its encoder
    # settings are taken over. Slanted triangular rate, discriminative rates (2.6 per layer
    # group), gradual unfreezing (head, then one layer group more each epoch, then all) and
    # concat pooling, reviews cut to their first 333 and last 667 tokens (all but the
    # longest reviews whole; validation 93.20% against 92.56% with 400), bf16 matmuls
    # (classifier training 2.2x faster than fp32 on AVX-512 BF16/AMX). Beside it, imdb-best's
    # n-gram branch (NB-weighted uni- to trigrams, Adagrad 0.03 as there), trained from the
    # first epoch. The vocabulary is the training reviews' own (source_vocab off): with the
    # language model's 14,773 other words as well, validation fell from 93.72 to 93.44%
    # (runs/imdb-ulmfit7); 22,500 labelled reviews leave few words to the LM alone.
    "imdb-ulmfit": {
        "data": dict(dataset="imdb", min_freq=2, max_len=1000, truncate="head+tail",
                     ngram_order=3, ngram_buckets=1 << 24),
        "model": dict(pooling="concat", dropout=0.3, ngram_dropout=0.5),
        "train": dict(batch_size=32, lr=2e-3, sparse_lr=0.03, epochs=5, clip=5.0,
                      schedule="slanted", layer_lr_decay=2.6, gradual_unfreeze=True,
                      precision="bf16", max_minutes=55, source_vocab=False),
    },
    # A general word-level language model for the user's own plain-text corpus (tokens
    # separated by spaces, as in WikiText or PTB, and one token per character of Chinese,
    # Japanese, Thai text, which has no spaces between words; --tokenizer basic for raw
    # English text, whose punctuation is not yet split from the words): a 2x512
    # LSTM over 256-d embeddings with an adaptive softmax, bf16 matmuls, locked dropout 0.1,
    # SGD at rate 20 cosine-annealed over the epochs, or over --max-minutes when that ends
    # first. Chosen on validation of a WikiText-2-sized proxy with --max-minutes 10
    # (benchmarks/proxies.py): perplexity 157.5, against 168.7 with imdb-lm's heavier
    # dropouts (0.2, weight drop 0.2, embedding dropout 0.05), which long runs may want.
    "lm": {
        "data": dict(tokenizer="spaced", lowercase=False, max_vocab=50000),
        "model": dict(task="lm", embedding_dim=256, hidden_size=512, num_layers=2, dropout=0.1,
                      locked_dropout=True, softmax="adaptive", cutoffs="2000,10000",
                      init_range=0.05),
        "train": dict(optimizer="sgd", lr=20.0, batch_size=32, num_steps=50, epochs=20,
                      clip=0.25, schedule="cosine", precision="bf16", patience=4),
    },
}


DEFAULT_PRESET = "lstm-classifier"  # what `rnnkit train` starts from without --preset


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


# --- help text --------------------------------------------------------------------------------
# One line per setting for `rnnkit train --help` (which adds each one's choices and default).

HELP: dict[str, str] = {
    # data
    "dataset": "a registered dataset (imdb, ptb, tinyshakespeare) whose splits are the data",
    "train": "training file or folder (CSV, TSV, JSONL, Parquet, .txt; or dataset:split)",
    "valid": "validation file; without one, --valid-fraction of the training data is carved",
    "extra_train": "language models: more training text after --train, comma-separated "
                   "files or dataset:split names (imdb:unsup)",
    "test": "test file, evaluated once with the best weights after training",
    "text_field": "column (CSV/TSV/Parquet) or JSON field that holds the text",
    "label_field": "column or JSON field that holds the label",
    "encoding": "encoding of the text files (gbk, big5, shift_jis, latin-1, ...)",
    "tokenizer": "how text becomes tokens: basic (words and punctuation; one token per "
                 "character for Chinese, Japanese, Thai), tutorial, whitespace, spaced "
                 "(whitespace, and one token per character for Chinese, Japanese, Thai), char, "
                 "jieba (Chinese words; rnnkit[zh]), sentencepiece (subwords learned from "
                 "the training split)",
    "vocab_size": "sentencepiece: the subword vocabulary's size",
    "subword_model": "sentencepiece: the segmentation model",
    "lowercase": "lowercase text before tokenizing",
    "max_len": "classification: keep at most this many tokens of a text (0 = all)",
    "truncate": "which tokens a cut keeps: the first, the last, or a third first and two "
                "thirds last",
    "min_freq": "leave out of the vocabulary tokens seen fewer times in training",
    "max_vocab": "keep at most this many vocabulary entries, the most frequent (0 = all)",
    "valid_fraction": "share of the training data carved out for validation when no --valid",
    "limit_train": "train on only the first N training examples after shuffling (0 = all)",
    "add_eos": "language models: end each line with an <eos> token",
    "embeddings": "pretrained word vectors: a registered name (glove-6b-50d) or a file; a "
                  "contraction they lack takes its parts' mean (don't: do, n't)",
    "embeddings_unknown": "starting rows for words the vectors lack",
    "ngram_order": "classification: add an n-gram bag branch up to this order (0 = off); "
                   "its mix with the encoder is fitted on validation",
    "ngram_buckets": "size of the hashed n-gram table",
    # model
    "task": "classify (labelled texts) or lm (language model of a corpus)",
    "cell": "recurrent cell (jordan: the teaching model that feeds its output back)",
    "embedding_dim": "size of the token embeddings",
    "hidden_size": "units per recurrent layer",
    "num_layers": "recurrent layers",
    "last_layer_size": "units of the last layer (0 = --hidden-size); AWD-LSTM ties it to the "
                       "embeddings",
    "bidirectional": "classification: read the text both ways",
    "dropout": "dropout rate on the embeddings, between layers and on the output",
    "input_dropout": "dropout on the embeddings (none = --dropout)",
    "hidden_dropout": "dropout between recurrent layers (none = --dropout)",
    "output_dropout": "dropout on the last layer's outputs (none = --dropout)",
    "locked_dropout": "one dropout mask per sequence, kept over time (variational dropout)",
    "embedding_dropout": "share of word types dropped from each batch",
    "weight_drop": "DropConnect rate on the hidden-to-hidden weights, one mask per batch",
    "pooling": "classification: how the states become one vector (concat: last+mean+max)",
    "freeze_embeddings": "keep the (pretrained) embeddings fixed",
    "tie_weights": "language models: the output layer shares the embedding matrix",
    "softmax": "language models: full, or adaptive (exact and normalized, much faster for "
               "big vocabularies)",
    "cutoffs": "adaptive softmax: vocabulary ranks where the clusters split",
    "init_range": "start every weight uniform in [-x, x] (0 = torch's defaults)",
    "ngram_dropout": "share of n-gram features dropped in training",
    # training
    "optimizer": "optimizer",
    "lr": "learning rate (peak rate for the cosine and slanted schedules)",
    "weight_decay": "L2 weight decay",
    "sparse_lr": "Adagrad rate of the n-gram table",
    "batch_size": "examples (or language-model streams) per batch",
    "eval_batch_size": "classification: texts per evaluation batch",
    "eval_streams": "language models: read each evaluated split as this many contiguous "
                    "parts in parallel, each from a zero state (1 = one exact stream; more "
                    "is faster on long splits, every token is still scored once)",
    "num_steps": "language models: BPTT window length in tokens",
    "epochs": "passes over the training data",
    "max_minutes": "stop training (resumably) after this many minutes (0 = no limit); cosine "
                   "and slanted schedules then anneal over the budget if it ends first",
    "clip": "clip the global gradient norm to this (0 = off)",
    "checkpoint_every": "also checkpoint (trainer.pt, for an exact resume) every N optimizer "
                        "steps inside an epoch (0 = every 10 minutes)",
    "loss_scale": "mean loss, or sum over steps of the batch mean (Zaremba et al.)",
    "schedule": "learning-rate schedule (slanted: ULMFiT's triangular)",
    "warmup_fraction": "slanted: share of the steps over which the rate rises",
    "layer_lr_decay": "each layer group below the top learns this many times slower",
    "gradual_unfreeze": "epoch 1 trains the top layer group only, each epoch one group more",
    "lr_decay": "step: factor per epoch after --decay-start; plateau: factor on a plateau",
    "decay_start": "step: epochs at the full rate before decaying",
    "patience": "stop after this many epochs without validation improvement (0 = off)",
    "bucket": "classification: batch texts of similar length together",
    "seed": "random seed (data order, initialization, dropout)",
    "threads": "torch threads (0 = torch's default)",
    "precision": "bf16 autocasts matmuls to bfloat16 (fast on CPUs with AVX-512 BF16/AMX)",
    "device": "auto (a CUDA GPU if visible, else the CPU), cpu, cuda or cuda:N",
    "init_from": "a run whose weights start this model (a language model for a classifier "
                 "or for more language-model training)",
    "source_vocab": "with --init-from: the classifier's vocabulary also holds the language "
                    "model's words, with their pretrained rows, not only its training split's",
    "tensorboard": "write training and validation scalars for TensorBoard under RUN/tensorboard",
    "ar_alpha": "activation regularization weight (AWD-LSTM's alpha)",
    "tar_beta": "temporal activation regularization weight (AWD-LSTM's beta)",
    "variable_bptt": "draw window lengths around --num-steps, the rate scaled to the length",
    "nt_asgd": "average the SGD weights once validation stops improving (NT-ASGD)",
    "nonmono": "NT-ASGD: epochs of non-improvement that trigger averaging",
}

# The choices of string settings, shown in --help and checked in __post_init__.
CHOICES: dict[str, tuple[str, ...]] = {
    "tokenizer": TOKENIZERS,
    "subword_model": ("unigram", "bpe"),
    "truncate": ("head", "tail", "head+tail"),
    "embeddings_unknown": ("random", "mean"),
    "task": TASKS,
    "cell": CELLS,
    "pooling": POOLINGS,
    "softmax": ("full", "adaptive"),
    "optimizer": ("adam", "adamw", "sgd"),
    "loss_scale": ("mean", "sum_steps"),
    "schedule": ("none", "step", "plateau", "cosine", "slanted"),
    "precision": ("fp32", "bf16"),
}
