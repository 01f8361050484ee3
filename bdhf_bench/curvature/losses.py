"""Losses seen from the model's outputs: their value and their Hessian w.r.t. the outputs.

The generalized Gauss-Newton matrix G = (1/N) sum_i J_i^T H_i J_i needs H_i, the Hessian of the
loss w.r.t. the model outputs. For the common losses it has a closed form that costs a few
elementwise operations; for any other loss that is convex in the outputs (the DeepOBS VAEs'
reconstruction-plus-KL loss, a quadratic form) a reverse-over-reverse product in output space is
exact and still cheap, since it never touches the network.

Each loss is prepared once per optimizer step (``prepare``), which caches what every Hessian
product of that step shares (softmax probabilities, sigmoid derivatives).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Outputs = Tensor | tuple[Tensor, ...]

REDUCTIONS = ("mean", "sum", "batch_mean")


def as_tuple(outputs: Outputs) -> tuple[Tensor, ...]:
    """Model outputs as a tuple of tensors (a single tensor becomes a 1-tuple)."""
    if isinstance(outputs, Tensor):
        return (outputs,)
    if isinstance(outputs, (tuple, list)) and all(isinstance(o, Tensor) for o in outputs):
        return tuple(outputs)
    raise ValueError(f"model outputs must be a tensor or a tuple of tensors, got {type(outputs)}")


class OutputHessian(abc.ABC):
    """The loss Hessian w.r.t. the outputs at one point, ready for repeated products."""

    @abc.abstractmethod
    def matvec(self, v: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """H v for an output-space direction v (same structure as the outputs)."""


class OutputLoss(abc.ABC):
    """A loss of model outputs and targets whose output-space Hessian is positive semi-definite.

    ``reduction`` fixes the scaling of both the value and the Hessian:
    ``"mean"`` averages over every element torch would average over, ``"sum"`` sums,
    ``"batch_mean"`` sums over everything and divides by the batch size (dimension 0).
    """

    reduction: str = "mean"

    @abc.abstractmethod
    def __call__(self, outputs: Outputs, targets: Tensor) -> Tensor:
        """The scalar loss."""

    @abc.abstractmethod
    def prepare(self, outputs: Outputs, targets: Tensor) -> OutputHessian:
        """The output-space Hessian at ``outputs`` (detached), for repeated products."""


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _single_output(outputs: Outputs, loss_name: str) -> Tensor:
    out = as_tuple(outputs)
    if len(out) != 1:
        raise ValueError(f"{loss_name} takes one output tensor, got {len(out)}")
    return out[0]


class _DiagonalFamily(OutputLoss):
    """Shared reduction bookkeeping for losses that act element by element."""

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = _check_reduction(reduction)

    def _scale(self, z: Tensor, n_elements: int) -> float:
        if self.reduction == "sum":
            return 1.0
        if self.reduction == "batch_mean":
            return 1.0 / z.shape[0]
        return 1.0 / n_elements

    def _reduce(self, per_element: Tensor, n_elements: int) -> Tensor:
        return per_element.sum() * self._scale(per_element, n_elements)


class _ScaledDiagonal(OutputHessian):
    def __init__(self, diagonal: Tensor) -> None:
        self.diagonal = diagonal

    def matvec(self, v: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (self.diagonal * v[0],)


class CrossEntropy(_DiagonalFamily):
    """Softmax cross-entropy on logits (class dimension 1, like ``nn.CrossEntropyLoss``).

    H = w * (diag(p) - p p^T) per example (and per position for extra dimensions), with w the
    weight of that prediction in the reduction. ``"mean"`` divides by the number of
    predictions (N times any extra dimensions) that are not ``ignore_index``, as torch does;
    an ignored prediction adds nothing to the loss or to H. Class-probability targets (float)
    have no ignored predictions.
    """

    def __init__(self, reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__(reduction)
        self.ignore_index = int(ignore_index)

    def prediction_weights(self, targets: Tensor, dtype: torch.dtype) -> Tensor | None:
        """Each prediction's weight in the reduced loss, shape (N, ...), 0 where ignored; None
        for class-probability targets (every prediction counts)."""
        if targets.is_floating_point():
            return None
        kept = (targets != self.ignore_index).to(dtype)
        if self.reduction == "mean":
            return kept / kept.sum()
        return kept / targets.shape[0] if self.reduction == "batch_mean" else kept

    def __call__(self, outputs: Outputs, targets: Tensor) -> Tensor:
        z = _single_output(outputs, "CrossEntropy")
        per = F.cross_entropy(z, targets, reduction="none", ignore_index=self.ignore_index)
        if self.reduction == "mean" and not targets.is_floating_point():
            return per.sum() / (targets != self.ignore_index).sum()
        return self._reduce(per, per.numel())

    def prepare(self, outputs: Outputs, targets: Tensor) -> OutputHessian:
        z = _single_output(outputs, "CrossEntropy").detach()
        if z.dim() < 2:
            raise ValueError(
                f"CrossEntropy needs logits of shape (N, C, ...), got {tuple(z.shape)}"
            )
        weights = self.prediction_weights(targets, z.dtype)
        if weights is None:
            scale: Tensor | float = self._scale(z, z.numel() // z.shape[1])
        else:
            scale = weights.unsqueeze(1)
        return _SoftmaxHessian(torch.softmax(z, dim=1), scale)


class _SoftmaxHessian(OutputHessian):
    def __init__(self, probs: Tensor, weights: Tensor | float) -> None:
        self.probs = probs
        self.weights = weights
        """A number, or one weight per prediction (shape (N, 1, ...))."""

    def matvec(self, v: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        p, (w,) = self.probs, v
        pw = p * w
        return (self.weights * (pw - p * pw.sum(dim=1, keepdim=True)),)


class MSE(_DiagonalFamily):
    """Squared error (z - y)^2 (no 1/2, like ``nn.MSELoss``): H = 2 * scale * I."""

    def __call__(self, outputs: Outputs, targets: Tensor) -> Tensor:
        z = _single_output(outputs, "MSE")
        if z.shape != targets.shape:
            raise ValueError(f"MSE: outputs {tuple(z.shape)} and targets {tuple(targets.shape)}")
        return self._reduce((z - targets).square(), z.numel())

    def prepare(self, outputs: Outputs, targets: Tensor) -> OutputHessian:
        z = _single_output(outputs, "MSE").detach()
        return _ScaledIdentity(2.0 * self._scale(z, z.numel()))


class _ScaledIdentity(OutputHessian):
    def __init__(self, scale: float) -> None:
        self.scale = scale

    def matvec(self, v: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (self.scale * v[0],)


class BCEWithLogits(_DiagonalFamily):
    """Sigmoid binary cross-entropy on logits: H = scale * s(z)(1 - s(z)), diagonal."""

    def __call__(self, outputs: Outputs, targets: Tensor) -> Tensor:
        z = _single_output(outputs, "BCEWithLogits")
        if z.shape != targets.shape:
            raise ValueError(
                f"BCEWithLogits: outputs {tuple(z.shape)} and targets {tuple(targets.shape)}"
            )
        per = F.binary_cross_entropy_with_logits(z, targets, reduction="none")
        return self._reduce(per, per.numel())

    def prepare(self, outputs: Outputs, targets: Tensor) -> OutputHessian:
        z = _single_output(outputs, "BCEWithLogits").detach()
        s = torch.sigmoid(z)
        return _ScaledDiagonal(s * (1 - s) * self._scale(z, z.numel()))


class ConvexOutputLoss(OutputLoss):
    """Any loss that is convex in the outputs, given as ``fn(outputs..., targets) -> scalar``.

    Its Hessian product is reverse-over-reverse in output space (``torch.func``), exact for any
    twice-differentiable ``fn``. The caller vouches for convexity: a non-convex ``fn`` makes the
    "GGN" indefinite, which CG reports as negative curvature.

    ``fn`` takes the model's outputs unpacked (``fn(images, means, log_stds, targets)`` for a
    model returning three tensors) and must already apply its reduction.
    """

    def __init__(self, fn: Callable[..., Tensor], reduction: str = "mean") -> None:
        self.fn = fn
        self.reduction = _check_reduction(reduction)

    def __call__(self, outputs: Outputs, targets: Tensor) -> Tensor:
        return self.fn(*as_tuple(outputs), targets)

    def prepare(self, outputs: Outputs, targets: Tensor) -> OutputHessian:
        point = tuple(o.detach() for o in as_tuple(outputs))
        # One plain evaluation first: a loss that builds constants lazily (a cached matrix)
        # must not build them inside the torch.func transforms, where they would escape.
        with torch.no_grad():
            self.fn(*point, targets)
        return _ReverseOverReverseHessian(self.fn, point, targets)


class _ReverseOverReverseHessian(OutputHessian):
    """``H v`` as the vector-Jacobian product of the output gradient (``H`` is symmetric): the
    gradient's graph is recorded once per step and every product reuses it. Forward-over-
    reverse would not need the symmetry, but torch 2.14 has no forward-mode derivative of
    ``mse_loss``'s backward ("ZeroTensors are immutable")."""

    def __init__(self, fn: Callable[..., Tensor], point: tuple[Tensor, ...], targets: Tensor):
        def value(*outs: Tensor) -> Tensor:
            return fn(*outs, targets)

        argnums = tuple(range(len(point)))
        _, self._vjp = torch.func.vjp(torch.func.grad(value, argnums=argnums), *point)

    def matvec(self, v: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(self._vjp(tuple(v)))


def as_output_loss(loss: OutputLoss | nn.Module) -> OutputLoss:
    """Our view of a loss: an ``OutputLoss`` as is, or the closed form of a torch loss module.

    Raises ValueError for a loss whose output-space Hessian we cannot form exactly.
    """
    if isinstance(loss, OutputLoss):
        return loss
    if isinstance(loss, nn.CrossEntropyLoss):
        if loss.weight is not None or loss.label_smoothing != 0.0:
            raise ValueError(
                "CrossEntropyLoss with class weights or label smoothing is not supported; "
                "wrap it in ConvexOutputLoss"
            )
        return CrossEntropy(loss.reduction, loss.ignore_index)
    if isinstance(loss, nn.MSELoss):
        return MSE(loss.reduction)
    if isinstance(loss, nn.BCEWithLogitsLoss):
        if loss.weight is not None or loss.pos_weight is not None:
            raise ValueError(
                "BCEWithLogitsLoss with weight or pos_weight is not supported; "
                "wrap it in ConvexOutputLoss"
            )
        return BCEWithLogits(loss.reduction)
    raise ValueError(
        f"cannot form the output-space Hessian of {type(loss).__name__}: use CrossEntropy, MSE, "
        "BCEWithLogits (or their torch.nn modules), or ConvexOutputLoss for a loss convex in "
        "the outputs"
    )


def output_shapes_match(outputs: Sequence[Tensor], v: Sequence[Tensor]) -> bool:
    """Whether an output-space direction has the outputs' structure."""
    return len(outputs) == len(v) and all(o.shape == w.shape for o, w in zip(outputs, v))
