"""AWD-LSTM's regularisers and training aids (Merity et al. 2017), one small piece each.

    ids -> embedding (embedding_dropout: whole word types dropped)
        -> LockedDropout -> [LSTM layer, w_hh through drop_weights -> LockedDropout] x L
        -> outputs: AR on the dropped-out ones, TAR on the raw ones -> TiedDecoder

and, around the loop: variable BPTT windows (`window_starts`, `lr_scale`) and the averaged
weights of NT-ASGD (`NTASGD`). Every mask is drawn from torch's global generator (the one the
trainer seeds and saves); the BPTT windows from a numpy Generator seeded by (seed, epoch).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _keep_mask(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """A mask of `shape` whose entries are 1 / (1 - p) with probability 1 - p and 0 otherwise
    (inverted dropout), in `like`'s dtype and device. The masks here are small (B x D, V,
    4H x H), so plain `rand >= p` costs next to nothing; no need for the encoder's cheap mask."""
    keep = torch.rand(shape, device=like.device) >= p
    return (keep * (1.0 / (1.0 - p))).to(like.dtype)


def _check_rate(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"a dropout rate must be in [0, 1), got {p}")


class LockedDropout(nn.Module):
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence, the same at every
    time step, so a unit dropped at step t is dropped at all steps of the window."""

    def __init__(self, p: float):
        super().__init__()
        _check_rate(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> x * mask, mask (B, 1, D) broadcast over T; identity in eval."""
        if not self.training or self.p == 0.0:
            return x
        return x * _keep_mask((x.shape[0], 1, *x.shape[2:]), self.p, x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def embedding_dropout(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Embedding dropout (Gal & Ghahramani 2016): drop whole word types, i.e. rows of the
    (V, E) matrix, with one (V, 1) mask per call, scaling kept rows by 1 / (1 - p). Use the
    result with F.embedding(ids, dropped, padding_idx): every occurrence of a dropped word in
    the batch reads zeros. Returns `weight` itself in eval or when p == 0."""
    _check_rate(p)
    if not training or p == 0.0:
        return weight
    return weight * _keep_mask((weight.shape[0], 1), p, weight)  # (V, E) * (V, 1)


def drop_weights(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """DropConnect on a recurrent matrix (Wan et al. 2013; AWD-LSTM's weight drop): one mask
    over the whole (4H, H) w_hh per call, so every time step and every sequence of the batch
    sees the same dropped matrix. Inverted scaling; autograd reaches the raw weight (zero
    gradient where masked). Returns `weight` itself in eval or when p == 0."""
    _check_rate(p)
    if not training or p == 0.0:
        return weight
    return weight * _keep_mask(tuple(weight.shape), p, weight)


_TORCH_CELLS = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn": torch._VF.rnn_tanh}
# On CUDA, cuDNN copies weights that are not in the module's flat buffer, and says so on every
# call; a freshly dropped w_hh never is, and the copy of one layer is what weight drop costs.
_COMPACTION_WARNING = "RNN module weights are not part of single contiguous chunk of memory"


def rnn_layer(cell: str, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
              b_ih: torch.Tensor, b_hh: torch.Tensor, h0: torch.Tensor | None = None,
              c0: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One batch-first layer of nn.LSTM / nn.GRU / nn.RNN (cell "lstm" | "gru" | "rnn") with
    the given weights, through the same torch function the module calls, so that a dropped w_hh
    can stand in for the module's own. Same convention as `kernels.lstm_layer`:
    x (B, T, I) -> outputs (B, T, H), h_T (B, H), c_T (B, H; None for GRU/RNN), from h0, c0
    (B, H each; zeros if None)."""
    batch, hidden = x.shape[0], w_hh.shape[1]
    h0 = x.new_zeros(batch, hidden) if h0 is None else h0
    hx: torch.Tensor | tuple[torch.Tensor, torch.Tensor] = h0.unsqueeze(0)  # (1, B, H)
    if cell == "lstm":
        c0 = x.new_zeros(batch, hidden) if c0 is None else c0
        hx = (h0.unsqueeze(0), c0.unsqueeze(0))
    with warnings.catch_warnings():
        if x.device.type == "cuda":
            warnings.filterwarnings("ignore", message=_COMPACTION_WARNING)
        # args: input, hx, weights, has_biases, num_layers, dropout, train, bidirectional,
        # batch_first; "train" only tells cuDNN to keep what its backward needs.
        out, *state = _TORCH_CELLS[cell](x, hx, [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0,
                                         torch.is_grad_enabled(), False, True)
    return out, state[0][0], state[1][0] if cell == "lstm" else None


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of values (B, T, H) over the positions where mask (B, T) is True; 0 if none."""
    if mask is None:
        return values.mean() if values.numel() else values.sum()
    kept = values.masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, T, H)
    return kept.sum() / (mask.sum() * values.shape[-1]).clamp(min=1)


def activation_regularization(outputs: torch.Tensor, alpha: float,
                              mask: torch.Tensor | None = None) -> torch.Tensor:
    """AR (Merity et al. 2017): alpha * mean(h_t ** 2), a penalty on large activations, over
    the last layer's outputs (B, T, H) as the decoder sees them (after dropout in the paper).
    mask (B, T): True at real positions; padded ones are left out of the mean."""
    if alpha == 0.0:
        return outputs.new_zeros(())
    return alpha * _masked_mean(outputs.pow(2), mask)


def temporal_activation_regularization(outputs: torch.Tensor, beta: float,
                                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """TAR (Merity et al. 2017): beta * mean((h_t - h_{t-1}) ** 2), a penalty on fast-changing
    states, over the last layer's raw outputs (B, T, H) (before dropout). A difference counts
    when both of its steps are real (mask (B, T)); the pair across two BPTT windows does not.
    0 when T < 2."""
    if beta == 0.0:
        return outputs.new_zeros(())
    steps = outputs[:, 1:] - outputs[:, :-1]  # (B, T-1, H)
    pairs = mask[:, 1:] & mask[:, :-1] if mask is not None else None  # (B, T-1)
    return beta * _masked_mean(steps.pow(2), pairs)


class NTASGD:
    """Non-monotonically triggered ASGD (Merity et al. 2017): plain SGD until a validation loss
    is worse than the best of those more than `nonmono` evaluations before it (nonmono 0: the
    best of all before it), then, after every optimizer step, the running average of the
    weights since the trigger.

    The optimizer is untouched (AWD-LSTM's ASGD with t0 = 0, lambd = 0 is SGD plus this
    average). Sums are kept in `dtype` (float64 by default: exact for thousands of steps of
    float32 weights), and the average is sum / count, cast to each parameter's dtype. Only the
    parameters that require a gradient at the first update are averaged; tied parameters once.
    """

    def __init__(self, nonmono: int = 5, dtype: torch.dtype = torch.float64):
        if nonmono < 0:
            raise ValueError(f"nonmono must not be negative, got {nonmono}")
        self.nonmono, self.dtype = nonmono, dtype
        self.losses: list[float] = []  # every validation loss observed, in order
        self.trigger_at: int | None = None  # index in `losses` of the one that triggered
        self.count = 0  # optimizer steps averaged
        self.sums: dict[str, torch.Tensor] = {}  # parameter name -> sum of its snapshots
        self._raw: dict[str, torch.Tensor] | None = None  # the SGD weights while swapped in

    @property
    def triggered(self) -> bool:
        return self.trigger_at is not None

    def observe(self, valid_loss: float) -> bool:
        """Record a validation loss; True when this one triggers the averaging."""
        # the losses more than `nonmono` evaluations ago (nonmono 0: all earlier ones)
        earlier = self.losses[:len(self.losses) - self.nonmono]
        start = not self.triggered and bool(earlier) and valid_loss > min(earlier)
        if start:
            self.trigger_at = len(self.losses)
        self.losses.append(float(valid_loss))
        return start

    def update(self, model: nn.Module) -> None:
        """Add the weights after an optimizer step to the average; nothing before the trigger."""
        if not self.triggered:
            return
        with torch.no_grad():
            for name, param in model.named_parameters():
                if self.count == 0 and param.requires_grad:
                    self.sums[name] = torch.zeros_like(param, dtype=self.dtype)
                if name in self.sums:
                    if self.sums[name].device != param.device:
                        self.sums[name] = self.sums[name].to(param.device)
                    self.sums[name].add_(param)  # exact: float32 -> float64 loses nothing
        self.count += 1

    def _averages(self, model: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        return {name: (total.to(params[name].device) / self.count).to(params[name].dtype)
                for name, total in self.sums.items()} if self.count else {}

    def averaged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """model.state_dict() with the averaged weights (the raw ones before any averaged
        step): for evaluation and for saving. A tied parameter gets its average under every
        name it has."""
        averages = self._averages(model)
        by_param = {id(param): averages[name] for name, param in model.named_parameters()
                    if name in averages}
        return {key: by_param.get(id(value), value).detach()
                for key, value in model.state_dict(keep_vars=True).items()}

    def swap_in(self, model: nn.Module) -> None:
        """Put the averaged weights into `model`, keeping its SGD weights aside."""
        if self._raw is not None:
            raise RuntimeError("the averaged weights are already swapped in")
        self._raw = {}
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.sums and self.count:
                    self._raw[name] = param.detach().clone()
                    param.copy_(self.sums[name] / self.count)

    def swap_out(self, model: nn.Module) -> None:
        """Put the SGD weights back, bit for bit."""
        if self._raw is None:
            raise RuntimeError("the averaged weights are not swapped in")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self._raw:
                    param.copy_(self._raw[name])
        self._raw = None

    @contextmanager
    def averaged(self, model: nn.Module) -> Iterator[nn.Module]:
        """`with ntasgd.averaged(model): evaluate(model)`: the averaged weights inside, the SGD
        ones after, even on an error."""
        self.swap_in(model)
        try:
            yield model
        finally:
            self.swap_out(model)

    def state_dict(self) -> dict:
        """Plain values and tensors only (torch.load(..., weights_only=True) reads them back)."""
        return {"nonmono": self.nonmono, "losses": list(self.losses),
                "trigger_at": self.trigger_at, "count": self.count, "sums": dict(self.sums)}

    def load_state_dict(self, state: dict) -> None:
        self.nonmono, self.losses = state["nonmono"], list(state["losses"])
        self.trigger_at, self.count = state["trigger_at"], state["count"]
        self.sums = dict(state["sums"])
        self._raw = None


class TiedDecoder(nn.Module):
    """Output layer sharing the embedding matrix (Press & Wolf 2017; Inan et al. 2017), for
    any hidden size: features (..., H) -> projection (E x H, only when H != E) -> (..., E)
    -> logits = e @ embedding.T + bias (..., V).

    The projection has no bias: W (P h + c) + b = W P h + (W c + b), so the decoder's bias
    already covers it. The decoder bias starts at zero, as in AWD-LSTM. With H == E the
    parameters are `weight` (the embedding's) and `bias`, the keys of lm.py's tied nn.Linear."""

    def __init__(self, embedding: nn.Embedding, hidden_size: int):
        super().__init__()
        vocab_size, embedding_dim = embedding.weight.shape
        self.projection = (nn.Linear(hidden_size, embedding_dim, bias=False)
                           if hidden_size != embedding_dim else None)
        self.weight = embedding.weight  # the same Parameter: one (V, E) matrix, two roles
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., H) -> logits (..., V)."""
        if self.projection is not None:
            features = self.projection(features)  # (..., E)
        return F.linear(features, self.weight, self.bias)


def bptt_length(base: int, rng: np.random.Generator, p: float = 0.95, std: float = 5.0,
                min_len: int = 5, max_len: int | None = None) -> int:
    """AWD-LSTM's variable BPTT: the mean is `base` with probability p, else base / 2; the
    length is int(normal(mean, std)), at least min_len and at most max_len (if given).
    Always two draws from `rng`, so the result is a pure function of its state."""
    mean = base if rng.random() < p else base / 2
    length = max(min_len, int(rng.normal(mean, std)))
    return length if max_len is None else min(length, max_len)


def window_starts(total_len: int, base: int, seed: int, epoch: int, p: float = 0.95,
                  std: float = 5.0, min_len: int = 5, max_len: int | None = None
                  ) -> list[tuple[int, int]]:
    """(start, length) of each BPTT window of an epoch over `total_len` positions (for an LM
    stream of W columns, W - 1: each input needs its next token), lengths from `bptt_length`
    with a generator seeded by (seed, epoch): the same list on every call, so a resume at
    window i finds the same windows. Windows follow each other without gap or overlap; the
    last one is cut to what is left (it may be shorter than min_len)."""
    if max_len is not None and max_len < min_len:
        raise ValueError(f"max_len {max_len} is below min_len {min_len}")
    rng = np.random.default_rng([seed, epoch])
    windows: list[tuple[int, int]] = []
    start = 0
    while start < total_len:
        length = min(bptt_length(base, rng, p, std, min_len, max_len), total_len - start)
        windows.append((start, length))
        start += length
    return windows


def lr_scale(length: int, base: int) -> float:
    """AWD-LSTM's learning-rate factor for a window of `length` steps: lr * length / base.
    The loss is a per-token mean, so without it a short window's few tokens would move the
    weights as far as a full window's many."""
    return length / base
