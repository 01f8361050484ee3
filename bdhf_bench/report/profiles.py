"""AlgoPerf-style performance profiles over problems (Dolan & Moré 2002; AlgoPerf's scoring).

t[o, p]: optimizer o's median time-to-target on problem p (its validation-selected setting;
+inf when missed, see aggregate.py). r[o, p] = t[o, p] / min_o' t[o', p]: 1 for the fastest, +inf
for a miss; on a problem that every optimizer missed, every ratio is +inf. An optimizer with no
run on a problem that others have a target on gets +inf there. rho_o(tau) = (number of problems
with r[o, p] <= tau) / (number of problems). The curve runs from tau = 1 to the largest finite
ratio (at least 4), on a log axis, so an optimizer 5 to 20 times slower than the best still
shows a line instead of a flat zero. The score stays AlgoPerf's, capped at r_max = 4: the
normalised integral (1 / (4 - 1)) * integral_1^4 rho_o(tau) dtau, computed exactly for the step
function: mean over problems of max(0, 4 - r[o, p]) / 3.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

MAX_TAU = 4.0
PROFILE_TIMES = {
    "updates": "steps_to_target",
    "seconds": "seconds_to_target",
    "gradient_equivalents": "gradient_equivalents_to_target",
}
"""Profile name -> the summary column it is built from."""


def time_matrix(summary: pd.DataFrame, column: str) -> pd.DataFrame:
    """Workloads x optimizers of ``column``; workloads and optimizers without any target dropped.

    A workload is a problem, or "problem (budget)" where a problem ran under several budgets
    (the summary's ``workload`` column): budgets are never compared with each other."""
    scored = summary[summary["n_with_target"] > 0] if len(summary) else summary
    if scored.empty:
        return pd.DataFrame(dtype=float)
    index = "workload" if "workload" in scored.columns else "problem"
    matrix = scored.pivot(index=index, columns="optimizer", values=column).astype(float)
    matrix.index.name = "problem"
    return matrix.fillna(math.inf).sort_index().sort_index(axis=1)


def solved_any(ratios: pd.DataFrame) -> bool:
    """Whether any optimizer reached the target on any workload (else a profile is empty)."""
    return bool(np.isfinite(ratios.to_numpy(dtype=float)).any())


def performance_ratios(times: pd.DataFrame) -> pd.DataFrame:
    """r = t / (the problem's best t); +inf for misses and on problems nobody solved."""
    ratios = times.copy().astype(float)
    for problem, row in times.iterrows():
        best = row.min()
        if not math.isfinite(best):
            ratios.loc[problem] = math.inf
        elif best == 0.0:  # reached at the first evaluation: the fastest tie at 1
            ratios.loc[problem] = np.where(row == 0.0, 1.0, math.inf)
        else:
            ratios.loc[problem] = row / best
    return ratios


def default_taus(points: int = 301, largest: float = MAX_TAU) -> np.ndarray:
    """tau from 1 to ``largest`` (at least :data:`MAX_TAU`), evenly spaced in log tau."""
    top = max(MAX_TAU, float(largest))
    return np.geomspace(1.0, top, points)


def largest_ratio(ratios: pd.DataFrame) -> float:
    """The largest finite ratio (1 when there is none)."""
    values = ratios.to_numpy(dtype=float).ravel()
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else 1.0


def profile_taus(ratios: pd.DataFrame, points: int = 301) -> np.ndarray:
    """The log-spaced grid out to 5% past the largest finite ratio, plus every ratio, so each
    drawn step falls where it is."""
    top = max(MAX_TAU, 1.05 * largest_ratio(ratios))
    values = ratios.to_numpy(dtype=float).ravel()
    inside = values[(values >= 1.0) & (values <= top)]
    return np.union1d(default_taus(points, top), inside)


def performance_profile(ratios: pd.DataFrame, taus: np.ndarray | None = None) -> pd.DataFrame:
    """Optimizers x tau: the fraction of problems solved within tau of the best."""
    taus = default_taus() if taus is None else np.asarray(taus, dtype=float)
    n = len(ratios.index)
    data = {
        optimizer: [float((ratios[optimizer] <= tau).sum()) / n for tau in taus]
        for optimizer in ratios.columns
    }
    return pd.DataFrame.from_dict(data, orient="index", columns=list(taus))


def profile_scores(ratios: pd.DataFrame) -> pd.Series:
    """AlgoPerf's benchmark score in [0, 1], exact for the step-function profile."""
    credit = (MAX_TAU - ratios.clip(lower=1.0)).clip(lower=0.0) / (MAX_TAU - 1.0)
    return credit.mean(axis=0).rename("score")
