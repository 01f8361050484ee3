"""An LSTM written with primitive tensor ops, so its curvature products work on every device.

cuDNN's fused LSTM has no double backward, and fused RNN kernels lack forward-mode AD on some
devices; GGN products need one or the other. Each layer here is a matmul over all time steps for
the input projection, then one small matmul and elementwise gates per step: only ``addmm``,
``sigmoid``, ``tanh`` and ``mul``, whose derivatives of every order exist on CPU and CUDA.
Parameters and initialisation follow ``torch.nn.LSTM`` (one module per layer, so the default
block partition puts each layer in its own block). The recurrence is
``curvature.lstm_recurrence``: these primitive operations everywhere except in the curvature
pass, where it is one node whose backward and tangent passes are written out (``lstm_rop``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..curvature import lstm_recurrence


class LSTMLayer(nn.Module):
    """One unidirectional LSTM layer over a batch-first sequence, ``nn.LSTM``'s gate layout."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (N, T, input_size) -> hidden states (N, T, hidden_size)."""
        # Both biases join the input projection once, and the transpose is taken once: the
        # loop's cost is dispatch, not arithmetic, and the curvature products replay it.
        pre = torch.nn.functional.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)
        return lstm_recurrence(pre, self.weight_hh.t())


class StackedLSTM(nn.Module):
    """``num_layers`` LSTM layers, batch-first, zero initial state."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        sizes = [input_size] + [hidden_size] * num_layers
        self.layers = nn.ModuleList(LSTMLayer(a, hidden_size) for a in sizes[:-1])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
