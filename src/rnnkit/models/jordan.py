"""A Jordan network (Jordan 1986): the recurrence goes through the output, not the state.

    Elman (nn.RNN):  h_t = tanh(W x_t + U h_{t-1} + b)             the hidden state feeds back
    Jordan (here):   h_t = tanh(W_x x_t + W_y y_{t-1} + b)
                     y_t = W_o h_t + b_o                            the output feeds back

y_t is the network's linear output (no squashing), of `output_size` units; it is both what
the module returns at step t and the only thing carried to step t + 1, so whatever the model
remembers must be visible in its outputs. In Jordan's paper the output units feed "state"
units that also keep a decaying copy of themselves (s_t = mu s_{t-1} + y_{t-1}); this teaching
version keeps the plain feedback (mu = 0). A Python loop over time steps: small and readable,
not fast.
"""

from __future__ import annotations

import torch
from torch import nn


class JordanRNN(nn.Module):
    """One Jordan layer with nn.RNN's calling convention:
    forward(x (B, T, I), state (1, B, O) or None) -> outputs (B, T, O), state (1, B, O),
    where the outputs are the y_t and the state is y_T (zeros when None).
    With batch_first=False, x and outputs are (T, B, ...) as in nn.RNN."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int | None = None,
                 batch_first: bool = True):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.output_size = hidden_size if output_size is None else output_size
        self.batch_first = batch_first
        self.num_layers, self.bidirectional = 1, False  # what nn.RNN's users read
        self.input_layer = nn.Linear(input_size, hidden_size)  # W_x, b
        self.feedback = nn.Linear(self.output_size, hidden_size, bias=False)  # W_y
        self.output_layer = nn.Linear(hidden_size, self.output_size)  # W_o, b_o

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.batch_first:
            x = x.transpose(0, 1)  # (T, B, I) -> (B, T, I)
        batch, steps, _ = x.shape
        y = x.new_zeros(batch, self.output_size) if state is None else state[0]  # (B, O)
        inputs = self.input_layer(x)  # (B, T, H): W_x x_t + b for all steps at once
        outputs = []
        for t in range(steps):
            h = torch.tanh(inputs[:, t] + self.feedback(y))  # (B, H)
            y = self.output_layer(h)  # (B, O)
            outputs.append(y)
        out = torch.stack(outputs, dim=1)  # (B, T, O)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, y.unsqueeze(0)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, output_size={self.output_size}, "
                f"batch_first={self.batch_first}")
