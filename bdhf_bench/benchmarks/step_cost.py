"""Per-step cost of BDHF and HF as multiples of an Adam step, beside their pass counts.

On mnist_mlp and the MNIST deep autoencoder (synthetic data of the real shapes, the problems'
batch sizes unless told otherwise), every optimizer steps on the same batches from the same
initial weights, timed round-robin in one process (``bdhf_bench.runner.overhead``). A step's
gradient-equivalents are 1 (the gradient) plus the curvature work: K products times their cost,
the curvature forward pass, the J^T u recording, and the extra forward passes of the reduction
ratio, CG-backtracking and line search, all counted from FLOPs.
"""

from __future__ import annotations

import click
import torch

from ..runner.overhead import format_rows, measure_overhead
from .timing import machine_options

PROBLEMS = ("mnist_mlp", "mnist_autoencoder")


@click.command("step-cost")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Override the problems' batch sizes."
)
@machine_options
def command(
    steps: int, warmup: int, batch_size: int | None, device: torch.device, threads: int | None
) -> None:
    """Seconds per step of bdhf and hf relative to Adam, with pass counts per step."""
    for name in PROBLEMS:
        rows = measure_overhead(
            name,
            [("adam", {}), ("bdhf", {}), ("hf", {})],
            device=device,
            batch_size=batch_size,
            steps=steps,
            warmup=warmup,
        )
        from ..problems import get_problem

        batch = batch_size or get_problem(name).batch_size
        click.echo(f"{name}, batch {batch}, {device}, {torch.get_num_threads()} threads")
        click.echo(format_rows(rows))
        click.echo("")
    click.echo(
        "fwd/bwd: passes per step in mini-batch units; products: GGN products per step (each "
        "on the curvature sub-batch); grad-eq: the step's FLOPs / one gradient's"
    )
