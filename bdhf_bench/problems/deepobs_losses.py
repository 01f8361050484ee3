"""DeepOBS losses as the curvature engine sees them: the VAEs' loss and the noisy quadratic.

VAE: DeepOBS's ``vae_loss_function_factory("mean")`` on the net's outputs (images, means,
log-std-devs): per image, the squared reconstruction error summed over pixels plus the KL term,
averaged over the batch. It is convex in those outputs (a quadratic in the images; m^2 and
exp(2s) - 2s in the latent statistics), so a ``ConvexOutputLoss`` gives its exact GGN.

Quadratic: DeepOBS's ``net_quadratic_deep`` outputs the loss 0.5 (theta - x)^T Q (theta - x)
itself, so the loss "on the outputs" would be the identity and the GGN would be zero. We split it
the natural way: the model outputs q = theta - x and the loss is 0.5 q^T Q q (batch mean), so the
GGN is exactly Q. The value is DeepOBS's.

DeepOBS 1.2.0b0 draws the quadratic's rotation from a module-level RandomState(42) that advances
at every ``set_up()``, so each set-up in one process gets a different Hessian. We run DeepOBS's
own ``set_up()`` with a fresh RandomState(42) in place of that module state: the Hessian is the
one DeepOBS builds at its first set-up in a fresh process, every time.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ..curvature import ConvexOutputLoss

_RNG_LOCK = threading.Lock()


def _vae_mean(images: Tensor, means: Tensor, std_devs: Tensor, targets: Tensor) -> Tensor:
    from deepobs.pytorch.testproblems.testproblems_utils import vae_loss_function_factory

    return vae_loss_function_factory(reduction="mean")(images, targets, means, std_devs)


def vae_loss() -> ConvexOutputLoss:
    """DeepOBS's VAE loss (mean over the batch) on outputs (images, means, std_devs)."""
    return ConvexOutputLoss(_vae_mean, reduction="batch_mean")


@contextlib.contextmanager
def _fresh_rotation_rng() -> Iterator[None]:
    # The package re-exports the class under the module's name: fetch the module itself.
    module = importlib.import_module("deepobs.pytorch.testproblems.quadratic_deep")
    with _RNG_LOCK:
        saved = module.rng
        module.rng = np.random.RandomState(42)
        try:
            yield
        finally:
            module.rng = saved


@functools.lru_cache(maxsize=1)
def _hessian_cpu() -> Tensor:
    from deepobs.pytorch.testproblems import quadratic_deep

    problem = quadratic_deep(batch_size=1)
    with _fresh_rotation_rng():
        problem.set_up()  # no files: the quadratic's data are drawn, not read
    return problem.net.Hessian.detach().to("cpu", torch.float32).clone()


def quadratic_hessian() -> Tensor:
    """DeepOBS's quadratic_deep Hessian Q (100 x 100), the same on every call (a copy)."""
    return _hessian_cpu().clone()


class QuadraticLoss:
    """0.5 q^T Q q averaged over the batch, for model outputs q = theta - x.

    Q is fetched on first use (building it imports deepobs), then kept per device and dtype.
    """

    def __init__(self, hessian: Tensor | None = None) -> None:
        self._hessian = hessian
        self._on: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    @property
    def hessian(self) -> Tensor:
        if self._hessian is None:
            self._hessian = quadratic_hessian()
        return self._hessian

    def _matrix(self, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        if key not in self._on:
            self._on[key] = self.hessian.to(device=like.device, dtype=like.dtype)
        return self._on[key]

    def __call__(self, q: Tensor, targets: Tensor) -> Tensor:
        return 0.5 * torch.einsum("ni,ij,nj->n", q, self._matrix(q), q).mean()


def quadratic_loss() -> ConvexOutputLoss:
    """The quadratic's loss on q = theta - x, with DeepOBS's deterministic Hessian."""
    return ConvexOutputLoss(QuadraticLoss(), reduction="batch_mean")


@functools.lru_cache(maxsize=1)
def _residual_class() -> type:
    from deepobs.pytorch.testproblems.testproblems_modules import net_quadratic_deep

    class QuadraticResidual(net_quadratic_deep):
        """DeepOBS's quadratic net, returning the residual q = theta - x instead of the loss."""

        def forward(self, x: Tensor) -> Tensor:
            return self.theta - x

    return QuadraticResidual


def quadratic_model() -> torch.nn.Module:
    """DeepOBS's ``net_quadratic_deep`` (theta = 1) whose forward returns q = theta - x."""
    return _residual_class()(100, quadratic_hessian())
