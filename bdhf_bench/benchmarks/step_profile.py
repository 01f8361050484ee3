"""Where an HF step's time goes: products, CG vector work, evaluations, the rest.

Each optimizer takes the same steps on the same batches as in ``step-cost``; every part of a step
is timed exclusively (a product inside CG counts as a product, not as CG):

- ``products``: the GGN products (``GGNContext.packed_block_products`` / ``packed_product``);
- ``CG vectors``: ``block_cg`` without its products (vector updates, inner products, the
  stopping rule's small kernels and the host reads of the active-block mask);
- ``evaluations``: the gradient, the curvature forward pass and the extra objective evaluations
  (rho, CG-backtracking, line search);
- ``rest``: the step's own bookkeeping (packing, clones, finiteness checks, parameter updates).

A second pass under ``torch.profiler`` counts per step the aten calls (all, nested ones too) and
the host reads (``aten::_local_scalar_dense``: ``item``, ``float()``, ``bool()``; and
``tolist``). ``dispatch`` estimates the fixed cost of the calls made from Python (the outermost
ones): their number times the cost of one tiny call (a 0-d add) on this machine; ``outside ops``
is the share of the profiled step spent outside every aten call and autograd node (Python and
glue; the profiler's own cost inflates it). Both are part of the other columns, not beside them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import click
import torch
from torch.profiler import ProfilerActivity, profile

from ..data import train_stream
from ..optim import ModelClosure, get_optimizer
from ..problems import get_problem, seeded_model
from ..runner.loop import problem_data
from .engine_setting import engine_hyperparameters
from .parts import PARTS, PartTimer
from .timing import machine_options, synchronize

PROBLEMS = ("mnist_mlp", "cifar10_3c3d", "smnist_lstm", "mnist_autoencoder")


@contextlib.contextmanager
def _counting_tolist() -> Iterator[list[int]]:
    """Count ``Tensor.tolist`` calls (a host read the profiler does not show on the CPU)."""
    count = [0]
    real = torch.Tensor.tolist

    def counted(self: torch.Tensor) -> Any:
        count[0] += 1
        return real(self)

    torch.Tensor.tolist = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        torch.Tensor.tolist = real  # type: ignore[method-assign]


def profile_steps(
    problem_name: str,
    optimizer: str,
    *,
    device: torch.device,
    steps: int = 3,
    warmup: int = 1,
    seed: int = 0,
    compiled: bool = False,
) -> dict[str, float]:
    """Milliseconds per step by part, and per-step counts from the profiler (``compiled``:
    CG's compiled iteration, compiled in the warm-up steps)."""
    problem = get_problem(problem_name)
    batch = problem.batch_size
    splits = problem_data(
        problem, batch_size=batch, source="synthetic", data_dir=None, device=device, seed=seed
    )
    stream = train_stream(splits, batch, seed=seed, augment=problem.augment)
    batches = list(stream.epoch(0))
    while len(batches) < warmup + 2 * steps:
        batches += batches
    model = seeded_model(problem, seed, device).train()
    entry = get_optimizer(optimizer)
    opt = entry.build(model, engine_hyperparameters(entry), cg_compiled=compiled)
    l2 = problem.l2_coefficients(model)

    def step(x: Any, y: Any) -> None:
        inputs, targets = problem.prepare_batch(x, y)
        opt.step(ModelClosure(model, problem.loss, inputs, targets, l2))

    for x, y in batches[:warmup]:
        step(x, y)
    timer = PartTimer(device)
    total = 0.0
    for x, y in batches[warmup : warmup + steps]:
        with timer.active():
            synchronize(device)
            start = time.perf_counter()
            wrapped = timer.wrap("rest", step)
            wrapped(x, y)
            total += time.perf_counter() - start
    out = {"step": 1e3 * total / steps}
    out.update({k: 1e3 * v / steps for k, v in timer.seconds.items()})

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof, _counting_tolist() as tolists:
        synchronize(device)
        start = time.perf_counter()
        for x, y in batches[warmup + steps : warmup + 2 * steps]:
            step(x, y)
        synchronize(device)
        wall = time.perf_counter() - start
    events = prof.events()
    out["aten calls"] = sum(1 for e in events if e.name.startswith("aten::")) / steps
    outer = [e for e in events if _from_python(e)]
    out["dispatch"] = 1e3 * len(outer) * _seconds_per_call(device) / steps
    out["outside ops"] = max(0.0, 1.0 - sum(e.cpu_time_total for e in outer) / 1e6 / wall)
    scalar_reads = sum(1 for e in events if e.name == "aten::_local_scalar_dense")
    out["host reads"] = (scalar_reads + tolists[0]) / steps
    return out


def _from_python(event: Any) -> bool:
    """An aten call or autograd engine node not inside another one (step's record_function
    annotations do not count)."""
    if not event.name.startswith(("aten::", "autograd::")):
        return False
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(("aten::", "autograd::")):
            return False
        parent = parent.cpu_parent
    return True


def _seconds_per_call(device: torch.device) -> float:
    """The fixed cost of one small aten call from Python (a 0-d add), the median of 200."""
    a = torch.zeros((), device=device)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        torch.add(a, a)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def format_profile(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    header = (
        f"{'problem':<18} {'optimizer':<9} {'ms/step':>8} "
        + " ".join(f"{p:>11}" for p in PARTS)
        + f" {'aten calls':>10} {'dispatch':>8} {'host reads':>10} {'outside ops':>11}"
    )
    lines = [header, "-" * len(header)]
    for problem, optimizer, r in rows:
        parts = " ".join(f"{r[p]:>6.1f} {r[p] / r['step']:>3.0%}" for p in PARTS)
        lines.append(
            f"{problem:<18} {optimizer:<9} {r['step']:>8.1f} {parts} {r['aten calls']:>10.0f} "
            f"{r['dispatch']:>8.1f} {r['host reads']:>10.1f} {r['outside ops']:>11.0%}"
        )
    return "\n".join(lines)


@click.command("step-profile")
@click.option(
    "--problem",
    "problems",
    type=click.Choice(PROBLEMS),
    multiple=True,
    help="Problems to profile (repeatable; default: mnist_mlp, cifar10_3c3d, smnist_lstm).",
)
@click.option(
    "--optimizer",
    "optimizers",
    type=click.Choice(["bdhf", "hf"]),
    multiple=True,
    help="Optimizers to profile (repeatable; default: both).",
)
@click.option("--steps", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option(
    "--cg-compile",
    is_flag=True,
    help="CG's iteration as one compiled function (block_cg's compiled; the GPU path).",
)
@machine_options
def command(
    problems: tuple[str, ...],
    optimizers: tuple[str, ...],
    steps: int,
    warmup: int,
    cg_compile: bool,
    device: torch.device,
    threads: int | None,
) -> None:
    """Milliseconds per HF step by part (products, CG vectors, evaluations, rest)."""
    rows = []
    for name in problems or PROBLEMS[:3]:
        for opt in optimizers or ("bdhf", "hf"):
            costs = profile_steps(
                name, opt, device=device, steps=steps, warmup=warmup, compiled=cg_compile
            )
            rows.append((name, opt, costs))
    cg = "compiled" if cg_compile else "eager"
    click.echo(f"{device}, {torch.get_num_threads()} threads, synthetic data, CG iteration {cg}")
    click.echo(format_profile(rows))
    click.echo(
        "each part: ms per step and its share of the step; aten calls and host reads "
        "per step from a second, profiled pass; dispatch: ms per step the calls made from Python "
        "cost at the price of a tiny one; outside ops: share of the profiled step outside "
        "any aten call or autograd node (Python)"
    )
