"""The sequential-MNIST classifier of the paper: three LSTM layers, a linear layer on the last
layer's last hidden state.

Input: MNIST average-pooled to 7x7 and read row by row, 7 time steps of 7 features
(``bdhf_bench.data``'s "smnist"). Hidden size 128 by default: the paper does not give one; 128
keeps the whole model at about 340k parameters and a batch-128 forward at about 0.6 GFLOP, so HF
steps (tens of curvature products each) stay affordable on a CPU, while three layers of 128 are
far from too small for 10 classes. The LSTM is ``lstm.StackedLSTM`` (primitive ops), whose second
derivatives and forward-mode products work on CPU and CUDA, unlike cuDNN's.
"""

from __future__ import annotations

from torch import Tensor, nn

from .lstm import StackedLSTM

HIDDEN_SIZE = 128
NUM_LAYERS = 3


class SequenceClassifier(nn.Module):
    """(N, T, features) -> class logits from the top layer's hidden state at the last step."""

    def __init__(
        self,
        input_size: int = 7,
        hidden_size: int = HIDDEN_SIZE,
        num_layers: int = NUM_LAYERS,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.lstm = StackedLSTM(input_size, hidden_size, num_layers)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.lstm(x)[:, -1])
