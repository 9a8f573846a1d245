"""Text classifier: the shared encoder, a pooling step and a linear head; optionally beside an
n-gram bag branch.

Pooling over right-padded outputs (B, T, D) with lengths (B,):
- `last`: the state at each sequence's last real token (forward direction) joined with the
  backward direction's state at the first token, i.e. each direction's final state;
- `mean` / `max`: over real positions only; `meanmax` concatenates both; `concat` joins
  last, mean and max (ULMFiT's concat pooling);
- `attention`: a learned score per position, softmax over real positions, weighted sum.

The n-gram branch (data.ngram_order > 0) scores hashed word n-grams present in the text, each
scaled by its naive-Bayes log-count ratio computed on the training split (the NBSVM recipe of
Wang & Manning 2012), through a learned per-feature weight. Both branches are trained with their
own loss; the prediction is a weighted mean of their log-probabilities, renormalized: the
encoder's weight (buffer `mix`, 0.5 until fitted) is fitted on the validation split at each
validation during training (classification.fit_mix) and saved with the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.config import ModelConfig
from rnnkit.models.encoder import Dropout, Encoder


def sequence_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B, T) bool: True at real tokens."""
    return torch.arange(seq_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class NgramBag(nn.Module):
    """Logistic regression on binarized n-gram features scaled by naive-Bayes log-count ratios.

    The weight table is a sparse embedding: a batch touches only the rows of its n-grams, so
    its gradient (and the optimizer's update, see train.make_optimizer) stays small however
    large the hashed table is.
    """

    def __init__(self, buckets: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout  # share of a text's features dropped in training
        self.register_buffer("ratios", torch.zeros(buckets, num_classes))
        self.weight = nn.Embedding(buckets, num_classes, sparse=True)
        nn.init.zeros_(self.weight.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, features: torch.Tensor, owner: torch.Tensor, batch_size: int
                ) -> torch.Tensor:
        """features (N,) hashed n-gram ids of the whole batch, owner (N,) their text's row."""
        scale = 1.0
        if self.training and self.dropout > 0:
            # Dropout on the bag (Wang & Manning 2013, "Fast dropout training"): each step
            # sees a random part of each text's n-grams, so no single n-gram (a film's title,
            # an actor's name) can carry a training text alone.
            keep = torch.rand(features.shape, device=features.device) >= self.dropout
            features, owner = features[keep], owner[keep]
            scale = 1.0 / (1.0 - self.dropout)
        per_feature = self.ratios[features] * self.weight(features) * scale  # (N, C)
        logits = torch.zeros(batch_size, self.bias.shape[0], device=features.device,
                             dtype=per_feature.dtype)
        return logits.index_add_(0, owner, per_feature) + self.bias


class Classifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, cfg: ModelConfig, pad_id: int,
                 ngram_buckets: int = 0):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(vocab_size, cfg, pad_id)
        if cfg.freeze_embeddings:
            self.encoder.embedding.weight.requires_grad_(False)
        width = self.encoder.output_size
        if cfg.pooling == "attention":
            self.attention = nn.Linear(width, 1)
        # On the pooled vector, one per text: locked dropout (one mask per sequence) is plain
        # dropout there, so `locked_dropout` changes nothing here.
        self.dropout = Dropout(cfg.rate("output"))
        parts = {"meanmax": 2, "concat": 3}.get(cfg.pooling, 1)
        self.head = nn.Linear(width * parts, num_classes)
        self.ngrams = (NgramBag(ngram_buckets, num_classes, cfg.ngram_dropout)
                       if ngram_buckets else None)
        if self.ngrams is not None:  # the encoder's weight in the mix (the n-grams: 1 - mix)
            self.register_buffer("mix", torch.tensor([0.5]))

    def pool(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, seq_len, width = outputs.shape
        pooling = self.cfg.pooling
        if pooling in ("last", "concat"):
            rows = torch.arange(batch, device=outputs.device)
            last = outputs[rows, lengths - 1]  # (B, D)
            if self.cfg.bidirectional:
                half = width // 2
                last = torch.cat([last[:, :half], outputs[:, 0, half:]], dim=-1)
            if pooling == "last":
                return last
        mask = sequence_mask(lengths, seq_len).unsqueeze(-1)  # (B, T, 1)
        if pooling == "attention":
            scores = self.attention(outputs).masked_fill(~mask, float("-inf"))
            return (torch.softmax(scores, dim=1) * outputs).sum(1)
        mean = (outputs * mask).sum(1) / lengths.unsqueeze(1).to(outputs.dtype)
        if pooling == "mean":
            return mean
        maxed = outputs.masked_fill(~mask, float("-inf")).max(1).values
        if pooling == "concat":
            return torch.cat([last, mean, maxed], dim=-1)
        return maxed if pooling == "max" else torch.cat([mean, maxed], dim=-1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor,
                ngrams: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """ids (B, T), lengths (B,) -> a list of (B, C) logits, one per branch."""
        outputs, _ = self.encoder(ids, lengths)
        branches = [self.head(self.dropout(self.pool(outputs, lengths)))]
        if self.ngrams is not None and ngrams is not None:
            branches.append(self.ngrams(ngrams[0], ngrams[1], ids.shape[0]))
        return branches

    # Saved state a run of an older version lacks; loading keeps the default (0.5, the plain
    # average those versions used).
    optional_state = ("mix",)

    def log_probs(self, branches: list[torch.Tensor]) -> torch.Tensor:
        """The branches' log-probabilities mixed with the encoder's weight `mix`: (B, C)."""
        return self.log_probs_of([F.log_softmax(b, dim=-1) for b in branches])

    def log_probs_of(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The same from each branch's log-probabilities."""
        return mix_log_probs(parts, float(self.mix) if len(parts) > 1 else 1.0)


def mix_log_probs(log_probs: list[torch.Tensor], weight: float) -> torch.Tensor:
    """weight * the encoder's + (1 - weight) * the n-grams' log-probabilities, renormalized."""
    if len(log_probs) == 1:
        return log_probs[0]
    return F.log_softmax(weight * log_probs[0] + (1.0 - weight) * log_probs[1], dim=-1)
