"""The optimizer protocol: how the runner drives an optimizer and what a step reports back.

The runner never asks what class an optimizer is. Each registry entry names a ``StepDriver``
and the runner talks to that alone:

- ``step(closure)``: one update on the mini-batch's ``ModelClosure``;
- ``products()``: the curvature products the last step made, for optimizers that count them
  exactly (the HF methods); others report none, and their cost is measured instead;
- ``product_probes(closure)``: one call per kind of product, for FLOP counting;
- ``summary()``: what to log beside each evaluation;
- ``before_steps()`` / ``before_evaluation()``: mode switches (schedule-free methods train at
  one point and are evaluated at another);
- ``needs_warm_up()``: whether a step on a copy should run before the clock starts (a compiled
  CG iteration compiles on its first call).

The default driver is torch.optim's contract, ``optimizer.step(closure)``, which any plugin
optimizer gets. The drivers below add what a method needs beyond it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..curvature import GGNOperator
from .closure import ModelClosure
from .hf import BlockDiagonalHF


@dataclass(frozen=True)
class ProductCounts:
    """Curvature products one step made, in units of one product on the sub-batch of the
    ``product_probes`` (whole numbers when every step's sub-batch is that one)."""

    block: tuple[float, ...] = ()
    """Block products, per block."""
    full: float = 0
    """Full-curvature products."""
    iterations: int = 0
    """Inner iterations behind the products (CG's, the longest block's run)."""


@dataclass(frozen=True)
class ProductProbes:
    """One product of each kind, as calls, so the runner can count their FLOPs."""

    block: Sequence[Callable[[], object]] = field(default_factory=tuple)
    full: Callable[[], object] | None = None


class StepDriver:
    """torch.optim's contract: ``optimizer.step(closure)``, nothing counted but the passes."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self, closure: ModelClosure) -> Tensor:
        """One update on the closure's mini-batch; the loss before it."""
        return self.optimizer.step(closure)

    def products(self) -> ProductCounts:
        return ProductCounts()

    def product_probes(self, closure: ModelClosure) -> ProductProbes:
        return ProductProbes()

    def summary(self) -> dict[str, Any]:
        return {}

    def before_steps(self) -> None:
        """Called before the first step after an evaluation (or a start or resume)."""

    def before_evaluation(self) -> None:
        """Called before the model is evaluated (and before the checkpoint that follows)."""

    def needs_warm_up(self) -> bool:
        """Whether the first step does one-off work (compilation) that a run should do on a
        copy before its clock starts, so the seconds it reports are the steps' own."""
        return False


class HessianFreeDriver(StepDriver):
    """The HF methods: exact product counts from ``last_step`` and their FLOP probes."""

    optimizer: BlockDiagonalHF

    def products(self) -> ProductCounts:
        last = self.optimizer.last_step
        iterations = max(last.cg_iterations, default=0)
        if not self._auto():
            return ProductCounts(tuple(last.block_products), last.full_products, iterations)
        # the probes ran on the whole mini-batch and a product's FLOPs grow with its rows
        w = last.curvature_share
        return ProductCounts(
            tuple(n * w for n in last.block_products), last.full_products * w, iterations
        )

    def _auto(self) -> bool:
        """Whether the curvature fraction changes from step to step (``"auto"``)."""
        return self.optimizer.hp["curvature_fraction"] == "auto"

    def product_probes(self, closure: ModelClosure) -> ProductProbes:
        layout = self.optimizer.layout()
        fraction = 1.0 if self._auto() else self.optimizer.hp["curvature_fraction"]
        ctx = closure.curvature(fraction)
        v = torch.ones(layout.numel, device=closure.device, dtype=layout.params[0].dtype)
        full = GGNOperator(ctx, layout)
        # The one-off J^T u recording is a backward pass (counted as such), not a product.
        full @ v
        n, zero = layout.num_blocks, [0.0] * layout.num_blocks
        blocks = GGNOperator(ctx, layout, out=torch.empty_like(v)).block_diagonal()
        block = [(lambda b=b: blocks.matvec(v, [i == b for i in range(n)], zero)) for b in range(n)]
        return ProductProbes(block, lambda: full @ v)

    def needs_warm_up(self) -> bool:
        return self.optimizer.cg_compiled

    def summary(self) -> dict[str, Any]:
        opt = self.optimizer
        out = {
            "damping": opt.last_step.damping,
            "accepted": opt.totals["accepted"],
            "rejected": opt.totals["rejected"],
            "cg_iterations": opt.totals["cg_iterations"],
        }
        if self._auto():
            out["curvature_share"] = opt.last_step.curvature_share
            ratio = opt.last_step.batch_over_noise
            out["batch_over_noise"] = ratio if math.isfinite(ratio) else None  # plain JSON
        return out


class SecondBackwardDriver(StepDriver):
    """Methods that differentiate the gradient inside ``step`` (AdaHessian, Sophia's
    Hutchinson estimates): the gradient pass keeps its graph (``create_graph=True``), and the
    graph is released after the step by dropping the gradients that hold it."""

    def step(self, closure: ModelClosure) -> Tensor:
        with warnings.catch_warnings():
            # torch warns of the parameter-gradient cycle that the next lines break
            warnings.filterwarnings("ignore", "Using backward\\(\\) with create_graph=True")
            loss = self.optimizer.step(lambda: closure(create_graph=True))
        for p in closure.params:
            p.grad = None
        return loss


class TrainEvalDriver(StepDriver):
    """Schedule-free methods: the parameters stepped (``train()``) are not the ones to
    evaluate (``eval()``); checkpoints after an evaluation hold the evaluated ones."""

    def before_steps(self) -> None:
        self.optimizer.train()

    def before_evaluation(self) -> None:
        self.optimizer.eval()
