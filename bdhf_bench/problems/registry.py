"""The problem registry: built-in problems, ``register``, and third-party entry points.

Built-ins are created on first use (reading DeepOBS's default settings imports deepobs, about a
second), then entry points of the group ``bdhf_bench.problems`` are added: each loads to a
``Problem``, a list of them, or a zero-argument callable returning either. A broken plugin is
skipped with a warning.
"""

from __future__ import annotations

import threading

from ..plugins import load_entry_points, skip_taken_name, unknown_name_message
from .base import Problem

ENTRY_POINT_GROUP = "bdhf_bench.problems"

_REGISTRY: dict[str, Problem] = {}
_LOADED = False
_LOCK = threading.RLock()


def _ensure_loaded() -> None:
    global _LOADED
    with _LOCK:
        if _LOADED:
            return
        from .deepobs_problems import deepobs_problems
        from .offline import offline_problems
        from .paper import paper_problems

        _LOADED = True  # set first: plugins may call register()
        for problem in deepobs_problems() + paper_problems() + offline_problems():
            _REGISTRY.setdefault(problem.name, problem)
        for problem in load_entry_points(ENTRY_POINT_GROUP, Problem):
            if problem.name in _REGISTRY:
                skip_taken_name(ENTRY_POINT_GROUP, problem.name)
                continue
            register(problem)


def register(problem: Problem, *, replace: bool = False) -> Problem:
    """Add ``problem`` under its name; a taken name raises ValueError unless ``replace``."""
    if not isinstance(problem, Problem):
        raise ValueError(f"register() takes a Problem, got {type(problem).__name__}")
    with _LOCK:
        _ensure_loaded()
        if problem.name in _REGISTRY and not replace and _REGISTRY[problem.name] is not problem:
            raise ValueError(f"problem {problem.name!r} is already registered")
        _REGISTRY[problem.name] = problem
    return problem


def get_problem(name: str) -> Problem:
    """The problem called ``name``; an unknown name raises ValueError with the closest ones."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(unknown_name_message("problem", str(name), _REGISTRY)) from None


def problem_names() -> list[str]:
    """Every registered problem's name, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def forget_registered() -> None:
    """Forget every registered problem: the next lookup loads the built-ins and the installed
    entry points again, as a fresh process would (after installing a plugin, say)."""
    global _LOADED
    with _LOCK:
        _REGISTRY.clear()
        _LOADED = False
