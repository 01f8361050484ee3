"""Per-step trace of HF or BDHF outside the runner: loss, rho, lambda and CG per step, the
validation loss every 10 steps, and (with the trial patch's RATIO=1) the mini-batch GGN against
the curvature sub-batch's along each step. A diagnostic for the trials in README.md, not a
benchmark: one thread, real data, the runner's seeding.

    python docs/trials/hf_trace.py OPTIMIZER SEED STEPS problem=NAME [batch=N]
        [data_dir=DIR] [quiet=1] [HYPERPARAMETER=VALUE ...]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bdhf_bench.data import train_stream
from bdhf_bench.optim import ModelClosure, get_optimizer
from bdhf_bench.problems import Problem, get_problem, seeded_model
from bdhf_bench.runner.evaluation import evaluate_split
from bdhf_bench.runner.loop import problem_data


@dataclass
class Trial:
    """A run's pieces as the runner makes them (its seeding, real data), on the CPU."""

    problem: Problem
    splits: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    l2: list[float]
    batches: Iterator[tuple[Any, Any]]
    """Endless prepared mini-batches, epoch after epoch."""


def trial(
    name: str, problem_name: str, batch: int, seed: int, data_dir: str | None, hps: dict
) -> Trial:
    """``name`` with the overrides ``hps`` on ``problem_name``, ready to step."""
    torch.set_num_threads(1)
    problem = get_problem(problem_name)
    splits = problem_data(
        problem,
        batch_size=batch,
        source="real",
        data_dir=Path(data_dir) if data_dir else None,
        device=torch.device("cpu"),
        seed=seed,
    )
    stream = train_stream(splits, batch, seed=seed, augment=problem.augment)
    model = seeded_model(problem, seed, torch.device("cpu")).train()
    entry = get_optimizer(name)
    optimizer = entry.build(model, entry.resolve(hps))
    torch.manual_seed(seed)

    def batches() -> Iterator[tuple[Any, Any]]:
        epoch = 0
        while True:
            for pair in stream.epoch(epoch):
                yield problem.prepare_batch(*pair) if problem.prepare_batch else pair
            epoch += 1

    return Trial(problem, splits, model, optimizer, problem.l2_coefficients(model), batches())


def main(argv: list[str]) -> None:
    name, seed, steps = argv[0], int(argv[1]), int(argv[2])
    over = dict(kv.split("=", 1) for kv in argv[3:])
    problem_name = over.pop("problem")
    batch = int(over.pop("batch", 100))
    data_dir = over.pop("data_dir", None)
    quiet = over.pop("quiet", "0") == "1"
    t = trial(name, problem_name, batch, seed, data_dir, over)
    problem, model, opt, l2 = t.problem, t.model, t.optimizer, t.l2

    feed, start, ratios = t.batches, time.time(), []
    following = next(feed)
    for i in range(steps):
        current, following = following, next(feed)
        closure = ModelClosure(model, problem.loss, *current, l2)
        closure._holdout = following  # read only by the patch's RHO_PART=holdout
        opt.step(closure)
        s = opt.last_step
        ratios.append(getattr(s, "ratio", None))
        if not quiet:
            print(
                f"{i:3d} loss {s.loss:.4f} ok {int(s.accepted)} a {s.scale:.3g} "
                f"t {s.step_size:.3g} rho {[round(r, 2) for r in s.rho]} "
                f"lam {s.damping[0]:.3g} cg {s.cg_iterations}"
            )
        if (i + 1) % 10 == 0:
            v = evaluate_split(model, problem, t.splits.valid, l2, batch)
            print(
                f"== step {i + 1} valid loss {v.loss:.3f} acc {v.accuracy} "
                f"lam {s.damping[0]:.3g} t {time.time() - start:.0f}s",
                flush=True,
            )
    if ratios and ratios[0] is not None:
        for a in range(0, len(ratios), 10):
            part = ratios[a : a + 10]
            print(
                f"ratio steps {a}-{a + len(part) - 1}: d'G_batch d / d'G_sub d median "
                f"{statistics.median(r[0] for r in part):.2f} max {max(r[0] for r in part):.2f}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
