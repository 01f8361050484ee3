"""What a test problem is: a model, a loss the curvature engine understands, data, defaults.

A ``Problem`` is plain data (AlgoPerf's "workload"): the runner and the optimizers read it and
never need to know which problem they run. Everything an optimizer step needs is here: the model
factory, the loss on the model's outputs (an ``OutputLoss``, so HF methods get its exact
output-space Hessian), the L2 coefficients DeepOBS adds to the loss, and how a data batch becomes
model inputs and loss targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..curvature import OutputLoss
from ..curvature.losses import Outputs

METRICS = ("accuracy", "loss")
SPLITS = ("train_eval", "valid", "test")


@dataclass(frozen=True)
class Target:
    """The value a run must reach for steps-to-target (AlgoPerf's time-to-result)."""

    metric: str
    """"accuracy" (reached when >= value) or "loss" (reached when <= value)."""
    value: float
    split: str = "valid"
    """The split it is measured on (AlgoPerf: validation)."""
    source: str = ""
    """Where the number comes from (a published baseline, or the rule that made it)."""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"target metric must be one of {METRICS}, got {self.metric!r}")
        if self.split not in SPLITS:
            raise ValueError(f"target split must be one of {SPLITS}, got {self.split!r}")

    def reached(self, value: float) -> bool:
        return value >= self.value if self.metric == "accuracy" else value <= self.value


def _identity_batch(x: Tensor, y: Tensor) -> tuple[Any, Tensor]:
    return x, y


def _no_l2(model: nn.Module, weight_decay: float) -> list[float]:
    return [0.0 for _ in model.parameters()]


def argmax_correct(outputs: Outputs, targets: Tensor) -> Tensor:
    """Number of correct argmax predictions (a 0-d tensor: no host sync)."""
    logits = outputs if isinstance(outputs, Tensor) else outputs[0]
    return (logits.argmax(dim=1) == targets).sum()


@dataclass(frozen=True)
class Problem:
    """A benchmark problem, DeepOBS-style."""

    name: str
    description: str
    """One line for ``bdhf-bench list problems``."""
    dataset: str
    """The data set the data module loads ("mnist", "cifar10", ...)."""
    make_model: Callable[[], nn.Module]
    """Builds a freshly initialised model on the CPU (the caller seeds torch first)."""
    loss: OutputLoss
    """The loss on the model's outputs; its value is the training objective (without L2)."""
    batch_size: int
    num_epochs: int
    metric: str = "accuracy"
    """"accuracy" for classifiers, "loss" otherwise."""
    target: Target | None = None
    weight_decay: float = 0.0
    """The default L2 factor (DeepOBS adds 0.5 * wd * ||p||^2 for the parameters it names)."""
    l2: Callable[[nn.Module, float], list[float]] = _no_l2
    """Per-parameter L2 coefficients (``model.parameters()`` order) for a weight decay."""
    prepare_batch: Callable[[Tensor, Tensor], tuple[Any, Tensor]] = _identity_batch
    """(data inputs, data labels) -> (model inputs, loss targets)."""
    correct: Callable[[Outputs, Tensor], Tensor] | None = None
    """Number of correct predictions in a batch, for accuracy problems."""
    augment: bool = False
    """Whether training batches get the data set's augmentation."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Documented deviations and choices (DeepOBS defects handled, sizes chosen)."""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.metric == "accuracy" and self.correct is None:
            raise ValueError(f"problem {self.name!r}: an accuracy problem needs `correct`")
        if self.batch_size < 1 or self.num_epochs < 1:
            raise ValueError(f"problem {self.name!r}: batch size and epochs must be positive")

    def l2_coefficients(self, model: nn.Module, weight_decay: float | None = None) -> list[float]:
        wd = self.weight_decay if weight_decay is None else weight_decay
        coeffs = self.l2(model, wd)
        if len(coeffs) != len(list(model.parameters())):
            raise ValueError(f"problem {self.name!r}: one L2 coefficient per parameter")
        return coeffs

    def objective(
        self, model: nn.Module, outputs: Outputs, targets: Tensor, l2: list[float]
    ) -> Tensor:
        """Loss plus L2 penalty, the quantity every optimizer minimises."""
        value = self.loss(outputs, targets)
        for p, c in zip(model.parameters(), l2):
            if c:
                value = value + 0.5 * c * p.square().sum()
        return value


def uniform_l2(model: nn.Module, weight_decay: float) -> list[float]:
    """The same L2 factor for every parameter."""
    return [float(weight_decay) for _ in model.parameters()]


def weights_only_l2(model: nn.Module, weight_decay: float) -> list[float]:
    """L2 on weight matrices and kernels (dim > 1), none on biases and norm parameters."""
    return [float(weight_decay) if p.dim() > 1 else 0.0 for p in model.parameters()]


def seeded_model(problem: Problem, seed: int, device: torch.device | str = "cpu") -> nn.Module:
    """The problem's model, initialised from ``seed``, on ``device``."""
    torch.manual_seed(seed)
    return problem.make_model().to(device)
