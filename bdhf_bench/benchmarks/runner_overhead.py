"""The runner's cost: its Adam epoch on mnist_mlp against a bare PyTorch loop, one process.

Both sides train the same model from the same weights with Adam (lr 1e-3, batch 128) for one
epoch over the same device-resident tensors (a 60,000-image data set in MNIST's IDX format,
generated in a temporary folder: contents do not matter for speed). The runner's time is its own
device-synchronised training time (evaluations excluded); the bare loop is the fewest lines that
train: index a batch, forward, backward, step. Repeated, alternating, medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import click
import torch

from ..data import load_splits, train_stream
from ..optim import get_optimizer
from ..problems import get_problem, seeded_model
from ..runner import Budget, Execution, ResultStore, RunSpec, Trainer
from .data_pipeline import write_random_mnist
from .timing import machine_options, synchronize

PROBLEM = "mnist_mlp"


def runner_epoch(data_dir: Path, device: torch.device, seed: int) -> float:
    hps = get_optimizer("adam").resolve({"lr": 1e-3})
    spec = RunSpec(PROBLEM, "adam", hps, seed, 128, Budget(epochs=1))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(spec, ResultStore(out), Execution(device, data_dir, progress=False))
        result, _ = trainer.run()
    return result["train_seconds"]


def bare_epoch(data_dir: Path, device: torch.device, seed: int) -> float:
    problem = get_problem(PROBLEM)
    splits = load_splits("mnist", data_dir=data_dir, device=device, seed=seed, download=False)
    model = seeded_model(problem, seed, device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stream = train_stream(splits, 128, seed=seed)
    synchronize(device)
    start = time.perf_counter()
    for x, y in stream.epoch(0):
        opt.zero_grad(set_to_none=True)
        problem.loss(model(x), y).backward()
        opt.step()
    synchronize(device)
    return time.perf_counter() - start


@click.command("runner")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@machine_options
def command(repeats: int, device: torch.device, threads: int | None) -> None:
    """The runner's Adam epoch on mnist_mlp against a bare loop (target: <= 10% overhead)."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        click.echo("writing a 60,000-image data set in MNIST's format (a temporary folder)...")
        write_random_mnist(data_dir)
        ours, bare = [], []
        for i in range(repeats):
            click.echo(f"round {i + 1}/{repeats}: an epoch of the bare loop, then the runner's")
            bare.append(bare_epoch(data_dir, device, seed=i))
            ours.append(runner_epoch(data_dir, device, seed=i))
    r, b = statistics.median(ours), statistics.median(bare)
    click.echo(
        f"{PROBLEM}, Adam, batch 128, one epoch, {device}, {torch.get_num_threads()} threads"
    )
    click.echo(f"bare loop: {b:.3f} s   runner: {r:.3f} s   overhead: {100 * (r / b - 1):+.1f}%")
    click.echo(f"target <= +10%: {'yes' if r <= 1.1 * b else 'NO'}")
