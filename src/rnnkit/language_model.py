"""The language-model task: BPTT batching, the loss of a window, exact evaluation.

The training stream is cut into `batch_size` equal parts that are read in parallel. For the
stream "a b c ... x" (26 tokens) and batch_size 4, the last 2 tokens are dropped and

    a g m s        row = one contiguous stretch of text;
    b h n t        column = one time step of all four streams.
    c i o u        (shown transposed: the tensor is (batch_size, 6))
    d j p v
    e k q w
    f l r x

Windows of `num_steps` columns are fed in order, and the recurrent state left by one window
is the start state of the next, so each stream is read as one long text. The state is
*detached* between windows: gradients flow back at most `num_steps` steps (truncated BPTT),
which bounds memory and time per update.

With `variable_bptt` (AWD-LSTM), each epoch's windows have lengths drawn around num_steps
(regularizers.window_starts, from (seed, epoch): the same on every call, so a resume finds
them) and cover the whole stream; a window's learning rate is scaled by length / num_steps.
With `ar_alpha` / `tar_beta`, the training objective adds AR on the last layer's dropped-out
outputs and TAR on its raw ones; the reported training loss stays the data's NLL.

Evaluation is exact: the whole split is read as one stream (batch 1) with the state carried,
and every token after the first is scored. `eval_streams` N > 1 reads it as N contiguous parts
in parallel instead, each from a zero state: every token is still scored once, and N - 1 of
them lose their context, a negligible change on long splits for a several-fold speed-up.
"""

from __future__ import annotations

import torch

import math
from typing import Any

from rnnkit.config import RunConfig
from rnnkit.data.splits import CorpusData, load_corpus
from rnnkit.errors import DataError
from rnnkit.metrics import perplexity
from rnnkit.data.vocab import Vocab
from rnnkit.models.encoder import State
from rnnkit.models.lm import LanguageModel
from rnnkit.models.regularizers import (activation_regularization, lr_scale,
                                        temporal_activation_regularization, window_starts)
from rnnkit import distributed
from rnnkit.precision import autocast
from rnnkit.runner import build_model
from rnnkit.train import StepLoss

EVAL_WINDOW = 256


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) -> (batch_size, N // batch_size), dropping the tail that does not fit."""
    width = len(ids) // batch_size
    return ids[: width * batch_size].view(batch_size, width)


def detach(state: State) -> State:
    return tuple(s.detach() for s in state)


class LanguageModelTask:
    metric = "perplexity"
    higher_is_better = False

    def __init__(self, cfg: RunConfig, data: CorpusData):
        self.cfg = cfg
        self.data = data
        self.streams: torch.Tensor | None = None
        if "train" in data.splits:
            tokens = len(data.splits["train"])
            world = distributed.world_size()
            streams = cfg.train.batch_size * world  # the global batch
            if tokens // streams < 2:
                raise DataError(f"--batch-size {cfg.train.batch_size} is too large for a "
                                f"training corpus of {tokens:,} tokens (each of the "
                                f"{streams:,} parallel streams needs two tokens at least); use "
                                f"--batch-size {max(1, tokens // 2 // world)} or less")
            # Several processes: this process's contiguous block of the global streams.
            first = distributed.rank() * cfg.train.batch_size
            self.streams = batchify(data.splits["train"], streams)[
                first: first + cfg.train.batch_size]

    @classmethod
    def load(cls, cfg: RunConfig, want: tuple[str, ...], vocab: Vocab | None = None,
             labels: dict | None = None, log: Any = print, subwords: bytes | None = None
             ) -> "LanguageModelTask":
        data = load_corpus(cfg.data, want, vocab, subwords, cfg.train.seed, log=log)
        for note in data.notes:
            log(note)
        return cls(cfg, data)

    def meta(self) -> dict[str, Any]:
        return {"vocab_size": len(self.data.vocab)}

    def labels(self) -> None:
        return None

    def sizes(self) -> dict[str, int]:
        return {split: len(ids) for split, ids in self.data.splits.items()}

    def epoch_extras(self, train_loss: float, valid: dict) -> dict[str, float]:
        return {"train_perplexity": math.exp(min(train_loss, 700))}

    def valid_note(self, valid: dict) -> str:
        return ""

    def live(self, loss: float, rate: float) -> dict[str, str]:
        return {"loss": f"{loss:.3f}", "tok/s": f"{rate:,.0f}",
                "ppl": f"{math.exp(min(loss, 700)):.1f}"}

    def summary(self, metrics: dict) -> str:
        text = f"perplexity {metrics['perplexity']:.2f} over {metrics['tokens']:,} tokens"
        if "word_perplexity" in metrics:
            text += (f" (per word {metrics['word_perplexity']:.2f} over {metrics['words']:,} "
                     "words)")
        return text

    def build_model(self) -> LanguageModel:
        return build_model(self.cfg, self.data.vocab)

    def prepare(self, model: LanguageModel, log: Any = print) -> None:
        pass

    def train_batches(self, epoch: int) -> list[int] | list[tuple[int, int]]:
        """Start columns of the epoch's windows (full windows only, as in the TF tutorial);
        with variable_bptt, (start, length) of windows of varying length that cover every
        column."""
        assert self.streams is not None
        t = self.cfg.train
        if t.variable_bptt:
            return window_starts(self.streams.shape[1] - 1, t.num_steps, t.seed, epoch,
                                 min_len=min(5, t.num_steps))
        count = max(1, (self.streams.shape[1] - 1) // t.num_steps)
        return [i * t.num_steps for i in range(count)]

    def _window(self, batch: int | tuple[int, int]) -> tuple[int, int]:
        """(start, length) of a batch of `train_batches`."""
        if isinstance(batch, tuple):
            return batch
        return batch, min(self.cfg.train.num_steps, self.streams.shape[1] - 1 - batch)

    def lr_factor(self, batch: int | tuple[int, int]) -> float:
        """AWD-LSTM: a variable window's rate is lr * length / num_steps; else 1."""
        if not self.cfg.train.variable_bptt:
            return 1.0
        return lr_scale(self._window(batch)[1], self.cfg.train.num_steps)

    def initial_state(self, model: LanguageModel) -> State:
        return model.initial_state(self.cfg.train.batch_size)

    def train_step(self, model: LanguageModel, batch: int | tuple[int, int],
                   state: State | None) -> tuple[torch.Tensor | StepLoss, int, State]:
        """The loss of one window and the state it leaves. A plain tensor (the NLL, scaled
        for sum_steps) in the classic setting; a StepLoss when the objective has AR/TAR terms
        or the window's length varies, its `token` being the per-token NLL alone."""
        assert self.streams is not None
        t = self.cfg.train
        device = model.encoder.embedding.weight.device
        if self.streams.device != device:
            self.streams = self.streams.to(device)  # the whole training stream, once
        start, steps = self._window(batch)
        inputs = self.streams[:, start: start + steps]  # (B, T)
        targets = self.streams[:, start + 1: start + 1 + steps]  # (B, T), shifted by one
        state = detach(state) if state is not None else self.initial_state(model)
        penalty = None
        with autocast(t.precision, device):
            if t.ar_alpha or t.tar_beta:
                features, raw, state = model.features_and_raw(inputs, state)
                # AR on the outputs as the decoder sees them (dropped out), TAR on the raw ones.
                penalty = (activation_regularization(features.float(), t.ar_alpha)
                           + temporal_activation_regularization(raw.float(), t.tar_beta))
            else:
                features, state = model.features(inputs, state)
            loss = model.token_nll(features, targets).float()
        state = tuple(s.float() for s in state)
        if penalty is None and not t.variable_bptt:
            if t.loss_scale == "sum_steps":
                # Zaremba / TF tutorial: the loss is summed over time steps of the batch mean,
                # so gradients (and what the clip norm sees) are num_steps times the token mean.
                loss = loss * steps
            return loss, inputs.numel(), state
        objective = loss if penalty is None else loss + penalty
        if t.loss_scale == "sum_steps":
            objective = objective * steps  # this window's length
        return StepLoss(objective, loss.detach()), inputs.numel(), state

    def token_loss(self, loss: torch.Tensor) -> float:
        """The per-token mean loss behind a tensor returned by `train_step` (full windows of
        num_steps: a StepLoss carries its own)."""
        scale = self.cfg.train.num_steps if self.cfg.train.loss_scale == "sum_steps" else 1
        return float(loss) / scale

    @torch.inference_mode()
    def evaluate(self, model: LanguageModel, split: str, fit: bool = False) -> dict:
        """Perplexity of `split` (fit: nothing of a language model is fitted on validation)."""
        metrics = evaluate_stream(model, self.data.splits[split],
                                  streams=self.cfg.train.eval_streams)
        words = self.data.words.get(split)
        if words:  # a subword vocabulary: also per word, comparable with word-level models
            add_word_perplexity(metrics, words)
        return metrics


def add_word_perplexity(metrics: dict, words: int) -> None:
    """Perplexity per word of a subword model's figures: the same total loss over the
    text's words (less the first, which is not predicted, as the first token is not)."""
    total = metrics["loss"] * metrics["tokens"]
    metrics["words"] = words
    metrics["word_perplexity"] = perplexity(total / max(1, words - 1))


@torch.inference_mode()
def evaluate_stream(model: LanguageModel, ids: torch.Tensor, window: int = EVAL_WINDOW,
                    streams: int = 1) -> dict:
    """Per-token loss over `ids` read with the state carried: as one stream (exact), or cut
    into `streams` contiguous parts read in parallel, each from a zero state (and the few
    tokens left over as one more). Either way every token after the first is scored once."""
    model.eval()
    ids = ids.to(model.encoder.embedding.weight.device)
    targets = len(ids) - 1
    width = targets // streams if streams > 1 else 0
    total, count = 0.0, 0
    if width >= 2:
        inputs = ids[: streams * width].view(streams, width)
        shifted = ids[1: streams * width + 1].view(streams, width)
        total, count = _read(model, inputs, shifted, window)
        ids = ids[streams * width:]  # the leftover: its first token was the last target
    if len(ids) > 1:
        rest, more = _read(model, ids[:-1].unsqueeze(0), ids[1:].unsqueeze(0), window)
        total, count = total + rest, count + more
    loss = total / max(1, count)
    return {"loss": loss, "perplexity": perplexity(loss), "tokens": count}


def _read(model: LanguageModel, inputs: torch.Tensor, targets: torch.Tensor,
          window: int) -> tuple[float, int]:
    """Summed loss and count over (B, N) inputs and targets, read in windows with the state
    carried from a zero state."""
    state = model.initial_state(inputs.shape[0])
    total = 0.0
    for start in range(0, inputs.shape[1], window):
        features, state = model.features(inputs[:, start: start + window], state)
        total += float(model.token_nll(features, targets[:, start: start + window],
                                       reduction="sum"))
    return total, inputs.numel()
