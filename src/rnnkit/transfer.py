"""Start a model from another run's weights: `--init-from RUN`.

A language model pretrained once initialises
- a classifier: its encoder (embedding + RNN stack) is copied, the head starts fresh;
- a language model on new text (fine-tuning on the target domain): encoder and output layer.

The vocabularies differ, so rows are mapped by token: a word both runs know gets the source's
row, a new word gets the mean of the source's rows, and special tokens are matched by name
(`<unk>` to `<unk>`; the classifier's `<pad>` row is zero). The source's model settings (cell,
sizes, layers) are taken over; an explicit setting that contradicts them is an error naming
it. The new run records where it started from: the source's path and the SHA-256 of the
weights it read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnkit.config import FIELD_GROUP, PRESETS, RunConfig, flag, preset
from rnnkit.errors import UsageError
from rnnkit.models.lm import LanguageModel
from rnnkit.rundir import RunDir, sha256_file
from rnnkit.runner import build_model
from rnnkit.data.vocab import PAD, Vocab

# The settings that shape the encoder's weights: taken from the source run.
ENCODER_SETTINGS = ("cell", "embedding_dim", "hidden_size", "num_layers", "bidirectional",
                    "last_layer_size")
# What a language-model source adds for a language-model target: its output layer.
OUTPUT_SETTINGS = ("tie_weights", "softmax", "cutoffs")
# A source with a subword vocabulary passes on its tokenizer (and its SentencePiece model):
# rows are mapped by piece, so both runs must cut text into the same pieces.
SUBWORD_SETTINGS = ("tokenizer", "lowercase", "vocab_size", "subword_model")


@dataclass(frozen=True)
class Source:
    path: Path
    cfg: RunConfig
    vocab: Vocab
    weights: dict[str, torch.Tensor]
    sha256: str

    def record(self) -> dict[str, str]:
        """What the new run's config.json says about where it started."""
        return {"path": str(self.path.resolve()), "sha256": self.sha256}


def read_source(path: str | Path, target_task: str) -> Source:
    """The source run's config, vocabulary and best weights, checked: a folder that is not a
    run, a classifier (only language models are sources), damaged files: one-line errors."""
    run = RunDir(path)
    if not run.path.is_dir():
        raise UsageError(f"--init-from {path}: no such run directory")
    meta = run.meta()
    if meta["task"] != "lm":
        raise UsageError(f"--init-from {path}: is a {meta['task']} run; a model starts from a "
                         "language model's weights (train one with --preset lm or imdb-lm)")
    vocab = run.vocab()  # checksum-verified
    if not run.weights_path.is_file():
        raise UsageError(f"--init-from {path}: the run has no trained weights yet; finish it "
                         f"with `rnnkit train --resume {path}`")
    model = build_model(run.config(), vocab)
    run.load_weights(model)  # checksum-verified; tied and compact tables restored
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    return Source(run.path, run.config(), vocab, weights, sha256_file(run.weights_path))


def inherit_settings(cfg: RunConfig, source: Source, explicit: set[str]) -> RunConfig:
    """`cfg` with the source's encoder settings (and, for a language model, its output layer).
    A setting given explicitly (`explicit`: field names from the command line) that differs
    from the source's is refused, naming it."""
    names = ENCODER_SETTINGS + (OUTPUT_SETTINGS if cfg.model.task == "lm" else ())
    subword = source.cfg.data.tokenizer == "sentencepiece"
    taken: dict[str, dict[str, Any]] = {"model": {}, "data": {}}
    for group, group_names in (("model", names), ("data", SUBWORD_SETTINGS if subword else ())):
        for name in group_names:
            theirs = getattr(getattr(source.cfg, group), name)
            ours = getattr(getattr(cfg, group), name)
            if name in explicit and ours != theirs:
                raise UsageError(f"{flag(name)} {ours!r} conflicts with --init-from "
                                 f"{source.path}, whose {group} has {theirs!r}; leave "
                                 f"{flag(name)} out (it is taken from the source)")
            taken[group][name] = theirs
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **taken["model"]),
                              data=dataclasses.replace(cfg.data, **taken["data"]))
    if cfg.model.task == "classify":
        cfg = _transfer_recipe(cfg, explicit)
    return cfg


def words_to_take(source: Source, cfg: RunConfig) -> list[str]:
    """The source's words that a new word-level classifier takes into its vocabulary beside
    its training split's (ULMFiT's classifier reads with its language model's vocabulary): a
    word the labelled texts lack or hold too rarely keeps its pretrained row."""
    if (cfg.model.task != "classify" or not cfg.train.source_vocab
            or source.vocab.subword_model is not None):
        return []
    return [t for t in source.vocab.itos if t not in source.vocab.specials]


# How a classifier started from a language model fine-tunes unless told otherwise (ULMFiT):
# concat pooling, the slanted triangular rate, discriminative rates, gradual unfreezing.
TRANSFER_RECIPE: dict[str, Any] = {"pooling": "concat", "schedule": "slanted",
                                   "layer_lr_decay": 2.6, "gradual_unfreeze": True}


def _transfer_recipe(cfg: RunConfig, explicit: set[str]) -> RunConfig:
    """TRANSFER_RECIPE for each of its settings that is still its preset's own value (not
    given on the command line, not changed from the preset in Python)."""
    base = preset(cfg.preset) if cfg.preset in PRESETS else RunConfig()
    changes = {}
    for name, value in TRANSFER_RECIPE.items():
        group = FIELD_GROUP[name]
        ours = getattr(getattr(cfg, group), name)
        if name not in explicit and ours == getattr(getattr(base, group), name):
            changes[name] = value
    return cfg.override(**changes) if changes else cfg


def map_rows(table: torch.Tensor, source: Vocab, target: Vocab) -> torch.Tensor:
    """Rows of `table` (indexed by the source vocabulary) for the target vocabulary: shared
    tokens copied, the others the mean row; `<pad>` zero."""
    mean = table.mean(0)
    out = mean.expand(len(target), *table.shape[1:]).clone()
    index = source.stoi
    pairs = [(i, index[tok]) for i, tok in enumerate(target.itos) if tok in index]
    if pairs:
        rows, src_rows = zip(*pairs)
        out[list(rows)] = table[list(src_rows)]
    if PAD in target.stoi and PAD not in index:
        out[target.stoi[PAD]] = 0
    return out


@dataclass
class Coverage:
    shared: int
    total: int

    def __str__(self) -> str:
        return (f"init-from: {self.shared:,} of {self.total:,} words "
                f"({self.shared / max(1, self.total):.1%}) take the source's rows; the others "
                "its mean row")


def initialize(model: nn.Module, source: Source, target: Vocab) -> Coverage:
    """Copy the source's weights into `model`: the encoder always, the output layer when the
    model is a language model too. Tables indexed by words are mapped by token."""
    state = model.state_dict()
    by_word = {"encoder.embedding.weight", "decoder.weight", "decoder.bias"}
    copied: dict[str, torch.Tensor] = {}
    for name, value in source.weights.items():
        if name not in state:
            continue
        if not name.startswith("encoder.") and not isinstance(model, LanguageModel):
            continue  # a classifier keeps its own head
        if name.startswith("adaptive.") and source.vocab.itos != target.itos:
            continue  # clusters of word ranks: meaningless for another vocabulary
        if name in by_word:
            value = map_rows(value, source.vocab, target)
        if value.shape != state[name].shape:
            raise UsageError(f"--init-from {source.path}: weight {name} has shape "
                             f"{tuple(value.shape)}, this model needs {tuple(state[name].shape)}")
        copied[name] = value
    encoder = [n for n in state if n.startswith("encoder.")]
    missing = [n for n in encoder if n not in copied]
    if missing:
        raise UsageError(f"--init-from {source.path}: the source lacks {missing[0]}; its model "
                         "does not match this one")
    model.load_state_dict({**state, **copied})
    shared = sum(tok in source.vocab.stoi for tok in target.itos)
    return Coverage(shared, len(target))
