"""The three problems of Zhang, Xiong, Bradbury, Socher (2017), "Block-diagonal Hessian-free
Optimization for Training Neural Networks", and a tiny synthetic one for CI.

The paper does not give batch sizes or epochs; ours are documented per problem (``notes``).
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from ..curvature import BCEWithLogits, CrossEntropy
from .autoencoder import INITS, deep_autoencoder
from .base import Problem, argmax_correct, weights_only_l2
from .resnet import CifarResNet
from .smnist import SequenceClassifier
from .targets import target_for


def _autoencoder_batch(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    return x, x.flatten(1)


def mnist_autoencoder(init: str = "sparse") -> Problem:
    """The deep autoencoder; ``init`` is "sparse" (Martens 2010, the default) or "pytorch"
    (registered under another name, ``mnist_autoencoder_pytorchinit``, when not the default)."""
    if init not in INITS:
        raise ValueError(f"unknown autoencoder init {init!r}; valid: {', '.join(INITS)}")
    how = {"sparse": "Martens 2010, 15 N(0,1) weights per unit", "pytorch": "nn.Linear default"}
    return Problem(
        name="mnist_autoencoder" if init == "sparse" else f"mnist_autoencoder_{init}init",
        description="paper: 784-1000-500-250-30 deep autoencoder on MNIST (sigmoid, BCE)",
        dataset="mnist",
        make_model=partial(deep_autoencoder, init),
        loss=BCEWithLogits("batch_mean"),
        batch_size=1000,
        num_epochs=50,
        metric="loss",
        target=target_for("mnist_autoencoder"),
        prepare_batch=_autoencoder_batch,
        notes=(
            f"initialisation: {init} ({how[init]})",
            "loss: sigmoid cross-entropy summed over pixels, averaged over images",
            "batch 1000 (an HF-style gradient batch; the curvature batch is the optimizer's)",
        ),
    )


def smnist_lstm() -> Problem:
    return Problem(
        name="smnist_lstm",
        description="paper: 3-layer LSTM (128 units) on 7x7 sequential MNIST (7 rows of 7)",
        dataset="smnist",
        make_model=SequenceClassifier,
        loss=CrossEntropy("mean"),
        batch_size=128,
        num_epochs=50,
        metric="accuracy",
        target=target_for("smnist_lstm"),
        correct=argmax_correct,
        notes=(
            "sequence: MNIST average-pooled 4x4 to 7x7, rows as 7 time steps of 7 features",
            "hidden size 128: CPU-affordable HF steps (see problems/smnist.py)",
        ),
    )


def cifar10_resnet() -> Problem:
    return Problem(
        name="cifar10_resnet",
        description="paper: ResNet-20 (He et al. 2016, BatchNorm) on CIFAR-10, augmented",
        dataset="cifar10",
        make_model=partial(CifarResNet, 20, 10),
        loss=CrossEntropy("mean"),
        batch_size=128,
        num_epochs=160,
        metric="accuracy",
        target=target_for("cifar10_resnet"),
        weight_decay=1e-4,
        l2=weights_only_l2,
        correct=argmax_correct,
        augment=True,
        notes=(
            "ResNet-20, option-A shortcuts; L2 1e-4 on conv and dense weights (He et al. 2016)",
            "augmentation: DeepOBS's CIFAR-10 one (pad 2, crop, flip, colour jitter)",
            "160 epochs: about He et al.'s 64k iterations at batch 128",
        ),
    )


def _tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def tiny_mlp() -> Problem:
    return Problem(
        name="tiny_mlp",
        description="CI: 8-16-4 tanh MLP on four generated Gaussian blobs",
        dataset="tiny",
        make_model=_tiny_mlp,
        loss=CrossEntropy("mean"),
        batch_size=50,
        num_epochs=5,
        metric="accuracy",
        target=target_for("tiny_mlp"),
        weight_decay=1e-4,
        l2=weights_only_l2,
        correct=argmax_correct,
        notes=("generated data: the same 1000/200/200 examples in every run (fixed seed)",),
    )


def paper_problems() -> list[Problem]:
    """The paper's three problems and the CI problem."""
    return [mnist_autoencoder(), smnist_lstm(), cifar10_resnet(), tiny_mlp()]
