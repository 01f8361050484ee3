"""AlgoPerf's two tracks side by side: each optimizer tuned per problem, and at its defaults.

The self-tuning track (AlgoPerf's rule) runs every optimizer at its defaults on every problem,
with no per-problem tuning, for 1.5x the tuned track's budget, to the same targets. A folder of
such runs reported with the tuned folder beside it (``--tuned``) gets one table: per problem and
optimizer, the updates and gradient-equivalents to the target of the tuned setting and of the
defaults, how many seeds reached it, and the defaults' updates over the tuned setting's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .document import Table
from .tables import number, to_target

TRACK_KEYS = ["problem", "optimizer"]


def track_table(untuned: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """One row per (problem, optimizer) in either summary (``summary_table``'s rows, one budget
    per problem in each), the two tracks' figures side by side."""
    columns = [
        "steps_to_target",
        "gradient_equivalents_to_target",
        "n_reached",
        "n_with_target",
        "final_mean",
    ]
    left = untuned.set_index(TRACK_KEYS)[columns].add_prefix("untuned_")
    right = tuned.set_index(TRACK_KEYS)[columns].add_prefix("tuned_")
    table = left.join(right, how="outer").reset_index()
    ratio = table["untuned_steps_to_target"].astype(float) / table["tuned_steps_to_target"].astype(
        float
    )
    tuned = table["tuned_steps_to_target"].astype(float)
    # a ratio only where the tuned setting got there (a tuned miss has nothing to divide by)
    table["updates_ratio"] = ratio.where((tuned > 0) & np.isfinite(tuned))
    return table.sort_values(TRACK_KEYS, kind="mergesort").reset_index(drop=True)


def _ratio(value: float) -> str:
    if math.isnan(value):
        return "–"
    return "∞" if math.isinf(value) else f"{value:.2f}×"


def track_block(table: pd.DataFrame) -> Table:
    """The table as a report block."""
    headers = [
        "problem",
        "optimizer",
        "tuned: updates→target",
        "untuned: updates→target",
        "untuned ÷ tuned",
        "tuned: grad-eq→target",
        "untuned: grad-eq→target",
    ]
    rows = [
        [
            str(r.problem),
            str(r.optimizer),
            to_target(r.tuned_steps_to_target, r.tuned_n_reached, r.tuned_n_with_target),
            to_target(r.untuned_steps_to_target, r.untuned_n_reached, r.untuned_n_with_target),
            _ratio(float(r.updates_ratio)),
            number(r.tuned_gradient_equivalents_to_target),
            number(r.untuned_gradient_equivalents_to_target),
        ]
        for r in table.itertuples(index=False)
    ]
    caption = (
        "medians over seeds, a miss counts as ∞ (reached/seeds in brackets); tuned: the "
        "validation-selected setting of the tuned folder; untuned: the optimizer's defaults"
    )
    return Table(headers, rows, caption)
