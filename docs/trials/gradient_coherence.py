"""How alike two halves of a mini-batch pull: the cosine between their gradients, step by step
along an optimizer's run at its defaults (medians over 10-step windows). Near 1, the gradient is
the same on any examples (the autoencoders' plateau); near 0, each mini-batch pulls its own way.

    python docs/trials/gradient_coherence.py OPTIMIZER PROBLEM BATCH STEPS [DATA_DIR]
"""

from __future__ import annotations

import statistics
import sys

import torch
from hf_trace import trial

from bdhf_bench.optim import ModelClosure

SEED = 42


def main(argv: list[str]) -> None:
    name, problem_name, batch, steps = argv[0], argv[1], int(argv[2]), int(argv[3])
    data_dir = argv[4] if len(argv) > 4 else None
    t = trial(name, problem_name, batch, SEED, data_dir, {})
    problem, model, l2 = t.problem, t.model, t.l2

    def gradient(x, y) -> torch.Tensor:
        closure = ModelClosure(model, problem.loss, x, y, l2)
        closure()
        return torch.cat([p.grad.flatten() for p in closure.params]).clone()

    cosines = []
    for _ in range(steps):
        x, y = next(t.batches)
        half = len(y) // 2
        g1, g2 = gradient(x[:half], y[:half]), gradient(x[half:], y[half:])
        cosines.append(float(torch.dot(g1, g2) / (g1.norm() * g2.norm())))
        t.optimizer.step(ModelClosure(model, problem.loss, x, y, l2))
    for a in range(0, steps, 10):
        median = statistics.median(cosines[a : a + 10])
        print(f"{problem_name} steps {a}-{a + 9}: cosine median {median:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
