"""Aggregated frames -> formatted :class:`Table` objects (what the reader sees, not the CSVs)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .document import Table

DASH = "–"
INF = "∞"


def number(value: Any, digits: int = 4) -> str:
    """Compact number; a dash for missing, ∞ for infinite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DASH
    if math.isnan(value):
        return DASH
    if math.isinf(value):
        return INF if value > 0 else f"-{INF}"
    return f"{value:.{digits}g}"


def mean_std(mean: Any, std: Any, n: Any) -> str:
    """'mean ± std (n=k)'; the std is the population std over the n finished seeds."""
    if not n:
        return f"{DASH} (n=0)"
    return f"{number(mean)} ± {number(std, 2)} (n={int(n)})"


def to_target(value: Any, reached: Any, total: Any) -> str:
    """Median with the share of seeds that reached the target; a dash when there is no target
    (or no count at all: NaN where a table joined rows that lack it)."""
    if not total or pd.isna(total):
        return DASH
    return f"{number(value)} ({int(reached)}/{int(total)})"


def _target(row: Any) -> str:
    value = row.target_value
    if row.target_metric is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    relation = "≥" if row.target_metric == "accuracy" else "≤"
    return f"{row.target_split} {row.target_metric} {relation} {number(value)}"


UNKNOWN = "unknown"


def machine(row: Any) -> str:
    """Where a row's seconds were measured: device, CPU model, torch threads, and the runs that
    shared the machine when more than one ("unknown" where the result files did not record it,
    as files before threads were recorded)."""
    device = getattr(row, "device_name", "") or UNKNOWN
    cpu = getattr(row, "cpu", "") or UNKNOWN
    threads = getattr(row, "threads", "") or UNKNOWN
    shared = getattr(row, "runs_at_once", "") or ""
    together = "" if shared in ("", "1") else f", {shared} runs at once"
    if device == cpu != UNKNOWN:  # a CPU run names its CPU as the device
        return f"CPU {cpu}, threads {threads}{together}"
    return f"device {device}, CPU {cpu}, threads {threads}{together}"


def machines(summary: pd.DataFrame) -> str:
    """One machine for all rows, or "optimizer: machine; ..." when they differ."""
    pairs = sorted({(str(r.optimizer), machine(r)) for r in summary.itertuples(index=False)})
    distinct = sorted({label for _, label in pairs})
    if len(distinct) <= 1:
        return distinct[0] if distinct else UNKNOWN
    return "; ".join(f"{name}: {label}" for name, label in pairs)


def leaderboard(summary: pd.DataFrame) -> Table:
    """The main table: what a reader compares, one row per problem, budget and optimizer."""
    headers = [
        "problem",
        "budget",
        "optimizer",
        "final test metric",
        "updates→target",
        "seconds→target",
        "grad-eq→target",
        "step cost ÷ Adam",
    ]
    rows = [
        [
            r.problem,
            r.budget,
            r.optimizer,
            f"{r.metric_kind}: {mean_std(r.final_mean, r.final_std, r.final_n)}",
            *(
                to_target(getattr(r, f"{name}_to_target"), r.n_reached, r.n_with_target)
                for name in ("steps", "seconds", "gradient_equivalents")
            ),
            number(r.overhead_vs_adam, 3),
        ]
        for r in summary.itertuples(index=False)
    ]
    caption = (
        "final test metric: mean ± population std over finished seeds; →target: median over "
        "all seeds, a miss counts as ∞ (reached/seeds in brackets); step cost: median seconds "
        f"per update over Adam's; seconds measured on {machines(summary)}"
    )
    return Table(headers, rows, caption)


def details(summary: pd.DataFrame) -> Table:
    """The rest of each leaderboard row (also in tables/summary.csv)."""
    headers = [
        "problem",
        "budget",
        "optimizer",
        "target",
        "best valid (mean)",
        "runs: finished / diverged",
        "epochs→target",
        "s / update",
        "s / epoch",
        "measured on",
        "data",
        "settings",
    ]
    rows = [
        [
            r.problem,
            r.budget,
            r.optimizer,
            _target(r),
            number(r.best_valid_mean),
            f"{r.n_finished} / {r.n_diverged}",
            to_target(r.epochs_to_target, r.n_reached, r.n_with_target),
            number(r.seconds_per_step),
            number(r.seconds_per_epoch),
            machine(r),
            r.data_source,
            str(r.n_settings),
        ]
        for r in summary.itertuples(index=False)
    ]
    return Table(headers, rows, "per leaderboard row: the target, validation, runs and speed")


def selected_settings(summary: pd.DataFrame) -> Table:
    """Which setting each row of the leaderboard is, and its validation score."""
    rows = [
        [
            r.problem,
            r.budget,
            r.optimizer,
            r.setting,
            number(r.selection_score),
            r.selection_seeds,
            r.seeds,
            str(r.n_settings),
        ]
        for r in summary.itertuples(index=False)
    ]
    headers = [
        "problem",
        "budget",
        "optimizer",
        "selected setting",
        "mean final valid",
        "on seeds",
        "seeds",
        "of",
    ]
    caption = (
        "selected on the final validation metric (never test), averaged over the seeds every "
        "setting of the row ran"
    )
    return Table(headers, rows, caption)


def settings(table: pd.DataFrame) -> Table:
    """Every setting of every problem and optimizer, in rank order (rank 1 is the one shown)."""
    headers = [
        "problem",
        "budget",
        "optimizer",
        "rank",
        "what varies",
        "mean final valid",
        "on seeds",
        "final test",
        "finished / diverged",
        "seconds→target",
        "measured on",
    ]
    rows = [
        [
            r.problem,
            r.budget,
            r.optimizer,
            str(r.rank),
            r.varied,
            number(r.selection_score),
            r.selection_seeds,
            mean_std(r.final_mean, r.final_std, r.final_n),
            f"{r.n_finished} / {r.n_diverged}",
            to_target(r.seconds_to_target, r.n_reached, r.n_with_target),
            machine(r),
        ]
        for r in table.itertuples(index=False)
    ]
    caption = (
        "what varies between the settings of each optimizer (full keys in tables/settings.csv); "
        "a diverged seed scores the worst validation value, so its setting ranks last"
    )
    return Table(headers, rows, caption)


def curvature(table: pd.DataFrame) -> Table:
    """BDHF vs HF per curvature batch size."""
    headers = [
        "problem",
        "budget",
        "optimizer",
        "fraction",
        "curvature batch",
        "final test",
        "grad-eq→target",
        "steps→target",
        "diverged",
    ]
    rows = [
        [
            r.problem,
            r.budget,
            r.optimizer,
            number(r.curvature_fraction),
            number(r.curvature_batch_size),
            mean_std(r.final_mean, r.final_std, r.final_n),
            to_target(r.gradient_equivalents_to_target, r.n_reached, r.n_with_target),
            to_target(r.steps_to_target, r.n_reached, r.n_with_target),
            str(r.n_diverged),
        ]
        for r in table.itertuples(index=False)
    ]
    return Table(headers, rows, "the validation-selected setting at each curvature fraction")


def baselines(frame: pd.DataFrame, label: str) -> Table:
    """The DeepOBS rows for the problems we ran, under their label."""
    headers = [
        "problem",
        "optimizer (TF)",
        "lr",
        "final test (mean ± pop. std, n)",
        "speed (epochs)",
        "conv_perf",
        "epochs",
        "batch",
    ]
    rows = [
        [
            r.testproblem,
            f"{r.optimizer} ({r.ours})",
            number(r.lr),
            f"{r.metric_kind}: {mean_std(r.final_mean, r.final_std_pop, r.n_seeds)}",
            number(r.speed_epochs),
            number(r.conv_perf),
            number(r.num_epochs),
            number(r.batch_size),
        ]
        for r in frame.itertuples(index=False)
    ]
    return Table(headers, rows, label)


def scores(ratios: pd.DataFrame, score: pd.Series, time_name: str, note: str = "") -> Table:
    """Per optimizer: the profile score and its ratio on each problem (``note`` ends the
    caption: where the seconds were measured)."""
    problems = list(ratios.index)
    headers = ["optimizer", "score", *problems]
    rows = [
        [str(opt), number(score[opt], 3), *(number(ratios.at[p, opt], 3) for p in problems)]
        for opt in ratios.columns
    ]
    caption = f"{time_name}: ratio to the best optimizer per problem (∞ = miss)"
    return Table(headers, rows, f"{caption}; {note}" if note else caption)


def skipped(files: list[Any], reduced: bool = False) -> Table:
    """Files not used (or, with ``reduced``, read in reduced form) and why."""
    return Table(["file", "note" if reduced else "reason"], [[f.path, f.reason] for f in files])
