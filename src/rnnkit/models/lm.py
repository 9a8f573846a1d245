"""Word-level language model on the shared encoder (Zaremba et al. 2014 and kin).

    ids (B, T) -> embedding -> dropout -> stacked RNN (dropout between layers) -> dropout
               -> decoder (H -> V), optionally sharing the embedding matrix

Dropout touches only non-recurrent connections, as in the paper. The recurrent state is an
explicit argument and result: the training loop carries it from one BPTT window to the next.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnkit.config import ModelConfig
from rnnkit.errors import UsageError
from rnnkit.models.encoder import Encoder, State


class LanguageModel(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(vocab_size, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.decoder = nn.Linear(cfg.hidden_size, vocab_size)
        if cfg.tie_weights:
            if cfg.hidden_size != cfg.embedding_dim:
                raise UsageError("tie_weights needs hidden_size == embedding_dim "
                                 f"({cfg.hidden_size} != {cfg.embedding_dim})")
            self.decoder.weight = self.encoder.embedding.weight
        if cfg.init_range > 0:
            for param in self.parameters():
                nn.init.uniform_(param, -cfg.init_range, cfg.init_range)

    def forward(self, ids: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V) and the state after the last step."""
        outputs, state = self.encoder(ids, state=state)
        assert state is not None
        return self.decoder(self.dropout(outputs)), state

    def initial_state(self, batch_size: int) -> State:
        cfg = self.cfg
        weight = self.decoder.weight
        zeros = lambda: weight.new_zeros(cfg.num_layers, batch_size, cfg.hidden_size)  # noqa: E731
        return (zeros(), zeros()) if cfg.cell == "lstm" else (zeros(),)
