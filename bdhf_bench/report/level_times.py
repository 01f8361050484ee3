"""Time to several levels of one metric: the milestones of a time-to-target study.

A run records one target; a study also asks when each optimizer got to easier levels on the way
(the autoencoder's validation BCE 125 before its target 100). The levels are read off the
evaluations of the selected settings: per run the first evaluation at or past the level (its
update, training seconds and gradient-equivalents), then the median over the setting's seeds
with a miss counted as infinite, as for the target (docs/report.md). Where the median is a miss
the row says how far the runs got instead: the median best value and the median updates run.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..levels import Level
from .aggregate import median_with_misses
from .document import Table
from .tables import number


def reach(level: Level, evals: pd.DataFrame) -> dict[str, float]:
    """One run's evaluations -> its update, training seconds and gradient-equivalents at the
    first finite value at or past ``level`` (inf when none is), its best finite value and the
    updates it ran."""
    evals = evals.sort_values("step")
    values = pd.to_numeric(evals[f"{level.split}_{level.metric}"], errors="coerce")
    values = values.to_numpy(dtype=float)
    met = np.flatnonzero(level.met(values) & np.isfinite(values))
    finite = values[np.isfinite(values)]
    best = math.nan
    if finite.size:
        best = float(finite.max() if level.metric == "accuracy" else finite.min())
    row = {"best": best, "updates_run": float(evals["step"].max())}
    for column, name in (
        ("step", "updates"),
        ("train_seconds", "seconds"),
        ("gradient_equivalents", "gradient_equivalents"),
    ):
        at = evals[column].to_numpy(dtype=float)
        row[name] = float(at[met[0]]) if met.size else math.inf
    return row


def level_table(
    evaluations: pd.DataFrame, summary: pd.DataFrame, levels: list[Level]
) -> pd.DataFrame:
    """One row per (level, leaderboard row): medians over the selected setting's seeds."""
    rows = []
    for level in levels:
        chosen = summary[summary["problem"] == level.problem]
        for entry in chosen.itertuples(index=False):
            mine = evaluations[
                (evaluations["problem"] == entry.problem)
                & (evaluations["budget"] == entry.budget)
                & (evaluations["optimizer"] == entry.optimizer)
                & (evaluations["setting"] == entry.setting)
            ]
            runs = [reach(level, group) for _, group in mine.groupby("run_id", sort=True)]
            if not runs:
                continue
            frame = pd.DataFrame(runs)
            row = {
                "problem": entry.problem,
                "budget": entry.budget,
                "optimizer": entry.optimizer,
                "level": level.label,
                "n_runs": len(frame),
                "n_reached": int(np.isfinite(frame["updates"]).sum()),
                "best_median": float(frame["best"].median()),
                "updates_run_median": float(frame["updates_run"].median()),
            }
            for name in ("updates", "seconds", "gradient_equivalents"):
                row[f"{name}_to_level"] = median_with_misses(frame[name].tolist())
            rows.append(row)
    return pd.DataFrame(rows)


def table_block(table: pd.DataFrame) -> Table:
    """The levels as the page shows them: a median, or how far the runs got."""
    headers = ["problem", "budget", "optimizer", "level", "updates", "seconds", "grad-eq"]
    rows = []
    for r in table.itertuples(index=False):
        reached = f"({r.n_reached}/{r.n_runs})"
        if math.isfinite(r.updates_to_level):
            cells = [
                f"{number(r.updates_to_level)} {reached}",
                number(r.seconds_to_level),
                number(r.gradient_equivalents_to_level),
            ]
        else:
            stalled = (
                f"not reached {reached}: best {number(r.best_median)} "
                f"after {number(r.updates_run_median)} updates"
            )
            cells = [stalled, "∞", "∞"]
        rows.append([r.problem, r.budget, r.optimizer, r.level, *cells])
    caption = (
        "per level: the first evaluation at or past it, median over the selected setting's "
        "seeds (a miss counts as infinite); where the median is a miss, the median best value "
        "and updates run"
    )
    return Table(headers, rows, caption)
