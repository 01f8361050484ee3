"""Gradient-equivalents: what a step cost, in units of one mini-batch gradient.

FLOPs of each kind of pass are counted once per run with ``torch.utils.flop_counter`` (matmuls
and convolutions; elementwise work is ignored) on the first training batch: a forward pass, a
gradient (forward and backward), and, for the HF optimizers, each block's GGN product and the
full product on the curvature sub-batch. A run's pass counters times these FLOPs, divided by a
gradient's FLOPs, is its gradient-equivalents: exactly one per step for first-order methods.
The measurement leaves the model, its BatchNorm statistics and the random state untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..curvature.ggn import frozen_buffers
from ..optim import BlockDiagonalHF, ModelClosure


@dataclass
class CostModel:
    """FLOPs per pass (forward and gradient on the mini-batch, products on the sub-batch)."""

    forward: float
    gradient: float
    block_products: list[float] = field(default_factory=list)
    full_product: float = 0.0

    @property
    def backward(self) -> float:
        return self.gradient - self.forward

    def gradient_equivalents(
        self,
        forward_passes: float,
        backward_passes: float,
        block_products: list[int],
        full_products: int,
    ) -> float:
        if self.gradient <= 0:
            return float("nan")
        flops = forward_passes * self.forward + backward_passes * self.backward
        flops += sum(n * f for n, f in zip(block_products, self.block_products))
        flops += full_products * self.full_product
        return flops / self.gradient

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure_cost(optimizer: torch.optim.Optimizer, closure: ModelClosure) -> CostModel:
    """The run's cost model, measured on ``closure``'s batch without side effects."""
    model = closure.model
    device = closure.device
    devices = [device] if device.type == "cuda" else []
    saved_grads = [p.grad for p in closure.params]
    with torch.random.fork_rng(devices=devices), frozen_buffers(model):
        with torch.no_grad():
            forward = _flops(lambda: model(closure.inputs))
        gradient = _flops(closure)
        cost = CostModel(forward=forward, gradient=gradient)
        if isinstance(optimizer, BlockDiagonalHF):
            layout = optimizer.layout()
            ctx = closure.curvature(optimizer.hp["curvature_fraction"])
            v = torch.ones(layout.numel, device=device, dtype=layout.params[0].dtype)
            # The one-off J^T u recording is a backward pass (counted as such), not a product.
            ctx.layout_full_mvp(layout, v)
            n = layout.num_blocks
            cost.block_products = [
                _flops(lambda b=b: ctx.layout_mvp(layout, v, [i == b for i in range(n)]))
                for b in range(n)
            ]
            cost.full_product = _flops(lambda: ctx.layout_full_mvp(layout, v))
    for p, g in zip(closure.params, saved_grads):
        p.grad = g
    return cost
