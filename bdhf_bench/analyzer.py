"""Using DeepOBS's own analyzer on bdhf-bench results.

Point ``deepobs.analyzer`` at a results folder's ``deepobs/`` subfolder (``deepobs_folder``):
it holds finished runs only, in DeepOBS's layout. The analyzer titles every plot and table by
splitting the problem folder's name at its first ``_`` and looking both halves up in its own
naming tables (``mnist`` -> "MNIST", ``mlp`` -> "MLP"), and raises ``KeyError`` for a half it does
not know. ``register_problem_names`` adds our problems' halves (``tiny``, ``autoencoder``,
``lstm``, ...) to those tables, without changing any name DeepOBS already has.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .runner.store import DEEPOBS


def deepobs_folder(results: str | Path) -> Path:
    """The folder of ``results`` to give DeepOBS's analyzer."""
    return Path(results) / DEEPOBS


def register_problem_names(names: Iterable[str] | None = None) -> list[str]:
    """Make DeepOBS's analyzer know the problems ``names`` (default: every registered problem);
    returns the name halves that were added."""
    from deepobs.config import get_data_set_naming, get_tp_naming

    if names is None:
        from .problems import problem_names

        names = problem_names()
    data_sets, problems = get_data_set_naming(), get_tp_naming()
    added = []
    for name in names:
        data_set, sep, problem = name.partition("_")
        if not sep:
            continue  # DeepOBS cannot title a name without "_" whatever its tables hold
        for table, half in ((data_sets, data_set), (problems, problem)):
            if half not in table:
                table[half] = half
                added.append(half)
    return added
