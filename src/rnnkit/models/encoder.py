"""The encoder shared by the classifier and the language model: embedding + RNN stack.

Variable-length batches are right-padded and handled exactly without packing. On CPU,
`pack_padded_sequence` drops oneDNN's fused LSTM kernel for a step-by-step fallback that trains
several times slower, so instead:
- the forward direction reads the padded batch as is: padding comes after every real token,
  so the state at a sequence's last real step never saw padding;
- the backward direction reads each sequence reversed *within its own length*
  ("a b c <pad>" -> "c b a <pad>"), so it also starts at a real token, and its outputs are put
  back in reading order with the same (self-inverse) index;
- pooling masks out padded positions.
A text's result therefore does not depend on its padding or on the other texts in its batch.

LSTM layers with up to `kernels.MAX_HIDDEN` units run on rnnkit's native kernel on CPU
(rnnkit.kernels: the same function and parameters as nn.LSTM, faster for small models); larger
ones, other cells, GPUs and bf16 autocast use torch's kernels.

AWD-LSTM's regularisers (rnnkit.models.regularizers), each off by default and each only in
training (`model.eval()` reads the raw weights with no dropout of any kind):
- embedding dropout (`embedding_dropout`): whole word types dropped, rows of the matrix;
- locked dropout (`locked_dropout`): the dropout on the embeddings (`input_dropout`) and between
  layers (`hidden_dropout`) keeps one mask per sequence for the whole window;
- weight drop (`weight_drop`): DropConnect on each layer's hidden-to-hidden matrix, one mask
  per batch; the stack then runs layer by layer, on the native kernel or torch's
  (`regularizers.rnn_layer`), with the module's own parameters (same names, same checkpoints).
The Jordan cell (`cell="jordan"`, rnnkit.models.jordan) stands in for the RNN module: one
layer, one direction, its state the previous output y (a 1-tuple like GRU's and Elman's).

A last layer of its own size (`last_layer_size`, AWD-LSTM's 400-unit third layer under 1150-unit
ones) is a second module, `last`, after `rnn`'s num_layers - 1 layers; the stack then always
runs layer by layer. The state keeps its (layers, B, width) shape, width the largest layer:
a smaller layer's state fills the first entries of its row, the rest stay zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit import kernels
from rnnkit.config import ModelConfig
from rnnkit.models.jordan import JordanRNN
from rnnkit.models.regularizers import LockedDropout, drop_weights, embedding_dropout, rnn_layer

RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

State = tuple[torch.Tensor, ...]  # LSTM: (h, c); GRU/Elman/Jordan: (h,); each (layers, B, H)


class Dropout(nn.Module):
    """Inverted dropout, as nn.Dropout, with a cheaper mask on CPU.

    On CPU each element is kept when a uniform 16-bit draw is at least round(p * 65536), four
    draws to one 64-bit random number, and kept elements are scaled by the inverse of that
    keep rate: the drop rate is p to within 2^-17. The mask costs half as much as
    `rand_like(x) >= p` (0.61 against 1.28 ms for a 24 x 191 x 50 batch of embeddings, the
    largest tensor of the imdb-seed step; nn.Dropout's Bernoulli sampler took 3.4 ms on a
    batch of that size). Elsewhere the mask is `rand_like(x) >= p`."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))
        level = round(self.p * 65536)
        n = x.numel()
        draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)
        keep = draws.view(torch.int16)[:n].view(x.shape) >= level - 32768
        return x * keep * (65536 / (65536 - level))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def make_dropout(p: float, locked: bool) -> nn.Module:
    """Dropout on (B, T, D) activations: a fresh mask per element, or with `locked` one mask
    per sequence shared by all its time steps (AWD-LSTM's LockedDropout)."""
    return LockedDropout(p) if locked else Dropout(p)


def reverse_index(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B, T) positions that reverse each row's first `length` entries and keep the rest."""
    steps = torch.arange(seq_len, device=lengths.device).unsqueeze(0)  # (1, T)
    lengths = lengths.unsqueeze(1)  # (B, 1)
    return torch.where(steps < lengths, lengths - 1 - steps, steps)


def _layer_weights(rnn: nn.RNNBase, layer: int) -> list[torch.Tensor]:
    """weight_ih, weight_hh, bias_ih, bias_hh of one layer of a torch RNN module."""
    return [getattr(rnn, f"{name}_l{layer}")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig, pad_id: int = -1):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim,
                                      padding_idx=pad_id if pad_id >= 0 else None)
        self.dropout = make_dropout(cfg.rate("input"), cfg.locked_dropout)  # on the embeddings
        self.between = make_dropout(cfg.rate("hidden"), cfg.locked_dropout)  # between layers
        between = cfg.rate("hidden") if cfg.num_layers > 1 else 0.0
        self.last: nn.RNNBase | None = None  # a last layer of another size (last_layer_size)
        last_size = cfg.last_layer_size or cfg.hidden_size
        self.state_width = max(cfg.hidden_size, last_size)  # of each layer's row in the state
        if cfg.cell == "jordan":  # one layer, one direction (ModelConfig refuses the rest)
            self.rnn = JordanRNN(cfg.embedding_dim, cfg.hidden_size, batch_first=True)
            return
        rnn = RNN_CLASSES[cfg.cell]
        if cfg.bidirectional:
            # One single-layer RNN per direction and layer, so each direction can be fed its own
            # (per-sequence reversed) input; layers are joined by dropout.
            sizes = [cfg.embedding_dim] + [2 * cfg.hidden_size] * (cfg.num_layers - 1)
            self.forward_rnns = nn.ModuleList(
                rnn(size, cfg.hidden_size, batch_first=True) for size in sizes)
            self.backward_rnns = nn.ModuleList(
                rnn(size, cfg.hidden_size, batch_first=True) for size in sizes)
        elif last_size != cfg.hidden_size:  # num_layers >= 2 (ModelConfig checks)
            # the stack runs layer by layer (`_stack`), with its own dropout between layers
            self.rnn = rnn(cfg.embedding_dim, cfg.hidden_size, num_layers=cfg.num_layers - 1,
                           batch_first=True)
            self.last = rnn(cfg.hidden_size, last_size, batch_first=True)
        else:
            self.rnn = rnn(cfg.embedding_dim, cfg.hidden_size, num_layers=cfg.num_layers,
                           batch_first=True, dropout=between)

    def _layers(self) -> list[tuple[nn.RNNBase, int]]:
        """The unidirectional stack's layers, bottom up, as (module, index in the module)."""
        layers = [(self.rnn, i) for i in range(self.rnn.num_layers)]
        return layers + [(self.last, 0)] if self.last is not None else layers

    def _row(self, state: torch.Tensor, layer: int, size: int) -> torch.Tensor:
        """Layer `layer`'s (B, size) part of a (layers, B, width) state."""
        row = state[layer]
        return row if size == self.state_width else row[:, :size].contiguous()

    def _stacked(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """(B, size) rows -> a (layers, B, width) state, smaller rows zero-padded."""
        return torch.stack([F.pad(r, (0, self.state_width - r.shape[1])) for r in rows])

    def _one_step(self, x: torch.Tensor, state: State | None
                  ) -> tuple[torch.Tensor, State]:
        """One time step in evaluation (generation feeds one token at a time), with plain
        matrix products: the fused RNN kernel re-lays its weights out on every call, which
        costs more than the step itself (0.5 vs 0.15 ms for a 2x200 LSTM at batch 1 on the
        2-core CPU, 19 vs 1.5 ms for 2x650). Same arithmetic as nn.LSTM/GRU/RNN, up to float
        rounding; x (B, E) -> outputs (B, 1, H) and the new state."""
        cell, layers = self.cfg.cell, self._layers()
        if state is None:
            zeros = x.new_zeros(len(layers), x.shape[0], self.state_width)
            state = (zeros, zeros) if cell == "lstm" else (zeros,)
        hs, cs = [], []
        for layer, (rnn, index) in enumerate(layers):
            w_ih, w_hh, b_ih, b_hh = _layer_weights(rnn, index)
            size = w_hh.shape[1]
            h = self._row(state[0], layer, size)
            if cell == "lstm":
                gates = torch.addmm(F.linear(x, w_ih, b_ih), h, w_hh.t()).add_(b_hh)
                i, f, g, o = gates.chunk(4, 1)
                c = (torch.sigmoid(f) * self._row(state[1], layer, size)
                     + torch.sigmoid(i) * torch.tanh(g))
                h = torch.sigmoid(o) * torch.tanh(c)
                cs.append(c)
            elif cell == "gru":
                ir, iz, i_n = F.linear(x, w_ih, b_ih).chunk(3, 1)
                hr, hz, h_n = F.linear(h, w_hh, b_hh).chunk(3, 1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(i_n + r * h_n)
                h = n + z * (h - n)
            else:
                h = torch.tanh(torch.addmm(F.linear(x, w_ih, b_ih), h, w_hh.t()).add_(b_hh))
            hs.append(h)
            x = h  # dropout between layers is off in evaluation
        if self.last is None:
            new_state = ((torch.stack(hs), torch.stack(cs)) if cell == "lstm"
                         else (torch.stack(hs),))
        else:
            new_state = ((self._stacked(hs), self._stacked(cs)) if cell == "lstm"
                         else (self._stacked(hs),))
        return x.unsqueeze(1), new_state

    def _native(self, x: torch.Tensor) -> bool:
        """Whether the LSTM layers run on the native kernel (rnnkit.kernels) for this input."""
        return self.cfg.cell == "lstm" and kernels.usable(x, self.state_width)

    def _weights(self, rnn: nn.RNNBase, layer: int) -> list[torch.Tensor]:
        """One layer's weights as this step uses them: in training with weight drop, w_hh
        through DropConnect (a new mask per call), else the module's own."""
        w_ih, w_hh, b_ih, b_hh = _layer_weights(rnn, layer)
        return [w_ih, drop_weights(w_hh, self.cfg.weight_drop, self.training), b_ih, b_hh]

    def _layerwise(self) -> bool:
        """Whether a unidirectional stack must run layer by layer outside nn.LSTM/GRU/RNN's own
        call: weight drop replaces w_hh, and locked dropout between layers is not the module's
        dropout. Only in training; evaluation always reads the raw weights without dropout."""
        return self.last is not None or self.training and (self.cfg.weight_drop > 0 or (
            self.cfg.locked_dropout and self.cfg.num_layers > 1))

    def _stack(self, x: torch.Tensor, state: State | None, native: bool
               ) -> tuple[torch.Tensor, State]:
        """self.rnn's computation, layer by layer, on the native kernel or torch's, with the
        same parameters and, in training, dropout between layers and weight drop. Masks are
        drawn in the same order on both paths (between-layer dropout, then w_hh), so with the
        same seed both compute the same function."""
        cell, hs, cs = self.cfg.cell, [], []
        layer_fn = kernels.lstm_layer if native else (
            lambda *args: rnn_layer(cell, *args))
        between = self.cfg.num_layers > 1 and self.cfg.rate("hidden") > 0
        for layer, (rnn, index) in enumerate(self._layers()):
            if layer > 0 and self.training and between:
                x = self.between(x)
            weights = self._weights(rnn, index)
            size = weights[1].shape[1]
            h0 = self._row(state[0], layer, size) if state is not None else None
            c0 = self._row(state[1], layer, size) if state is not None and cell == "lstm" \
                else None
            x, h, c = layer_fn(x, *weights, h0, c0)
            hs.append(h)
            cs.append(c)
        stack = torch.stack if self.last is None else self._stacked
        return x, (stack(hs), stack(cs)) if cell == "lstm" else (stack(hs),)

    def _run_single(self, rnn: nn.RNNBase, x: torch.Tensor, native: bool) -> torch.Tensor:
        """Outputs of a one-layer, one-direction RNN from a zero state."""
        if native:
            return kernels.lstm_layer(x, *self._weights(rnn, 0))[0]
        if self.training and self.cfg.weight_drop > 0:
            return rnn_layer(self.cfg.cell, x, *self._weights(rnn, 0))[0]
        return rnn(x)[0]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> embeddings (B, T, E), in training through embedding dropout (a word
        type dropped is dropped at all its positions in the batch)."""
        if not (self.training and self.cfg.embedding_dropout > 0):
            return self.embedding(ids)
        emb = self.embedding
        weight = embedding_dropout(emb.weight, self.cfg.embedding_dropout, True)
        return F.embedding(ids, weight, emb.padding_idx, emb.max_norm, emb.norm_type,
                           emb.scale_grad_by_freq, emb.sparse)

    @property
    def output_size(self) -> int:
        if self.last is not None:
            return self.last.hidden_size
        return self.cfg.hidden_size * (2 if self.cfg.bidirectional else 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None,
                state: State | None = None) -> tuple[torch.Tensor, State | None]:
        """ids (B, T) -> outputs (B, T, output_size) and the final state (unidirectional only).

        `lengths` (B,) is needed only for the bidirectional case; a unidirectional RNN never
        looks ahead, so right padding cannot change its outputs at real positions.
        """
        x = self.dropout(self.embed(ids))  # (B, T, E)
        if not self.cfg.bidirectional:
            if ids.shape[1] == 1 and not self.training and self.cfg.cell != "jordan":
                return self._one_step(x[:, 0], state)
            native = self._native(x)
            if native or self._layerwise():
                return self._stack(x, state, native)
            if state is not None and self.cfg.cell != "lstm":
                state = state[0]  # type: ignore[assignment]
            out, new_state = self.rnn(x, state)
            new_state = new_state if isinstance(new_state, tuple) else (new_state,)
            return out, new_state
        if lengths is None:
            lengths = torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long,
                                 device=ids.device)
        index = reverse_index(lengths, ids.shape[1])
        native = self._native(x)
        for layer, (fwd, bwd) in enumerate(zip(self.forward_rnns, self.backward_rnns)):
            if layer > 0:
                x = self.between(x)
            forward_out = self._run_single(fwd, x, native)
            backward_out = self._run_single(bwd, _gather_time(x, index), native)
            x = torch.cat([forward_out, _gather_time(backward_out, index)], dim=-1)
        return x, None
