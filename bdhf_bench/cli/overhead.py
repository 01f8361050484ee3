"""``overhead``: each optimizer's per-step time relative to Adam, with its pass counts."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    data_dir_option,
    lookup_optimizer,
    lookup_problem,
    parse_device,
    run_error,
    run_errors,
)


@click.command()
@click.option("--problem", "-p", required=True, help="Problem name.")
@click.option(
    "--optimizer",
    "-o",
    "optimizers",
    multiple=True,
    help="Optimizer (repeatable; default: every registered one). Adam is always measured.",
)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), help="Default: the problem's.")
@click.option("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one).")
@click.option(
    "--data",
    type=click.Choice(["real", "synthetic"]),
    default="synthetic",
    show_default=True,
)
@data_dir_option
def overhead(
    problem: str,
    optimizers: tuple[str, ...],
    steps: int,
    warmup: int,
    batch_size: int | None,
    device: str | None,
    data: str,
    data_dir: Path | None,
) -> None:
    """Per-step time of each optimizer relative to Adam, with its pass counts (the step-cost
    harness, without its part timer: every optimizer steps on the same batches in turn)."""
    from ..benchmarks.step_cost import format_passes, measure_step_cost
    from ..optim import optimizer_names

    prob = lookup_problem(problem)
    names = list(optimizers) or optimizer_names()
    for name in names:
        lookup_optimizer(name)
    dev = parse_device(device)
    try:
        rows = measure_step_cost(
            prob.name,
            [(n, {}) for n in names],
            device=dev,
            batch_size=batch_size,
            steps=steps,
            warmup=warmup,
            parts=False,
            data=data,
            data_dir=data_dir,
        )
    except run_errors() as exc:
        raise run_error(exc) from None
    click.echo(f"{prob.name}, batch {batch_size or prob.batch_size}, {dev}, {steps} steps")
    click.echo(format_passes(rows))
