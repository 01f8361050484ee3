"""Aggregation over seeds: per setting, the validation-selected setting, overhead, curvature sweep.

Rules (docs/report.md says why):

- final metric: test accuracy on accuracy problems, else test loss; mean and POPULATION std
  (ddof=0, as DeepOBS's analyzer and its published baselines) over the setting's finished runs,
  with their number n. Diverged runs are counted apart, not averaged in.
- to-target quantities: median over every run of the setting, diverged ones included; a run that
  never reached the target counts as +inf (AlgoPerf: "runs that do not reach the target
  performance have an infinite time"), so the median is finite only when more than half reached
  it. Runs without a recorded target are left out of these medians (NaN: no target, not a miss).
- budgets: runs compare only within one budget (the ``budget`` label: "40 steps", "3 epochs",
  ...); every grouping below includes it, so a setting is never selected against another
  budget's and Adam's step cost is Adam's under the same budget.
- selection: for each problem, budget and optimizer, the setting with the best mean of the final
  VALIDATION metric (max accuracy / min loss) over the seeds every one of its settings ran (the
  tuning seed, when a tuner reran only its choice with more seeds: a one-seed setting is never
  weighed against another's three-seed mean); over all seeds when they share none. Under a
  budget that stops at the target (a time-to-target study) the final metric is the target's
  level for every run that got there, so the rule is the tuner's: fewest updates to the target
  (mean over the shared seeds; any miss ranks after every setting without one), then the final
  validation metric. A diverged run scores the worst value (-inf accuracy / +inf loss), so a
  setting with any diverged seed ranks below every setting without one. Ties: fewer diverged
  runs, then the setting string. Test metrics are never used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .load import format_value

TO_TARGET = ("steps", "epochs", "seconds", "gradient_equivalents")
"""The ``<name>_to_target`` columns of the runs frame."""

COMPARED = ["problem", "budget", "optimizer"]
"""A leaderboard row: one selected setting per problem, budget and optimizer."""

CURVATURE_OPTIMIZERS = ("bdhf", "hf")
REFERENCE_OPTIMIZER = "adam"


def higher_is_better(kind: str) -> bool:
    """Accuracy is maximised, a loss minimised."""
    return kind == "accuracy"


def median_with_misses(values: Sequence[float]) -> float:
    """Median where +inf stands for a miss; NaN (no target) values are left out."""
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    return float(np.median(array)) if array.size else math.nan


def population_std(values: Sequence[float]) -> float:
    """Standard deviation with ddof=0; NaN for no values."""
    array = np.asarray(values, dtype=float)
    return float(np.std(array)) if array.size else math.nan


def _selection_scores(runs: pd.DataFrame) -> pd.Series:
    """Per run: the final validation metric, or the worst value for a diverged/undefined run."""
    better_high = runs["metric_kind"].map(higher_is_better)
    worst = better_high.map({True: -math.inf, False: math.inf})
    valid = pd.to_numeric(runs["final_valid_metric"], errors="coerce")
    bad = (runs["status"] != "finished") | valid.isna()
    return valid.where(~bad, worst).astype(float)


def _threads_text(value: object) -> str:
    number = pd.to_numeric(value, errors="coerce")
    return "" if pd.isna(number) else str(int(number))


def _shared_seeds(runs: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per run: whether its seed was run by every setting of its problem, budget and optimizer
    (all True where the settings share no seed, so each is scored on all of its own)."""
    shared = pd.Series(True, index=runs.index)
    for _, group in runs.groupby(COMPARED, sort=False):
        seeds = [set(g["seed"]) for _, g in group.groupby(keys, sort=False)]
        common = set.intersection(*seeds)
        if common:
            shared[group.index] = group["seed"].isin(common)
    return shared


_FIRST = (
    "metric_kind",
    "batch_size",
    "num_epochs",
    "hyperparameters",
    "curvature_fraction",
    "curvature_batch_size",
)
"""Columns every run of a setting shares: the setting's row takes the first run's."""


def _first_recorded(values: np.ndarray) -> object:
    """The first value that is not missing (None or NaN), else None."""
    return next((v for v in values if not pd.isna(v)), None)


def _joined_values(values: Iterable[object]) -> str:
    """The distinct non-empty values, sorted and comma-joined ("" when none is recorded)."""
    return ",".join(sorted({str(v) for v in values if not pd.isna(v) and str(v)}))


def _setting_row(columns: dict[str, np.ndarray], rows: np.ndarray, scored: np.ndarray) -> dict:
    """One setting's aggregates from its runs' ``rows`` of the runs frame's ``columns`` (numpy
    arrays, read once for every setting: a 30,000-run folder has thousands of settings)."""

    def col(name: str) -> np.ndarray:
        return columns[name][rows]

    status = col("status")
    finished = status == "finished"
    final = col("final_metric")[finished].astype(float)
    seeds = col("seed")
    steps = col("steps_to_target").astype(float)
    has_target = ~pd.isna(col("target_value"))
    chosen_steps = steps[scored]
    best_valid = col("best_valid_metric")[finished].astype(float)
    row: dict[str, object] = {name: col(name)[0] for name in _FIRST}
    row.update(
        {
            "n_runs": len(rows),
            "n_finished": int(finished.sum()),
            "n_diverged": int((status == "diverged").sum()),
            "seeds": ",".join(str(s) for s in sorted(seeds)),
            "selection_score": float(np.mean(columns["selection_score"][rows][scored])),
            "stop_at_target": bool(col("stop_at_target").all()),
            "selection_steps": float(chosen_steps.mean())
            if np.isfinite(chosen_steps).all()
            else math.inf,
            "selection_seeds": ",".join(str(s) for s in sorted(seeds[scored])),
            "final_mean": float(np.mean(final)) if final.size else math.nan,
            "final_std": population_std(final),
            "final_n": int(final.size),
            "best_valid_mean": float(np.mean(best_valid)) if finished.any() else math.nan,
            "target_metric": _first_recorded(col("target_metric")),
            "target_split": _first_recorded(col("target_split")),
            "target_value": _first_recorded(col("target_value")),
            "target_source": _first_recorded(col("target_source")),
            "n_with_target": int(has_target.sum()),
            "n_reached": int(np.isfinite(steps).sum()),
            "seconds_per_epoch": median_with_misses(col("seconds_per_epoch").astype(float)),
            "seconds_per_step": median_with_misses(col("seconds_per_step").astype(float)),
            "data_source": ",".join(sorted(set(col("data_source").astype(str)))),
            "device_name": _joined_values(col("device_name")),
            "cpu": _joined_values(col("cpu")),
            "threads": _joined_values(_threads_text(v) for v in col("threads")),
            "runs_at_once": _joined_values(_threads_text(v) for v in col("runs_at_once")),
            "kind": ",".join(sorted(set(col("kind").astype(str)))),
        }
    )
    for name in TO_TARGET:
        row[f"{name}_to_target"] = median_with_misses(col(f"{name}_to_target").astype(float))
    return row


def setting_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (problem, budget, optimizer, setting), ranked within (problem, budget,
    optimizer)."""
    keys = ["problem", "budget", "optimizer", "setting"]
    if runs.empty:
        return pd.DataFrame(columns=[*keys, "rank", "selected"])
    scored = _shared_seeds(runs, keys).to_numpy()
    columns = {name: runs[name].to_numpy() for name in runs.columns}
    columns["selection_score"] = _selection_scores(runs).to_numpy()
    groups = runs.groupby(keys, sort=True).indices
    rows = []
    for values in sorted(groups):
        at = groups[values]
        rows.append({**dict(zip(keys, values)), **_setting_row(columns, at, scored[at])})
    table = pd.DataFrame.from_records(rows)
    table["varied"] = varied_labels(table)
    return rank_settings(table, COMPARED)


def varied_labels(table: pd.DataFrame) -> pd.Series:
    """Per setting, only what differs from the other settings of its problem, budget and
    optimizer (e.g. ``lr=0.01``): the full key is long; "–" when the optimizer ran one setting."""
    values = [
        {**json.loads(row.hyperparameters), "batch_size": row.batch_size}
        for row in table.itertuples(index=False)
    ]
    labels = pd.Series("–", index=table.index, dtype=object)
    for _, group in table.groupby(COMPARED, sort=False):
        members = [values[table.index.get_loc(i)] for i in group.index]
        names = sorted({k for m in members for k in m})
        varied = [
            k for k in names if len({json.dumps(m.get(k), sort_keys=True) for m in members}) > 1
        ]
        for i, member in zip(group.index, members):
            if varied:
                labels[i] = ", ".join(f"{k}={format_value(member.get(k))}" for k in varied)
    return labels


def rank_settings(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rank settings within ``by`` on the validation selection score; rank 1 is selected."""
    ordered = []
    for _, group in table.groupby(by, sort=True):
        sign = -1.0 if higher_is_better(group["metric_kind"].iloc[0]) else 1.0
        group = group.assign(_key=sign * group["selection_score"].astype(float))
        order = ["_key", "n_diverged", "setting"]
        if "stop_at_target" in group and group["stop_at_target"].all():
            order.insert(0, "selection_steps")  # the tuner's rule in a time-to-target study
        group = group.sort_values(order, kind="mergesort")
        group = group.drop(columns="_key")
        group["rank"] = range(1, len(group) + 1)
        ordered.append(group)
    out = pd.concat(ordered, ignore_index=True)
    out["selected"] = out["rank"] == 1
    return out


def summary_table(settings: pd.DataFrame) -> pd.DataFrame:
    """The selected setting of each (problem, budget, optimizer), with per-step overhead against
    Adam's selected setting under the same problem and budget, and the ``workload`` a profile
    counts: the problem, or "problem (budget)" where the problem ran under several budgets."""
    if settings.empty:
        return settings.assign(n_settings=[], overhead_vs_adam=[], workload=[])
    counts = settings.groupby(COMPARED).size().rename("n_settings")
    chosen = settings[settings["selected"]].join(counts, on=COMPARED)
    is_adam = chosen["optimizer"].str.lower() == REFERENCE_OPTIMIZER
    adam = chosen[is_adam].set_index(["problem", "budget"])["seconds_per_step"]
    pairs = pd.MultiIndex.from_frame(chosen[["problem", "budget"]])
    reference = adam.reindex(pairs).to_numpy(dtype=float)
    chosen = chosen.assign(overhead_vs_adam=chosen["seconds_per_step"].astype(float) / reference)
    budgets = settings.groupby("problem")["budget"].nunique()
    mixed = chosen["problem"].map(budgets) > 1
    labels = chosen["problem"].astype(str) + " (" + chosen["budget"].astype(str) + ")"
    chosen = chosen.assign(workload=labels.where(mixed, chosen["problem"].astype(str)))
    return chosen.sort_values(COMPARED, kind="mergesort").reset_index(drop=True)


def mixed_budgets(settings: pd.DataFrame) -> dict[str, list[str]]:
    """Problems that ran under more than one budget, with their budgets (for the page's note)."""
    if settings.empty:
        return {}
    budgets = settings.groupby("problem")["budget"].unique()
    return {str(p): sorted(str(b) for b in v) for p, v in budgets.items() if len(v) > 1}


def curvature_table(settings: pd.DataFrame) -> pd.DataFrame:
    """BDHF and HF per curvature batch size: the validation-selected setting at each fraction.

    Only problems where bdhf or hf (either) ran at two or more curvature fractions are kept.
    """
    mask = settings["optimizer"].str.lower().isin(CURVATURE_OPTIMIZERS) if len(settings) else []
    table = settings[mask] if len(settings) else settings
    if len(table):
        table = table[pd.to_numeric(table["curvature_fraction"], errors="coerce").notna()]
    if table.empty:
        return pd.DataFrame(columns=[*settings.columns, "n_settings"])
    table = table.drop(columns=["rank", "selected"])
    by = [*COMPARED, "curvature_fraction"]
    ranked = rank_settings(table, by)
    counts = ranked.groupby(by).size()
    chosen = ranked[ranked["selected"]].join(counts.rename("n_settings"), on=by)
    fractions = chosen.groupby(COMPARED)["curvature_fraction"].nunique()
    most = fractions.groupby(level=["problem", "budget"]).max()
    keep = set(most[most >= 2].index)
    chosen = chosen[[pair in keep for pair in zip(chosen["problem"], chosen["budget"])]]
    return chosen.sort_values(by, kind="mergesort").reset_index(drop=True)
