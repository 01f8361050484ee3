"""The report's time and peak memory as the results folder grows: 3,000 and 30,000 files.

A DeepOBS-sized grid is ~9,000 runs and a large study 30,000; the report must read them in
bounded time and memory. One real run (tiny_mlp, Adam, 1,500 updates, 21 evaluations: a
~45 KB file like a CPU study's) is trained once and copied into a grid of problems x
optimizers x settings x seeds, each copy's numbers perturbed so no two are alike. Each size is
reported by a fresh process, which builds the whole report (tables, figures, pages) into a
temporary folder.

Memory is read from ``/proc``, not ``getrusage``: Linux keeps ``ru_maxrss`` across fork and
exec, so a spawned process would report its parent's size. The reporting process's own peak is
its ``VmHWM``; the whole tree's (it and its worker processes together: what the machine must
hold) is the largest sum of their resident sizes, sampled every 20 ms.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

SIZES = (3000, 30000)
TEMPLATE_STEPS = 1500


def template_result(folder: Path) -> dict[str, Any]:
    """One real result document from a short run trained here."""
    import torch

    from ..optim import get_optimizer
    from ..runner import Budget, Execution, ResultStore, RunSpec, Trainer

    spec = RunSpec(
        "tiny_mlp",
        "adam",
        get_optimizer("adam").resolve({"lr": 1e-2}),
        0,
        16,
        Budget(steps=TEMPLATE_STEPS),
        eval_every=TEMPLATE_STEPS // 20,
        data="synthetic",
    )
    trainer = Trainer(spec, ResultStore(folder), Execution(torch.device("cpu"), progress=False))
    result, _ = trainer.run()
    return result


def _grid(n: int) -> list[tuple[str, str, float, int]]:
    """(problem, optimizer, lr, seed) for n runs: 10 problems, 10 seeds, optimizers and
    settings filling the rest."""
    problems, seeds = [f"p{i:02d}_mlp" for i in range(10)], range(10)
    per = max(1, n // (len(problems) * len(seeds)))
    optimizers = max(1, min(10, per // 3))
    settings = max(1, per // optimizers)
    out = [
        (p, f"opt{o}", 10.0 ** (-1 - s / settings), seed)
        for p in problems
        for o in range(optimizers)
        for s in range(settings)
        for seed in seeds
    ]
    return out[:n]


def write_results(root: Path, n: int, template: dict[str, Any]) -> int:
    """``n`` result files under ``root/deepobs``; returns the bytes written."""
    rng = np.random.default_rng(0)
    base_losses = np.asarray(template["minibatch_train_losses"], dtype=float)
    written = 0
    for problem, optimizer, lr, seed in _grid(n):
        scale = float(rng.uniform(0.8, 1.2))
        doc = dict(template)
        doc.update(
            testproblem=problem,
            optimizer_name=optimizer,
            random_seed=seed,
            optimizer_hyperparams={"lr": lr},
            minibatch_train_losses=(base_losses * scale).round(6).tolist(),
            evaluations=[
                {
                    k: (v * scale if isinstance(v, float) and "loss" in k else v)
                    for k, v in e.items()
                }
                for e in template["evaluations"]
            ],
        )
        folder = root / "deepobs" / problem / optimizer / f"num_epochs__1__lr__{lr:.3e}"
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(doc)
        (folder / f"random_seed__{seed}__2026-01-01-00-00-00.json").write_text(text)
        written += len(text)
    return written


def _status_mb(pid: int | str, field: str) -> float:
    """``field`` (VmRSS, VmHWM) of ``/proc/<pid>/status`` in MB; 0 for a process that is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it, from ``/proc/<n>/stat``'s parent field."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(parents.get(current, []))
    return out


class TreeMemory:
    """The largest total resident size of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.pid, self.every, self.peak_mb = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = sum(_status_mb(p, "VmRSS") for p in _tree(self.pid))
            self.peak_mb = max(self.peak_mb, total)
            self._stop.wait(self.every)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _measure(root: str, out: str, queue: Any) -> None:
    """In a fresh process: build the report, send back (seconds, peak resident MB, runs)."""
    from ..report import build_report

    start = time.perf_counter()
    summary = build_report([root], out)
    seconds = time.perf_counter() - start
    queue.put((seconds, _status_mb("self", "VmHWM"), summary.n_runs))


def measure(n: int, template: dict[str, Any]) -> dict[str, float]:
    """Write ``n`` files, report them in a fresh process; seconds, peak MB, MB on disk."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        size = write_results(root, n, template)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        worker = ctx.Process(target=_measure, args=(str(root), str(Path(tmp) / "report"), queue))
        worker.start()
        assert worker.pid is not None
        with TreeMemory(worker.pid) as tree:
            seconds, peak_mb, runs = queue.get()
        worker.join()
    return {
        "files": n,
        "runs": runs,
        "disk_mb": size / 2**20,
        "seconds": seconds,
        "peak_mb": peak_mb,
        "tree_mb": tree.peak_mb,
    }


@click.command("report-scale")
@click.option(
    "--files",
    "sizes",
    type=click.IntRange(min=10),
    multiple=True,
    help="Result files to generate and report (repeatable; default 3,000 and 30,000).",
)
def command(sizes: tuple[int, ...]) -> None:
    """The report's seconds and peak memory on generated results folders of growing size."""
    with tempfile.TemporaryDirectory() as tmp:
        click.echo(f"training one template run ({TEMPLATE_STEPS} updates of tiny_mlp)...")
        template = template_result(Path(tmp))
    click.echo(
        f"{'files':>7} {'runs':>7} {'MB on disk':>10} {'seconds':>8} {'peak MB':>8} "
        f"{'with workers MB':>15}"
    )
    for n in sizes or SIZES:
        click.echo(f"writing {n} files and reporting them in a fresh process...", err=True)
        r = measure(n, template)
        click.echo(
            f"{r['files']:>7} {r['runs']:>7} {r['disk_mb']:>10.0f} {r['seconds']:>8.1f} "
            f"{r['peak_mb']:>8.0f} {r['tree_mb']:>15.0f}"
        )
    click.echo(
        "peak MB: the reporting process's own peak (VmHWM); with workers MB: the largest total "
        "of it and its worker processes (file parsing and figures, from 2,000 runs on), "
        "sampled every 20 ms. Target: 30,000 files in under 60 s and 2,000 MB"
    )
