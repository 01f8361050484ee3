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
from pathlib import Path

import torch

from bdhf_bench.data import train_stream
from bdhf_bench.optim import ModelClosure, get_optimizer
from bdhf_bench.problems import get_problem, seeded_model
from bdhf_bench.runner.evaluation import evaluate_split
from bdhf_bench.runner.loop import problem_data


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    name, seed, steps = argv[0], int(argv[1]), int(argv[2])
    over = dict(kv.split("=", 1) for kv in argv[3:])
    problem = get_problem(over.pop("problem"))
    batch = int(over.pop("batch", 100))
    data_dir = over.pop("data_dir", None)
    quiet = over.pop("quiet", "0") == "1"
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
    opt = entry.build(model, entry.resolve(over))
    l2 = problem.l2_coefficients(model)
    torch.manual_seed(seed)

    def prepared(pair):
        return problem.prepare_batch(*pair) if problem.prepare_batch else pair

    def batches():
        epoch = 0
        while True:
            yield from stream.epoch(epoch)
            epoch += 1

    feed, start, ratios = batches(), time.time(), []
    following = next(feed)
    for i in range(steps):
        current, following = following, next(feed)
        closure = ModelClosure(model, problem.loss, *prepared(current), l2)
        closure._holdout = prepared(following)  # read only by the patch's RHO_PART=holdout
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
            v = evaluate_split(model, problem, splits.valid, l2, batch)
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
