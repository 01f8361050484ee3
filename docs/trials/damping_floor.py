"""Trial: HF or BDHF with a floor under Levenberg-Marquardt's lambda (the parameter groups'
``damping_min``), to ask whether the quarter's help on the MNIST-1D MLP is its larger lambda.
Best validation accuracy over the run (checked every 10 steps) and the first step at 0.55.

    python docs/trials/damping_floor.py OPTIMIZER SEED STEPS FRACTION FLOOR [PROBLEM]
"""

from __future__ import annotations

import sys

from hf_trace import trial

from bdhf_bench.optim import ModelClosure
from bdhf_bench.runner.evaluation import evaluate_split

TARGET = 0.55


def main(argv: list[str]) -> None:
    name, seed, steps = argv[0], int(argv[1]), int(argv[2])
    fraction, floor = argv[3], float(argv[4])
    problem_name = argv[5] if len(argv) > 5 else "mnist1d_mlp"
    t = trial(name, problem_name, 100, seed, None, {"curvature_fraction": fraction})
    for group in t.optimizer.param_groups:
        group["damping_min"] = floor
        group["damping"] = max(group["damping"], floor)
    best, hit = 0.0, None
    for i in range(steps):
        t.optimizer.step(ModelClosure(t.model, t.problem.loss, *next(t.batches), t.l2))
        if (i + 1) % 10 == 0:
            accuracy = evaluate_split(t.model, t.problem, t.splits.valid, t.l2, 100).accuracy
            best = max(best, accuracy)
            if hit is None and accuracy >= TARGET:
                hit = i + 1
    print(f"{name} seed {seed} fraction {fraction} floor {floor:g}: best {best:.3f}")
    print(f"  first evaluation at {TARGET}: {hit}")


if __name__ == "__main__":
    main(sys.argv[1:])
