"""Problems on the data sets that ship inside packages: real data, offline, CPU-sized.

MNIST-1D (the ``mnist1d`` package's generator) and scikit-learn's 8x8 digits need no download, so
these four answer the benchmark's question on any machine in minutes; they make up the ``ci``
suite. Architectures: the MNIST-1D paper's MLP and CNN (problems/mnist1d.py), the BDHF paper's
3-layer LSTM on MNIST-1D's 40-step sequences, and the BDHF paper's deep autoencoder scaled to
8x8 digits (problems/autoencoder.py). Batch 100 is the MNIST-1D paper's; no weight decay (the
MNIST-1D paper uses none, nor does the autoencoder).

Default budgets are CPU-small, the ``ci`` suite's: 7 epochs (210 steps) for the MLP, 3 (90) for
the CNN, 2 (60) for the LSTM, 8 (96) for the autoencoder. The targets (targets.py) are what a
tuned Adam reaches on validation within them. The MNIST-1D paper trains 6,000 steps
(Adam, lr 1e-2); README.md gives what our Adam reaches with that budget beside its figures.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor

from ..curvature import BCEWithLogits, CrossEntropy
from .autoencoder import DIGITS_ENCODER_SIZES, deep_autoencoder
from .base import Problem, argmax_correct
from .mnist1d import LSTM_HIDDEN, ResidualMLP, conv_net, sequence_lstm
from .targets import target_for

MNIST1D_BATCH = 100
MNIST1D_NOTE = (
    "MNIST-1D: 3,000 train / 1,000 valid carved from the generator's 4,000 training sequences, "
    "1,000 test (the MNIST-1D paper trains on all 4,000)"
)


def _sequence_batch(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(N, 40) sequences -> (N, 40, 1): 40 time steps of one feature."""
    return x.unsqueeze(-1), y


def _autoencoder_batch(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    return x, x


def mnist1d_mlp() -> Problem:
    return Problem(
        name="mnist1d_mlp",
        description="MNIST-1D paper's MLP (40-100-100-10, ReLU, residual 2nd layer) on MNIST-1D",
        dataset="mnist1d",
        make_model=ResidualMLP,
        loss=CrossEntropy("mean"),
        batch_size=MNIST1D_BATCH,
        num_epochs=7,
        metric="accuracy",
        target=target_for("mnist1d_mlp"),
        correct=argmax_correct,
        notes=(
            "architecture: Greydanus (2020), MNIST-1D paper's MLP (problems/mnist1d.py)",
            MNIST1D_NOTE,
        ),
    )


def mnist1d_cnn() -> Problem:
    return Problem(
        name="mnist1d_cnn",
        description="MNIST-1D paper's CNN (three 25-channel 1-d convolutions, linear) on MNIST-1D",
        dataset="mnist1d",
        make_model=conv_net,
        loss=CrossEntropy("mean"),
        batch_size=MNIST1D_BATCH,
        num_epochs=3,
        metric="accuracy",
        target=target_for("mnist1d_cnn"),
        correct=argmax_correct,
        notes=(
            "architecture: Greydanus (2020), MNIST-1D paper's CNN (problems/mnist1d.py)",
            MNIST1D_NOTE,
        ),
    )


def mnist1d_lstm() -> Problem:
    return Problem(
        name="mnist1d_lstm",
        description=f"BDHF paper's 3-layer LSTM ({LSTM_HIDDEN} units) on MNIST-1D, 40 steps of 1",
        dataset="mnist1d",
        make_model=sequence_lstm,
        loss=CrossEntropy("mean"),
        batch_size=MNIST1D_BATCH,
        num_epochs=2,
        metric="accuracy",
        target=target_for("mnist1d_lstm"),
        prepare_batch=_sequence_batch,
        correct=argmax_correct,
        notes=(
            "architecture: Zhang et al. (2017)'s sequence model, 3 LSTM layers read out from the "
            "top layer's last hidden state (problems/smnist.py, problems/lstm.py)",
            f"hidden size {LSTM_HIDDEN}: 40 sequential steps make each HF step's tens of "
            "curvature products costly on a CPU",
            MNIST1D_NOTE,
        ),
    )


def digits_autoencoder() -> Problem:
    sizes = "-".join(str(n) for n in DIGITS_ENCODER_SIZES + DIGITS_ENCODER_SIZES[-2::-1])
    return Problem(
        name="digits_autoencoder",
        description=f"BDHF paper's deep autoencoder scaled to 8x8 digits ({sizes}, sigmoid, BCE)",
        dataset="digits",
        make_model=partial(deep_autoencoder, "sparse", DIGITS_ENCODER_SIZES),
        loss=BCEWithLogits("batch_mean"),
        batch_size=MNIST1D_BATCH,
        num_epochs=8,
        metric="loss",
        target=target_for("digits_autoencoder"),
        prepare_batch=_autoencoder_batch,
        notes=(
            "architecture: Hinton & Salakhutdinov (2006) / Martens (2010) autoencoder as in "
            "mnist_autoencoder, widths scaled to 64 pixels (problems/autoencoder.py)",
            "loss: sigmoid cross-entropy summed over the 64 pixels, averaged over images",
            "data: scikit-learn's digits, 1,200 train / 300 valid / 297 test (fixed test carve)",
        ),
    )


def offline_problems() -> list[Problem]:
    """The four problems on packaged data sets."""
    return [mnist1d_mlp(), mnist1d_cnn(), mnist1d_lstm(), digits_autoencoder()]
