"""The page's answer in one table: per problem and unit, who reached the target first.

A cell names the winner (the lowest median time to target over seeds, a miss counting as
infinite), its lead over the runner-up as a ratio, and whether that lead exceeds the seeds'
spread (every seed of the winner beats every seed of the runner-up) or the seeds overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from .document import Table
from .headline import UNITS, Contender, contenders, spread

UNIT_NAMES = {"steps": "updates", "seconds": "seconds", "gradient_equivalents": "grad-eq"}


def _ratio(value: float) -> str:
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def winner_cell(pool: Sequence[Contender], unit: str) -> str:
    """ "hf, 2.80× over adam (clear)", "bdhf = hf, 1.33× over soap (seeds overlap)",
    "hf (only one reached)", or "none reached"."""
    timed = sorted((c for c in pool if c.n_with_target), key=lambda c: c.medians[unit])
    if not timed or not math.isfinite(timed[0].medians[unit]):
        return "none reached"
    best = timed[0].medians[unit]
    leaders = [c for c in timed if math.isclose(c.medians[unit], best)]
    others = timed[len(leaders) :]
    names = " = ".join(c.optimizer for c in leaders)
    if not others:
        return f"{names} (alone)" if len(leaders) == 1 else f"{names} (all tie)"
    runner = others[0]
    if not math.isfinite(runner.medians[unit]):
        return f"{names} (only {'one' if len(leaders) == 1 else 'they'} reached)"
    ratio = runner.medians[unit] / best if best > 0 else math.inf
    verdict = spread([c.seeds[unit] for c in leaders], runner.seeds[unit])
    return f"{names}, {_ratio(ratio)} over {runner.optimizer} ({verdict})"


def winner_table(workloads: Sequence[tuple[str, pd.DataFrame]], runs: pd.DataFrame) -> Table:
    """One row per workload: the winner of each unit."""
    headers = ["problem", *(f"fewest {UNIT_NAMES[u]} to target" for u, _, _ in UNITS)]
    rows = []
    for workload, summary in workloads:
        pool = contenders(summary, runs)
        rows.append([workload, *(winner_cell(pool, u) for u, _, _ in UNITS)])
    caption = (
        "the winner's median time to target over seeds (a miss counts as infinite) against the "
        "runner-up's; clear: every seed of the winner beat every seed of the runner-up"
    )
    return Table(headers, rows, caption)
