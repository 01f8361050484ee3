"""Gradient-equivalents: what a step cost, in units of one mini-batch gradient, measured.

FLOPs are counted with ``flops.count_flops`` (matmuls, convolutions and dense factorisations;
elementwise work is ignored) once per run, on the first training batches:

- a forward pass and a gradient (forward and backward) on the mini-batch;
- for optimizers that count their curvature products exactly (the HF methods), one product of
  each kind on the curvature sub-batch;
- whole optimizer steps, on a copy of the model and optimizer, over one refresh period of the
  method (``entry.period``: K-FAC's factor refresh, Shampoo's roots, SOAP's eigenbases,
  Sophia's Hessian estimate), so a step that refreshes every N steps is charged its average.

A run's counted passes and products times their FLOPs, plus ``extra_per_step`` for every step
(what the measured steps ran beyond their counted passes and products: factor computations,
inversions, Hessian-vector products inside ``step``), divided by a gradient's FLOPs, is its
gradient-equivalents. For Adam, SGD and the HF methods the extra is zero up to rounding (every
pass they run is counted), which is checked in the tests. The measurement leaves the model,
the optimizer, BatchNorm statistics and the random state untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..curvature.ggn import frozen_buffers
from ..optim import ModelClosure, OptimizerEntry, StepDriver, get_optimizer
from .flops import count_flops

ClosureFactory = Callable[[nn.Module, Any, Any], ModelClosure]
"""``make(model, x, y)``: the step closure of a batch for a given model."""


@dataclass
class CostModel:
    """FLOPs per pass (forward and gradient on the mini-batch, products on the sub-batch) and
    the measured FLOPs a step runs beyond them."""

    forward: float
    gradient: float
    block_products: list[float] = field(default_factory=list)
    full_product: float = 0.0
    extra_per_step: float = 0.0
    """Measured FLOPs per step beyond the counted passes and products (averaged over
    ``probe_steps``)."""
    probe_steps: int = 0
    """Steps measured whole (one refresh period of the method)."""
    step_flops: float = 0.0
    """Measured FLOPs per step over the probe, everything included."""

    @property
    def backward(self) -> float:
        return self.gradient - self.forward

    def counted_flops(
        self,
        forward_passes: float,
        backward_passes: float,
        block_products: Sequence[float],
        full_products: float,
    ) -> float:
        """FLOPs of counted passes and products."""
        flops = forward_passes * self.forward + backward_passes * self.backward
        flops += sum(n * f for n, f in zip(block_products, self.block_products))
        return flops + full_products * self.full_product

    def gradient_equivalents(
        self,
        forward_passes: float,
        backward_passes: float,
        block_products: Sequence[float],
        full_products: float,
        steps: int,
    ) -> float:
        """Counted passes and products, plus ``steps`` times the measured extra, in
        gradients."""
        if self.gradient <= 0:
            return float("nan")
        counted = self.counted_flops(forward_passes, backward_passes, block_products, full_products)
        return (counted + steps * self.extra_per_step) / self.gradient

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _pass_flops(closure: ModelClosure) -> tuple[float, float]:
    """FLOPs of a forward pass and of a gradient on the closure's batch."""
    with torch.no_grad():
        forward = count_flops(lambda: closure.model(closure.inputs))
    return forward, count_flops(closure)


def _measure_steps(
    entry: OptimizerEntry,
    hyperparameters: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    make_closure: ClosureFactory,
    batches: Sequence[tuple[Any, Any]],
    cost: CostModel,
    execution: Mapping[str, Any],
) -> None:
    """Run one refresh period of whole steps on copies of the model and the optimizer (with
    the run's execution switches) and fill in the measured FLOPs; then, for a driver that
    needs it, one warm-up step on the copies."""
    period = entry.period(hyperparameters)
    twin = copy.deepcopy(model)
    twin_optimizer = entry.build(twin, hyperparameters, **execution)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    driver = entry.driver(twin_optimizer)
    driver.before_steps()
    measured = counted = 0.0
    for i in range(period):
        closure = make_closure(twin, *batches[i % len(batches)])
        measured += count_flops(lambda c=closure: driver.step(c))
        products = driver.products()
        counted += cost.counted_flops(
            closure.counts.forward, closure.counts.backward, products.block, products.full
        )
    cost.probe_steps = period
    cost.step_flops = measured / period
    cost.extra_per_step = (measured - counted) / period
    if driver.needs_warm_up():
        # outside the FLOP count (a dispatch mode runs CG eager): compiles what the run's own
        # first step would otherwise compile on the clock
        driver.step(make_closure(twin, *batches[0]))


def measure_cost(
    entry: OptimizerEntry,
    hyperparameters: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    make_closure: ClosureFactory,
    batches: Sequence[tuple[Any, Any]],
    execution: Mapping[str, Any] | None = None,
) -> CostModel:
    """The run's cost model, measured on ``batches`` (the first is the pass-FLOP batch; one
    refresh period of steps cycles through them) without side effects; ``execution`` holds
    the switches the run builds its optimizer with."""
    closure = make_closure(model, *batches[0])
    device = closure.device
    devices = [device] if device.type == "cuda" else []
    saved_grads = [p.grad for p in closure.params]
    with torch.random.fork_rng(devices=devices):
        with frozen_buffers(model):
            cost = CostModel(*_pass_flops(closure))
            probes = entry.driver(optimizer).product_probes(closure)
            cost.block_products = [count_flops(p) for p in probes.block]
            cost.full_product = count_flops(probes.full) if probes.full is not None else 0.0
        for p, g in zip(closure.params, saved_grads):
            p.grad = g
        _measure_steps(
            entry, hyperparameters, optimizer, model, make_closure, batches, cost, execution or {}
        )
    return cost


def driven_and_costed(
    name: str,
    hyperparameters: Mapping[str, Any],
    model: nn.Module,
    make_closure: ClosureFactory,
    batches: Sequence[tuple[Any, Any]],
    execution: Mapping[str, Any] | None = None,
) -> tuple[StepDriver, CostModel]:
    """Optimizer ``name`` on ``model``, ready to step (its driver in train mode), and its cost
    model measured on the first of ``batches``: how the step benchmarks set up each row."""
    entry = get_optimizer(name)
    resolved = entry.resolve(hyperparameters)
    optimizer = entry.build(model, resolved, **(execution or {}))
    cost = measure_cost(
        entry,
        resolved,
        optimizer,
        model,
        make_closure,
        batches[: entry.period(resolved)],
        execution,
    )
    driver = entry.driver(optimizer)
    driver.before_steps()
    return driver, cost
