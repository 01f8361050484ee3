"""How alike two halves of a mini-batch pull: the cosine between their gradients, step by step
along an optimizer's run at its defaults (medians over 10-step windows). Near 1, the gradient is
the same on any examples (the autoencoders' plateau); near 0, each mini-batch pulls its own way.

    python docs/trials/gradient_coherence.py OPTIMIZER PROBLEM BATCH STEPS [DATA_DIR]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from bdhf_bench.data import train_stream
from bdhf_bench.optim import ModelClosure, get_optimizer
from bdhf_bench.problems import get_problem, seeded_model
from bdhf_bench.runner.loop import problem_data

SEED = 42


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    name, problem_name, batch, steps = argv[0], argv[1], int(argv[2]), int(argv[3])
    data_dir = Path(argv[4]) if len(argv) > 4 else None
    problem = get_problem(problem_name)
    splits = problem_data(
        problem,
        batch_size=batch,
        source="real",
        data_dir=data_dir,
        device=torch.device("cpu"),
        seed=SEED,
    )
    stream = train_stream(splits, batch, seed=SEED, augment=problem.augment)
    model = seeded_model(problem, SEED, torch.device("cpu")).train()
    entry = get_optimizer(name)
    opt = entry.build(model, entry.defaults())
    l2 = problem.l2_coefficients(model)
    torch.manual_seed(SEED)

    def gradient(x, y) -> torch.Tensor:
        closure = ModelClosure(model, problem.loss, x, y, l2)
        closure()
        return torch.cat([p.grad.flatten() for p in closure.params]).clone()

    def batches():
        epoch = 0
        while True:
            yield from stream.epoch(epoch)
            epoch += 1

    feed, cosines = batches(), []
    for _ in range(steps):
        x, y = next(feed)
        if problem.prepare_batch:
            x, y = problem.prepare_batch(x, y)
        half = len(y) // 2
        g1, g2 = gradient(x[:half], y[:half]), gradient(x[half:], y[half:])
        cosines.append(float(torch.dot(g1, g2) / (g1.norm() * g2.norm())))
        opt.step(ModelClosure(model, problem.loss, x, y, l2))
    for a in range(0, steps, 10):
        median = statistics.median(cosines[a : a + 10])
        print(f"{problem_name} steps {a}-{a + 9}: cosine median {median:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
