"""Scheduling overhead: the same grid of tiny runs through the local executor and through a local
Ray cluster, in one process.

The runs (tiny_mlp, Adam, a few steps, one seed each) cost almost nothing, so what is measured
is what an executor adds per run: for the local executor, ``run_one``'s store work; for Ray, task
submission, argument shipping, result polling and, on first use, worker start-up (each worker
imports torch). Ray is timed cold (first grid after the cluster starts) and warm (a second grid
on the same workers); the cluster's start is reported apart. Every grid writes to its own
temporary results folder; the warm Ray grid and the local one alternate, medians reported.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import click
import torch

from ..optim import get_optimizer
from ..runner import Budget, Execution, ResultStore, RunSpec
from ..runner.executors import LocalExecutor


def tiny_specs(n: int, steps: int, first_seed: int = 0) -> list[RunSpec]:
    """``n`` distinct tiny runs (seeds ``first_seed`` onwards)."""
    hps = get_optimizer("adam").defaults()
    return [
        RunSpec("tiny_mlp", "adam", hps, seed, 50, Budget(steps=steps))
        for seed in range(first_seed, first_seed + n)
    ]


def timed_grid(executor, specs: list[RunSpec]) -> float:
    """Wall seconds for ``executor`` to run ``specs`` into a fresh results folder."""
    with tempfile.TemporaryDirectory() as out:
        store = ResultStore(out)
        start = time.perf_counter()
        outcomes = executor.run(specs, store)
        wall = time.perf_counter() - start
    bad = [o for o in outcomes if o.status not in ("finished", "diverged")]
    if bad:
        raise click.ClickException(f"{len(bad)} run(s) did not finish: {bad[0].error}")
    return wall


@click.command("scheduling")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--cpus",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default=True,
    help="CPUs of the local Ray cluster (runs at once).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch threads of the local executor (a Ray task gets 1 CPU, so 1 thread).",
)
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
def command(runs: int, steps: int, cpus: int, threads: int, repeats: int) -> None:
    """Per-run scheduling overhead of a local Ray cluster against the local executor."""
    from ..runner.ray_executor import RayExecutor, RayUnavailableError

    torch.set_num_threads(threads)
    execution = Execution(torch.device("cpu"), progress=False)

    def line(name: str, wall: float) -> str:
        return f"{name:<22} {wall:7.2f} s   {1000 * wall / runs:8.1f} ms/run"

    local = LocalExecutor(1, execution)
    timed_grid(local, tiny_specs(1, steps, first_seed=10_000))  # imports, data, first-call costs
    specs = tiny_specs(runs, steps)

    ray_executor = RayExecutor(execution, num_cpus=cpus)
    start = time.perf_counter()
    try:
        ray_executor.start()
    except RayUnavailableError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        cluster_start = time.perf_counter() - start
        slots = ray_executor.slots
        cold = timed_grid(ray_executor, specs)
        local_walls, warm_walls = [], []
        for _ in range(repeats):
            local_walls.append(timed_grid(local, specs))
            warm_walls.append(timed_grid(ray_executor, specs))
    finally:
        ray_executor.close()

    click.echo(
        f"{runs} runs of tiny_mlp / Adam, {steps} step(s) each, CPU; "
        f"local executor: 1 at a time in this process ({torch.get_num_threads()} threads); "
        f"Ray: local cluster, {slots} at a time, 1 CPU each"
    )
    click.echo(f"Ray cluster start      {cluster_start:7.2f} s   (once per command, not per run)")
    local_wall, warm = statistics.median(local_walls), statistics.median(warm_walls)
    click.echo(f"(local and warm Ray: medians of {repeats} alternating repeats)")
    click.echo(line("local executor", local_wall))
    click.echo(line("Ray, cold workers", cold))
    click.echo(line("Ray, warm workers", warm))
    for name, wall in (("cold", cold), ("warm", warm)):
        # Slot-seconds a run occupies on Ray beyond what the same run costs locally.
        extra = (wall * slots - local_wall) / runs
        click.echo(
            f"Ray {name}: wall {wall / local_wall:.2f}x local; "
            f"overhead {1000 * extra:+.1f} ms per run (slot-time per run minus local time per run)"
        )
