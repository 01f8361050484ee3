"""One Adam epoch of mnist_mlp: our device-resident pipeline against DeepOBS's DataLoaders.

Both sides train the same model (same initial weights) with ``torch.optim.Adam`` (lr 1e-3, batch
128) for one epoch on the same 60,000-image MNIST files, in one process, with the same number of
torch threads. Evaluations are included as DeepOBS's ``StandardRunner`` does them: train_eval,
valid and test before the epoch and after it. The DeepOBS side IS DeepOBS: its ``mnist_mlp`` test
problem and ``StandardRunner.training``; ours is a plain loop over ``bdhf_bench.data``'s stream.
File contents do not matter for speed, so by default a random data set in MNIST's IDX format is
generated in a temporary folder.

Run: ``bdhf-bench bench data-pipeline [--threads N] [--repeats R] [--device cuda]``. It reports
the median and the best of R interleaved rounds; on a shared machine other processes' load
distorts both sides (more so the multi-threaded compute), so run it on a quiet one.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch

from ..data import eval_batches, load_splits, train_stream
from ..data.idx import write_idx
from ..problems import get_problem, seeded_model
from .timing import median_times, synchronize

PROBLEM = "mnist_mlp"
LR = 1e-3
LOG_INTERVAL = 10  # DeepOBS's default train_log_interval: one loss .item() every 10 steps


def write_random_mnist(root: Path, n_train: int = 60000, n_test: int = 10000) -> None:
    """Random bytes in MNIST's IDX files, where torchvision and our reader look for them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, np.uint8))


def _ours(
    data_dir: Path, device: torch.device, seed: int, eval_batch: int
) -> tuple[Callable, float]:
    """Our side: (one epoch with evaluations, set-up seconds)."""
    problem = get_problem(PROBLEM)
    start = time.perf_counter()
    splits = load_splits("mnist", data_dir=data_dir, device=device, seed=seed, download=False)
    stream = train_stream(splits, problem.batch_size, seed=seed)
    synchronize(device)
    setup = time.perf_counter() - start
    model = seeded_model(problem, seed, device)
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def evaluate() -> list[float]:
        model.eval()
        results = []
        for name in ("train_eval", "valid", "test"):
            loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            pair = splits.split(name)
            for x, y in eval_batches(pair, eval_batch):
                out = model(x)
                loss += problem.loss(out, y) * len(y)
                correct += problem.correct(out, y)
            results += [loss / len(pair[1]), correct / len(pair[1])]
        return [float(v) for v in torch.stack(results).tolist()]  # one host sync per evaluation

    def epoch() -> None:
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        evaluate()
        model.train()
        logged = []
        for i, (x, y) in enumerate(stream.epoch(0)):
            optimizer.zero_grad()
            loss = problem.loss(model(x), y)
            loss.backward()
            optimizer.step()
            if i % LOG_INTERVAL == 0:
                logged.append(loss.detach())
        torch.stack(logged).tolist()
        evaluate()

    return epoch, setup


def _deepobs(
    data_dir: Path, device: torch.device, seed: int, initial: dict
) -> tuple[Callable, float]:
    """DeepOBS's side: its test problem and StandardRunner, (one epoch, set-up seconds)."""
    import deepobs.config
    import deepobs.pytorch.config
    from deepobs.pytorch.runners import StandardRunner

    deepobs.config.set_data_dir(str(data_dir))
    deepobs.pytorch.config.set_default_device(str(device))
    runner = StandardRunner(torch.optim.Adam, {"lr": {"type": float}})
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        tproblem = runner.create_testproblem(PROBLEM, 128, None, seed)
    setup = time.perf_counter() - start

    def epoch() -> None:
        tproblem.net.load_state_dict(initial)
        with contextlib.redirect_stdout(io.StringIO()):
            runner.training(tproblem, {"lr": LR}, 1, False, LOG_INTERVAL, False, None)

    return epoch, setup


@click.command("data-pipeline")
@click.option("--threads", type=int, default=None, help="Torch threads for both sides.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option(
    "--repeats", type=int, default=3, show_default=True, help="Timed epochs per side (interleaved)."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A folder with MNIST/raw IDX files (default: generate random full-size ones).",
)
@click.option(
    "--eval-batch-size", type=int, default=128, show_default=True, help="Our evaluation batch."
)
@click.option("--seed", type=int, default=0, show_default=True)
def command(
    threads: int | None,
    device: str,
    repeats: int,
    data_dir: Path | None,
    eval_batch_size: int,
    seed: int,
) -> None:
    """Time one Adam epoch of mnist_mlp: our pipeline vs DeepOBS's DataLoaders."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    with tempfile.TemporaryDirectory(prefix="bdhf-data-pipeline-") as tmp:
        root = data_dir if data_dir is not None else Path(tmp)
        if data_dir is None:
            write_random_mnist(root)
        ours, ours_setup = _ours(root, dev, seed, eval_batch_size)
        initial = {
            k: v.to(dev) for k, v in seeded_model(get_problem(PROBLEM), seed).state_dict().items()
        }
        theirs, theirs_setup = _deepobs(root, dev, seed, initial)
        # one interleaved round per repeat, so that we can report the best as well as the median
        fns = {"ours": ours, "deepobs": theirs}
        rounds = [median_times(fns, repeats=1, warmup=0, device=dev) for _ in range(repeats)]
    median = {k: statistics.median(r[k] for r in rounds) for k in fns}
    best = {k: min(r[k] for r in rounds) for k in fns}
    click.echo(
        f"data-pipeline: one Adam epoch of {PROBLEM} (batch 128, 60,000 MNIST training images in "
        f"IDX files, train_eval/valid/test evaluated before and after, as DeepOBS's "
        f"StandardRunner does), {dev}, {torch.get_num_threads()} threads, {repeats} rounds"
    )
    click.echo(
        f"  set-up (read files, splits):    ours {ours_setup:6.2f} s   "
        f"DeepOBS {theirs_setup:6.2f} s"
    )
    for label, t in (("median", median), ("best", best)):
        click.echo(
            f"  epoch with evaluations, {label:6s}: ours {t['ours']:6.2f} s   "
            f"DeepOBS {t['deepobs']:6.2f} s   speed-up {t['deepobs'] / t['ours']:.2f}x"
        )
    click.echo("  target: ours >= 1.6x faster on CPU")
