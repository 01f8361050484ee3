"""Per-step cost of optimizers on one problem, measured side by side in one process.

DeepOBS estimates an optimizer's overhead by timing it against SGD in separate runs. Here every
optimizer gets its own copy of the model (same initialisation) and the same batches, and steps
are timed round-robin (one step of each, then the next round) with device synchronisation, so
machine noise hits all of them alike. Beside the median time per step and its ratio to Adam's,
each row gives the passes a step made and its gradient-equivalents (from FLOP counts).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import train_stream
from ..optim import ModelClosure
from ..problems import get_problem, seeded_model
from .cost import driven_and_costed
from .loop import problem_data


@dataclass
class OverheadRow:
    optimizer: str
    seconds_per_step: float
    ratio_to_adam: float
    forward_passes: float
    backward_passes: float
    curvature_products: float
    gradient_equivalents: float


def measure_overhead(
    problem_name: str,
    optimizers: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    device: torch.device,
    batch_size: int | None = None,
    data: str = "synthetic",
    data_dir: Path | None = None,
    steps: int = 10,
    warmup: int = 2,
    seed: int = 0,
) -> list[OverheadRow]:
    """Median seconds per step, its ratio to Adam (Adam is added if missing), and per-step
    pass counts and gradient-equivalents, for each ``(optimizer, hyperparameters)``."""
    problem = get_problem(problem_name)
    batch = batch_size or problem.batch_size
    names = [n for n, _ in optimizers]
    if "adam" not in names:
        optimizers = [("adam", {}), *optimizers]
    splits = problem_data(
        problem, batch_size=batch, source=data, data_dir=data_dir, device=device, seed=seed
    )
    stream = train_stream(splits, batch, seed=seed, augment=problem.augment)
    batches = []
    for epoch in range(1 + (warmup + steps) // max(stream.batches_per_epoch, 1)):
        batches += list(stream.epoch(epoch))
    batches = batches[: warmup + steps]

    def closure(model: torch.nn.Module, l2: list[float], x: torch.Tensor, y: torch.Tensor):
        inputs, targets = problem.prepare_batch(x, y)
        return ModelClosure(model, problem.loss, inputs, targets, l2)

    runs = []
    costs = []
    for name, hps in optimizers:
        model = seeded_model(problem, seed, device).train()
        l2 = problem.l2_coefficients(model)
        factory = lambda m, x, y, l2=l2: closure(m, l2, x, y)  # noqa: E731
        driver, cost = driven_and_costed(name, hps, model, factory, batches)
        runs.append((name, model, driver, l2))
        costs.append(cost)
    times: list[list[float]] = [[] for _ in runs]
    totals = [[0.0, 0.0, 0.0, 0.0] for _ in runs]
    for i, (x, y) in enumerate(batches):
        for k, (_, model, driver, l2) in enumerate(runs):
            c = closure(model, l2, x, y)
            _sync(device)
            start = time.perf_counter()
            driver.step(c)
            _sync(device)
            if i < warmup:
                continue
            times[k].append(time.perf_counter() - start)
            counted = driver.products()
            products, full = sum(counted.block), counted.full
            ge = costs[k].gradient_equivalents(
                c.counts.forward, c.counts.backward, counted.block, full, 1
            )
            t = totals[k]
            t[0] += c.counts.forward
            t[1] += c.counts.backward
            t[2] += products + full
            t[3] += ge
    medians = [statistics.median(ts) for ts in times]
    adam = medians[[n for n, *_ in runs].index("adam")]
    n = max(steps, 1)
    return [
        OverheadRow(name, med, med / adam, t[0] / n, t[1] / n, t[2] / n, t[3] / n)
        for (name, *_), med, t in zip(runs, medians, totals)
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_rows(rows: Sequence[OverheadRow]) -> str:
    header = (
        f"{'optimizer':<10} {'s/step':>9} {'x Adam':>8} {'fwd':>7} {'bwd':>7} "
        f"{'products':>9} {'grad-eq':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.optimizer:<10} {r.seconds_per_step:>9.4f} {r.ratio_to_adam:>8.2f} "
            f"{r.forward_passes:>7.2f} {r.backward_passes:>7.2f} {r.curvature_products:>9.1f} "
            f"{r.gradient_equivalents:>8.2f}"
        )
    return "\n".join(lines)
