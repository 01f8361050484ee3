"""Models for MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439).

The MLP and the CNN are the paper's benchmark models, rebuilt here from their published
description (the paper's ``notebooks/models.py`` in github.com/greydanus/mnist1d):

- MLP: 40 -> 100 -> 100 -> 10 with ReLU; the second hidden layer is residual,
  ``h2 = h1 + relu(W2 h1 + b2)``. 15,210 parameters.
- CNN: three 1-d convolutions of 25 channels with ReLU, kernel 5 then 3 and 3, stride 2,
  padding 1 (40 -> 19 -> 10 -> 5 points), then a linear layer from the 125 features to the 10
  classes. 5,210 parameters.

Each layer is its own module, so the default block partition gives BDHF one block per layer.
"""

from __future__ import annotations

from torch import Tensor, nn

from .smnist import SequenceClassifier

SEQUENCE_LENGTH = 40
NUM_CLASSES = 10
MLP_HIDDEN = 100
CNN_CHANNELS = 25
LSTM_HIDDEN = 32
LSTM_LAYERS = 3


class ResidualMLP(nn.Module):
    """The MNIST-1D paper's MLP: two hidden ReLU layers, the second with a skip connection."""

    def __init__(self, inputs: int = SEQUENCE_LENGTH, hidden: int = MLP_HIDDEN) -> None:
        super().__init__()
        self.linear1 = nn.Linear(inputs, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(x).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


def conv_net(channels: int = CNN_CHANNELS) -> nn.Sequential:
    """The MNIST-1D paper's CNN on (N, 40) sequences."""
    return nn.Sequential(
        nn.Unflatten(1, (1, SEQUENCE_LENGTH)),
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * channels, NUM_CLASSES),
    )


def sequence_lstm() -> SequenceClassifier:
    """The BDHF paper's sequence model on MNIST-1D: 3 LSTM layers over 40 steps of 1 feature,
    read out from the top layer's last hidden state (inputs shaped (N, 40, 1))."""
    return SequenceClassifier(1, LSTM_HIDDEN, LSTM_LAYERS, NUM_CLASSES)
