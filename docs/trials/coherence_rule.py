"""Trial of the rule that became the automatic curvature fraction: the whole mini-batch as the
curvature batch when a moving average of the two halves' gradient agreement,
``a.b / ((|a|^2 + |b|^2) / 2)``, is above ``cstar``, a quarter below. Outside the optimizer: the
halves' loss gradients (no L2) are computed here, separately, before each step, and the
fraction is written into the parameter groups. Prints the agreement every 10 steps and the
first evaluation at the target.

    python docs/trials/coherence_rule.py opt=NAME seed=N steps=N problem=NAME [batch=100]
        [data_dir=DIR] [metric=acc|loss] [target=0.55] [cstar=0.6] [beta=0.9] [stop=1]
        [HYPERPARAMETER=VALUE ...]
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from hf_trace import trial

from bdhf_bench.optim import ModelClosure
from bdhf_bench.optim.closure import rows
from bdhf_bench.runner.evaluation import evaluate_split


def halves(model: torch.nn.Module, loss: Any, x: Any, y: Any) -> tuple[float, float]:
    """``a.b`` and ``(|a|^2 + |b|^2) / 2`` for the two halves' loss gradients."""
    params = [p for p in model.parameters() if p.requires_grad]
    h = y.shape[0] // 2
    flat = []
    for lo, hi in ((0, h), (h, 2 * h)):
        with torch.enable_grad():
            value = loss(model(rows(x, lo, hi)), rows(y, lo, hi))
            grads = torch.autograd.grad(value, params, allow_unused=True)
        filled = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        flat.append(torch.cat([g.reshape(-1) for g in filled]))
    a, b = flat
    return float(a @ b), 0.5 * float(a @ a + b @ b)


def main(argv: list[str]) -> None:
    args = dict(kv.split("=", 1) for kv in argv)
    name, seed, steps = args.pop("opt"), int(args.pop("seed")), int(args.pop("steps"))
    problem_name, batch = args.pop("problem"), int(args.pop("batch", 100))
    data_dir, metric = args.pop("data_dir", None), args.pop("metric", "acc")
    target, cstar = float(args.pop("target", 0.55)), float(args.pop("cstar", 0.6))
    beta, stop = float(args.pop("beta", 0.9)), args.pop("stop", "1") == "1"
    t = trial(name, problem_name, batch, seed, data_dir, args)
    num = den = 0.0
    hit, whole, agreements = None, 0, []
    for i in range(steps):
        x, y = next(t.batches)
        dot, square = halves(t.model, t.problem.loss, x, y)
        num, den = beta * num + (1 - beta) * dot, beta * den + (1 - beta) * square
        agreements.append(num / den)
        fraction = 1.0 if num / den > cstar else 0.25
        whole += fraction == 1.0
        for group in t.optimizer.param_groups:
            group["curvature_fraction"] = fraction
        t.optimizer.step(ModelClosure(t.model, t.problem.loss, x, y, t.l2))
        if (i + 1) % 10 == 0:
            v = evaluate_split(t.model, t.problem, t.splits.valid, t.l2, batch)
            value = v.accuracy if metric == "acc" else v.loss
            if hit is None and (value >= target if metric == "acc" else value <= target):
                hit = i + 1
            print(f"step {i + 1} agreement {num / den:.2f} {metric} {value:.3f}", flush=True)
            if hit and stop:
                break
    print(
        f"RESULT {name} {problem_name} seed {seed} cstar {cstar}: target at {hit}, whole batch "
        f"at {whole}/{len(agreements)} steps, agreement {min(agreements):.2f}-{max(agreements):.2f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
