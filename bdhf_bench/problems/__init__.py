"""Test problems: DeepOBS's PyTorch suite, the paper's three problems, a tiny CI problem.

``get_problem(name)`` returns a ``Problem`` (plain data: model factory, loss, L2 factors, data set,
defaults, target); ``problem_names()`` lists them; ``register(problem)`` and the entry-point group
``bdhf_bench.problems`` add more.
"""

from __future__ import annotations

from .base import Problem, Target, argmax_correct, seeded_model, uniform_l2, weights_only_l2
from .registry import ENTRY_POINT_GROUP, get_problem, problem_names, register

__all__ = [
    "ENTRY_POINT_GROUP",
    "Problem",
    "Target",
    "argmax_correct",
    "get_problem",
    "problem_names",
    "register",
    "seeded_model",
    "uniform_l2",
    "weights_only_l2",
]
