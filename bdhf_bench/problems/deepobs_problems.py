"""DeepOBS 1.2.0b0's PyTorch test problems, built from the ``deepobs`` package itself.

Nets come from ``deepobs.pytorch.testproblems.testproblems_modules``, L2 factors from each class's
``get_regularization_groups()``, batch sizes and epochs from ``deepobs.config``'s
``DEFAULT_TEST_PROBLEMS_SETTINGS``. What we do about DeepOBS 1.2.0b0's known defects:

- quadratic_deep: a different Hessian at every set-up -> made deterministic (DeepOBS's first
  set-up's Hessian), and split into output q = theta - x and loss 0.5 q^T Q q so the GGN is Q
  (DeepOBS's net outputs the loss itself, whose GGN would be zero). See ``deepobs_losses``.
- svhn_wrn164: ``BatchNorm2d(momentum=0.9)`` is TensorFlow's decay (keep 90% of the running
  statistics); in torch, momentum is the weight of the NEW batch, so 0.9 keeps only 10%. We set
  torch's 0.1, which is what TensorFlow's 0.9 means.
- cifar100_3c3d: no default batch size or epochs in DeepOBS -> we use cifar10_3c3d's (128, 100):
  the same net and data set size.
- Train accuracy on augmented images: DeepOBS evaluates train_eval through the augmenting train
  DataLoader; our train_eval split is never augmented (see ``bdhf_bench.data.splits``).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

from torch import Tensor, nn

from ..curvature import CrossEntropy
from .base import Problem, argmax_correct
from .deepobs_l2 import deepobs_l2
from .deepobs_losses import quadratic_loss, quadratic_model, vae_loss
from .targets import target_for

# deepobs.config.DEFAULT_TEST_PROBLEMS_SETTINGS, read when the problems are built (see below).
CIFAR100_3C3D_SETTINGS = {"batch_size": 128, "num_epochs": 100}
"""Our choice for cifar100_3c3d, which DeepOBS 1.2.0b0 lacks: cifar10_3c3d's settings."""
TF_BN_MOMENTUM_FIX = 0.1


def _modules() -> ModuleType:
    """DeepOBS's net module, imported when a model is built (deepobs imports take a second)."""
    from deepobs.pytorch.testproblems import testproblems_modules

    return testproblems_modules


def _net(name: str, *args: object, **kwargs: object) -> nn.Module:
    return getattr(_modules(), name)(*args, **kwargs)


def _wrn164() -> nn.Module:
    net = _net("net_wrn", num_residual_blocks=2, widening_factor=4, num_outputs=10)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = TF_BN_MOMENTUM_FIX
    return net


@functools.lru_cache(maxsize=1)
def _deepobs_config() -> ModuleType:
    """DeepOBS's ``config`` module, read from its own file without running ``deepobs/__init__``:
    that imports DeepOBS's analyzer (matplotlib, pandas, ~3 s), which every process listing the
    problems would pay for a table of constants (config.py imports nothing)."""
    loaded = sys.modules.get("deepobs.config")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("deepobs")
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("deepobs is not installed (pip install deepobs==1.2.0b0)")
    path = Path(package.submodule_search_locations[0]) / "config.py"
    spec = importlib.util.spec_from_file_location("_bdhf_deepobs_config", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _settings(name: str) -> dict[str, int]:
    settings = _deepobs_config().DEFAULT_TEST_PROBLEMS_SETTINGS
    return settings.get(name, CIFAR100_3C3D_SETTINGS)


def _vae_batch(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """A VAE reconstructs its input: the targets are the images."""
    return x, x


def _classifier(
    name: str,
    dataset: str,
    make_model: Callable[[], nn.Module],
    description: str,
    weight_decay: float = 0.0,
    augment: bool = False,
    notes: tuple[str, ...] = (),
) -> Problem:
    settings = _settings(name)
    return Problem(
        name=name,
        description=description,
        dataset=dataset,
        make_model=make_model,
        loss=CrossEntropy("mean"),
        batch_size=settings["batch_size"],
        num_epochs=settings["num_epochs"],
        metric="accuracy",
        target=target_for(name),
        weight_decay=weight_decay,
        l2=deepobs_l2(name),
        correct=argmax_correct,
        augment=augment,
        notes=notes,
    )


def _vae(name: str, dataset: str) -> Problem:
    settings = _settings(name)
    return Problem(
        name=name,
        description=f"DeepOBS: variational autoencoder on {dataset} (loss: reconstruction + KL)",
        dataset=dataset,
        make_model=partial(_net, "net_vae", n_latent=8),
        loss=vae_loss(),
        batch_size=settings["batch_size"],
        num_epochs=settings["num_epochs"],
        metric="loss",
        target=target_for(name),
        l2=deepobs_l2(name),
        prepare_batch=_vae_batch,
        notes=("the forward pass is random (dropout and the reparameterisation noise)",),
    )


def deepobs_problems() -> list[Problem]:
    """The twelve DeepOBS problems this benchmark registers."""
    ten = partial(_net, num_outputs=10)
    return [
        _classifier(
            "mnist_logreg",
            "mnist",
            partial(_net, "net_mnist_logreg", num_outputs=10),
            "DeepOBS: multinomial logistic regression on MNIST",
        ),
        _classifier("mnist_mlp", "mnist", partial(ten, "net_mlp"), "DeepOBS: 4-layer MLP on MNIST"),
        _classifier(
            "mnist_2c2d",
            "mnist",
            partial(ten, "net_mnist_2c2d"),
            "DeepOBS: 2 conv + 2 dense, MNIST",
        ),
        _vae("mnist_vae", "mnist"),
        _classifier(
            "fmnist_mlp", "fmnist", partial(ten, "net_mlp"), "DeepOBS: 4-layer MLP on Fashion-MNIST"
        ),
        _classifier(
            "fmnist_2c2d",
            "fmnist",
            partial(ten, "net_mnist_2c2d"),
            "DeepOBS: 2 conv + 2 dense on Fashion-MNIST",
        ),
        _vae("fmnist_vae", "fmnist"),
        _classifier(
            "cifar10_3c3d",
            "cifar10",
            partial(ten, "net_cifar10_3c3d"),
            "DeepOBS: 3 conv + 3 dense on CIFAR-10",
            weight_decay=0.002,
            augment=True,
        ),
        _classifier(
            "cifar100_3c3d",
            "cifar100",
            partial(_net, "net_cifar10_3c3d", num_outputs=100),
            "DeepOBS: 3 conv + 3 dense on CIFAR-100",
            weight_decay=0.002,
            augment=True,
            notes=("DeepOBS 1.2.0b0 has no default settings: cifar10_3c3d's (128, 100) used",),
        ),
        _classifier(
            "cifar100_allcnnc",
            "cifar100",
            partial(_net, "net_cifar100_allcnnc"),
            "DeepOBS: All-CNN-C on CIFAR-100",
            weight_decay=5e-4,
            augment=True,
        ),
        _classifier(
            "svhn_wrn164",
            "svhn",
            _wrn164,
            "DeepOBS: Wide ResNet 16-4 on SVHN",
            weight_decay=5e-4,
            augment=True,
            notes=("BatchNorm momentum 0.9 (TensorFlow's meaning) set to torch's 0.1",),
        ),
        Problem(
            name="quadratic_deep",
            description="DeepOBS: noisy 100-d quadratic with a deep-learning-like eigenspectrum",
            dataset="quadratic",
            make_model=quadratic_model,
            loss=quadratic_loss(),
            batch_size=_settings("quadratic_deep")["batch_size"],
            num_epochs=_settings("quadratic_deep")["num_epochs"],
            metric="loss",
            target=target_for("quadratic_deep"),
            l2=deepobs_l2("quadratic_deep"),
            notes=(
                "deterministic Hessian (DeepOBS's first set-up's); outputs q = theta - x, "
                "loss 0.5 q^T Q q, so the GGN is Q",
            ),
        ),
    ]
