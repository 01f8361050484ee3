"""Per-step cost of BDHF and HF against Adam, and against what their passes cost. The one
step-cost harness: ``bdhf-bench overhead`` prints its rows for any optimizers (time against
Adam, and the passes and products each step made).

On each problem (synthetic data of the real shapes, the problems' batch sizes unless told
otherwise) every optimizer steps on the same batches from the same initial weights, timed
round-robin in one process (one step of each, then the next round), so machine noise hits all
of them alike. Per optimizer:

- ``s/step``: mean seconds per timed step (an HF step's work varies with its CG iterations, and
  the FLOP model below is a mean over the same steps); Adam steps a few times per round and
  the round keeps its fastest (an Adam step is short, and this machine is shared);
- ``x Adam``: the optimizer's summed step times over Adam's, over the same rounds;
- ``grad-eq``: the step's FLOPs over one gradient's, from the optimizer's pass counters
  (``runner.cost``): a step that costs what its passes cost has ``x Adam == grad-eq``;
- ``wall/FLOP``: ``x Adam / grad-eq``, the wall-clock per unit of FLOP model (1: no overhead
  beyond Adam's own per-FLOP rate; the issue's target is <= 1.2 on one thread);
- ``in prod``: the share of the step's time spent inside the curvature products;
- ``prod w/F`` and ``rest w/F``: wall/FLOP split into the products and the rest of the step
  (gradient, evaluations, CG's vector work and bookkeeping, which the FLOP model does not count);
- ``CG vec``: the share of the step in CG's vector work (``block_cg`` without its products:
  the inner products and vector updates, memory-bound passes the FLOP model does not count);
- ``w/F ex CG``: wall/FLOP of the step without that share, i.e. of what the FLOP model counts
  plus the step's bookkeeping. A diagnostic beside wall/FLOP, not a replacement: where it is
  near 1 and wall/FLOP is not, the gap is CG's passes over the vectors, not per-call overhead.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from ..data import train_stream
from ..optim import ModelClosure
from ..optim.protocol import ProductCounts
from ..problems import get_problem, seeded_model
from ..runner.cost import CostModel, driven_and_costed
from ..runner.loop import problem_data
from .engine_setting import ENGINE_SETTING
from .parts import PartTimer
from .timing import machine_options, synchronize

PROBLEMS = ("mnist_mlp", "cifar10_3c3d", "smnist_lstm", "mnist_autoencoder")


@dataclass
class StepCost:
    problem: str
    optimizer: str
    seconds_per_step: float
    ratio_to_adam: float
    gradient_equivalents: float
    product_share: float
    cg_iterations: float
    product_equivalents: float = 0.0
    """The products' share of ``gradient_equivalents``."""
    cg_vector_share: float = 0.0
    """The share of the step's time in CG's vector work (``block_cg`` without its products)."""
    forward_passes: float = 0.0
    backward_passes: float = 0.0
    curvature_products: float = 0.0
    """Per step, as the optimizer's closure and driver counted them."""

    @property
    def wall_per_flop(self) -> float:
        """Wall-clock per unit of the FLOP model, relative to Adam's."""
        return self.ratio_to_adam / self.gradient_equivalents

    @property
    def wall_per_flop_without_cg_vectors(self) -> float:
        """wall/FLOP of the step less CG's vector work (which the FLOP model does not count)."""
        return (1 - self.cg_vector_share) * self.ratio_to_adam / self.gradient_equivalents

    @property
    def product_wall_per_flop(self) -> float:
        """The products' wall-clock per unit of their FLOPs (NaN without products)."""
        if not self.product_equivalents:
            return math.nan
        return self.product_share * self.ratio_to_adam / self.product_equivalents

    @property
    def other_wall_per_flop(self) -> float:
        """The rest of the step's wall-clock per unit of its FLOPs (gradient, evaluations)."""
        return (
            (1 - self.product_share)
            * self.ratio_to_adam
            / (self.gradient_equivalents - self.product_equivalents)
        )


def _batches(
    problem: Any,
    batch: int,
    device: torch.device,
    seed: int,
    n: int,
    data: str = "synthetic",
    data_dir: Path | None = None,
) -> list[Any]:
    """The first ``n`` training batches of the problem's data (epochs as needed)."""
    splits = problem_data(
        problem, batch_size=batch, source=data, data_dir=data_dir, device=device, seed=seed
    )
    stream = train_stream(splits, batch, seed=seed, augment=problem.augment)
    batches: list[Any] = []
    epoch = 0
    while len(batches) < n:
        batches += list(stream.epoch(epoch))
        epoch += 1
    return batches[:n]


def _timed_step(
    driver: Any, make_closure: Any, repeats: int, device: torch.device, parts: bool
) -> tuple[float, ModelClosure, PartTimer]:
    """The fastest of ``repeats`` steps, each on a fresh closure, synchronised around it; the
    last closure and part timer (what the step counted and where its time went)."""
    elapsed = math.inf
    for _ in range(repeats):
        c = make_closure()
        timer = PartTimer(device)
        with timer.active() if parts else contextlib.nullcontext():
            synchronize(device)
            start = time.perf_counter()
            driver.step(c)
            synchronize(device)
            elapsed = min(elapsed, time.perf_counter() - start)
    return elapsed, c, timer


def measure_step_cost(
    problem_name: str,
    optimizers: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    device: torch.device,
    batch_size: int | None = None,
    steps: int = 5,
    warmup: int = 1,
    seed: int = 0,
    adam_repeats: int = 3,
    check_every: int = 1,
    compiled: bool = False,
    parts: bool = True,
    data: str = "synthetic",
    data_dir: Path | None = None,
) -> list[StepCost]:
    """One row per optimizer (Adam first, added if missing), measured side by side.

    Each round steps every optimizer once on the round's batch (Adam ``adam_repeats`` times,
    keeping the fastest); ``check_every`` and ``compiled`` are passed to the HF optimizers' CG
    (a compiled CG compiles in the warm-up steps). ``parts=False`` times the steps without the
    part timer, whose device syncs around every part slow a GPU's step (the product and CG
    vector shares then read 0). ``data``: "synthetic" (generated from the seed with the real
    shapes) or "real" (from ``data_dir``).
    """
    problem = get_problem(problem_name)
    batch = batch_size or problem.batch_size
    if "adam" not in [n for n, _ in optimizers]:
        optimizers = [("adam", {}), *optimizers]
    batches = _batches(problem, batch, device, seed, warmup + steps, data, data_dir)

    def closure(model: torch.nn.Module, l2: list[float], x: Any, y: Any) -> ModelClosure:
        inputs, targets = problem.prepare_batch(x, y)
        return ModelClosure(model, problem.loss, inputs, targets, l2)

    runs = []
    costs = []
    execution = {"cg_check_every": check_every, "cg_compiled": compiled}
    for name, hps in optimizers:
        model = seeded_model(problem, seed, device).train()
        l2 = problem.l2_coefficients(model)
        factory = lambda m, x, y, l2=l2: closure(m, l2, x, y)  # noqa: E731
        driver, cost = driven_and_costed(name, hps, model, factory, batches, execution)
        runs.append((name, model, driver, l2))
        costs.append(cost)
    totals = [_Totals() for _ in runs]
    for i, (x, y) in enumerate(batches):
        for k, (name, model, driver, l2) in enumerate(runs):
            # Adam's step is short and the machine shared: its round is the fastest of a few
            repeats = adam_repeats if name == "adam" else 1
            make = functools.partial(closure, model, l2, x, y)
            elapsed, c, timer = _timed_step(driver, make, repeats, device, parts)
            if i >= warmup:
                totals[k].add(elapsed, timer, c, driver.products(), costs[k])
    adam = totals[[name for name, *_ in runs].index("adam")].seconds
    return [t.row(problem_name, name, steps, adam) for t, (name, *_) in zip(totals, runs)]


@dataclass
class _Totals:
    """One optimizer's sums over the timed steps."""

    seconds: float = 0.0
    product_seconds: float = 0.0
    cg_vector_seconds: float = 0.0
    gradient_equivalents: float = 0.0
    product_equivalents: float = 0.0
    cg_iterations: float = 0.0
    forward: float = 0.0
    backward: float = 0.0
    products: float = 0.0

    def add(
        self,
        elapsed: float,
        timer: PartTimer,
        c: ModelClosure,
        products: ProductCounts,
        cost: CostModel,
    ) -> None:
        self.seconds += elapsed
        self.product_seconds += timer.seconds["products"]
        self.cg_vector_seconds += timer.seconds["CG vectors"]
        self.cg_iterations += products.iterations
        self.forward += c.counts.forward
        self.backward += c.counts.backward
        self.products += sum(products.block) + products.full
        self.gradient_equivalents += cost.gradient_equivalents(
            c.counts.forward, c.counts.backward, products.block, products.full, 1
        )
        self.product_equivalents += cost.gradient_equivalents(
            0.0, 0.0, products.block, products.full, 0
        )

    def row(self, problem: str, optimizer: str, steps: int, adam_seconds: float) -> StepCost:
        """Per-step means; the ratio to Adam is a ratio of sums over the same rounds (each step
        paired with Adam's beside it)."""
        return StepCost(
            problem,
            optimizer,
            self.seconds / steps,
            self.seconds / adam_seconds,
            self.gradient_equivalents / steps,
            self.product_seconds / self.seconds,
            self.cg_iterations / steps,
            self.product_equivalents / steps,
            self.cg_vector_seconds / self.seconds,
            self.forward / steps,
            self.backward / steps,
            self.products / steps,
        )


def format_rows(rows: Sequence[StepCost], batch_sizes: Mapping[str, int]) -> str:
    header = (
        f"{'problem':<30} {'optimizer':<9} {'s/step':>8} {'x Adam':>7} {'grad-eq':>8} "
        f"{'wall/FLOP':>9} {'in prod':>7} {'prod w/F':>8} {'rest w/F':>8} {'CG vec':>6} "
        f"{'w/F ex CG':>9} {'CG its':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        label = f"{r.problem}, batch {batch_sizes[r.problem]}"
        lines.append(
            f"{label:<30} {r.optimizer:<9} {r.seconds_per_step:>8.4f} {r.ratio_to_adam:>7.2f} "
            f"{r.gradient_equivalents:>8.2f} {r.wall_per_flop:>9.2f} "
            f"{r.product_share:>7.0%} {r.product_wall_per_flop:>8.2f} "
            f"{r.other_wall_per_flop:>8.2f} {r.cg_vector_share:>6.0%} "
            f"{r.wall_per_flop_without_cg_vectors:>9.2f} {r.cg_iterations:>7.1f}"
        )
    return "\n".join(lines)


@click.command("step-cost")
@click.option(
    "--problem",
    "problems",
    type=click.Choice(PROBLEMS),
    multiple=True,
    help="Problems to measure (repeatable; default: all four).",
)
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Override the problems' batch sizes."
)
@click.option(
    "--cg-check-every",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="CG reads its active-block mask every this many iterations (see block_cg).",
)
@click.option(
    "--cg-compile",
    is_flag=True,
    help="CG's iteration as one compiled function (block_cg's compiled; the GPU path).",
)
@machine_options
def command(
    problems: tuple[str, ...],
    steps: int,
    warmup: int,
    batch_size: int | None,
    cg_check_every: int,
    cg_compile: bool,
    device: torch.device,
    threads: int | None,
) -> None:
    """Seconds per step of bdhf and hf against Adam and against their FLOP model."""
    rows: list[StepCost] = []
    sizes = {}
    for name in problems or PROBLEMS:
        sizes[name] = batch_size or get_problem(name).batch_size
        rows += measure_step_cost(
            name,
            [("adam", {}), ("bdhf", ENGINE_SETTING), ("hf", ENGINE_SETTING)],
            device=device,
            batch_size=batch_size,
            steps=steps,
            warmup=warmup,
            check_every=cg_check_every,
            compiled=cg_compile,
        )
    click.echo(
        f"{device}, {torch.get_num_threads()} threads, synthetic data, "
        f"CG mask read every {cg_check_every} iteration(s), "
        f"CG iteration {'compiled' if cg_compile else 'eager'}"
    )
    click.echo(format_rows(rows, sizes))
    click.echo(
        "s/step: mean over the timed steps (Adam: each round's fastest of 3); x Adam: summed "
        "step times over Adam's in the same rounds; grad-eq: the step's FLOPs / one gradient's; "
        "wall/FLOP = (x Adam) / grad-eq; in prod: share of the step in curvature products; "
        "prod w/F and rest w/F: wall/FLOP of the products and of the rest of the step; "
        "CG vec: share of the step in CG's vector work (inner products and updates, outside the "
        "FLOP model); w/F ex CG: wall/FLOP of the step without it (a diagnostic); "
        "CG its: the longest block's CG iterations per step"
    )


def format_passes(rows: Sequence[StepCost]) -> str:
    """The ``overhead`` command's table: time per step against Adam, and what a step made."""
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
