"""Word-level language model on the shared encoder (Zaremba et al. 2014 and kin).

    ids (B, T) -> embedding -> dropout -> stacked RNN (dropout between layers) -> dropout
               -> output layer over the vocabulary

Dropout touches only non-recurrent connections, as in the paper. The recurrent state is an
explicit argument and result: the training loop carries it from one BPTT window to the next.
AWD-LSTM's regularisers (Merity et al. 2017) are settings of the encoder (embedding dropout,
locked dropout, weight drop) and of this output dropout (`output_dropout`, locked or not);
AR/TAR read `features_and_raw`.

Tied weights (Press & Wolf 2017; Inan et al. 2017): the decoder's matrix is the embedding's.
When the last layer has embedding_dim units (hidden_size, or AWD-LSTM's `last_layer_size`) it
is a plain nn.Linear with the shared weight (state-dict keys `decoder.weight`,
`decoder.bias`); otherwise a `TiedDecoder` projects the H outputs to E first
(`decoder.projection.weight`, no bias), so any size can be tied. The projection is linear, so
the logits are not bounded by the cell's tanh as a last layer of E units keeps them: at
AWD's SGD rate 30 (clip 0.25) a projected 650- or 1150-unit model spiked to losses of 30-60
in its first steps on PTB, where the AWD layout settles. Prefer `last_layer_size`.

The output layer is either the full softmax (a linear decoder, optionally sharing the
embedding matrix) or an adaptive softmax (Grave et al. 2017): frequent words in a small head,
rarer ones in tail clusters with smaller projections. Both are exact, normalized distributions
over the whole vocabulary; the adaptive one costs far less per token for large vocabularies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.config import ModelConfig
from rnnkit.models.encoder import Encoder, State, make_dropout
from rnnkit.models.regularizers import TiedDecoder


class LanguageModel(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(vocab_size, cfg)
        self.dropout = make_dropout(cfg.rate("output"), cfg.locked_dropout)
        self.adaptive: nn.AdaptiveLogSoftmaxWithLoss | None = None
        width = self.encoder.output_size  # the last layer's units
        # Cutoffs at or past the vocabulary's end make no cluster; with none left the
        # adaptive softmax is its head alone, the full softmax, built as such.
        cutoffs = [int(c) for c in cfg.cutoffs.split(",") if 0 < int(c) < vocab_size - 1]
        if cfg.softmax == "adaptive" and cutoffs:
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(width, vocab_size, cutoffs,
                                                          div_value=4.0)
        elif cfg.tie_weights and width != cfg.embedding_dim:
            self.decoder = TiedDecoder(self.encoder.embedding, width)
        else:
            self.decoder = nn.Linear(width, vocab_size)
            if cfg.tie_weights:
                self.decoder.weight = self.encoder.embedding.weight
        if cfg.init_range > 0:
            for param in self.parameters():
                nn.init.uniform_(param, -cfg.init_range, cfg.init_range)
            if isinstance(getattr(self, "decoder", None), TiedDecoder):
                nn.init.zeros_(self.decoder.bias)  # the tied decoder's bias starts at 0 (AWD)

    def features(self, ids: torch.Tensor, state: State | None = None
                 ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> the output layer's input (B, T, H) and the state after the last step."""
        features, _, state = self.features_and_raw(ids, state)
        return features, state

    def features_and_raw(self, ids: torch.Tensor, state: State | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """ids (B, T) -> the output layer's input (B, T, H: after the output dropout), the last
        layer's raw outputs (B, T, H: before it) and the state after the last step. AR reads
        the first, TAR the second."""
        outputs, state = self.encoder(ids, state=state)
        assert state is not None
        return self.dropout(outputs), outputs, state

    def token_nll(self, features: torch.Tensor, targets: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
        """Negative log-likelihood of targets (B, T) given features (B, T, H)."""
        flat = features.reshape(-1, features.shape[-1])
        if self.adaptive is None:
            return F.cross_entropy(self.decoder(flat), targets.reshape(-1), reduction=reduction)
        nll = -self.adaptive(flat, targets.reshape(-1)).output
        return nll.mean() if reduction == "mean" else nll.sum()

    def forward(self, ids: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> scores (B, T, V) whose softmax is the next-token distribution (logits
        for the full softmax, log-probabilities for the adaptive one) and the new state."""
        features, state = self.features(ids, state)
        if self.adaptive is None:
            return self.decoder(features), state
        flat = self.adaptive.log_prob(features.reshape(-1, features.shape[-1]))
        return flat.view(*features.shape[:2], -1), state

    def initial_state(self, batch_size: int) -> State:
        cfg = self.cfg
        weight = self.encoder.embedding.weight
        width = self.encoder.state_width
        zeros = lambda: weight.new_zeros(cfg.num_layers, batch_size, width)  # noqa: E731
        return (zeros(), zeros()) if cfg.cell == "lstm" else (zeros(),)
