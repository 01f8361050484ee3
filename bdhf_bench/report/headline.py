"""The headline: per problem and budget, in sentences computed from the numbers.

Every statement is derived from the aggregates, so it cannot say more than they show: no winner
is named in a unit where nobody reached the target, a tie is called a tie, and a difference is
said to exceed the seeds' spread only when every seed of the leader beat every seed of the
runner-up (the seeds' ranges do not overlap; a missed seed counts as +infinity, as in the
medians). With one seed on either side the spread is unknown and the headline says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .aggregate import higher_is_better

UNITS = (
    ("steps", "updates", "Fewest updates to target"),
    ("seconds", "s", "Fewest training seconds to target"),
    ("gradient_equivalents", "grad-eq", "Fewest gradient-equivalents to target"),
)
"""(summary/runs column prefix, unit written after a value, the unit's sentence opener)."""


def fmt(value: float, unit: str = "") -> str:
    """Three significant digits (integers as they are), then the unit."""
    if math.isnan(value):
        return "unknown"
    if not math.isfinite(value):
        return "∞"
    text = f"{value:.0f}" if float(value).is_integer() and abs(value) < 1e6 else f"{value:.3g}"
    if unit == "updates" and text == "1":
        unit = "update"
    return f"{text} {unit}".rstrip()


@dataclass
class Contender:
    """One optimizer's selected setting on one problem and budget."""

    optimizer: str
    medians: dict[str, float]
    seeds: dict[str, np.ndarray]
    """Per unit, every seed's value (+inf for a miss; only runs with a recorded target)."""
    n_reached: int
    n_with_target: int
    best_on_target: float
    updates_run: float
    final_mean: float
    final_std: float
    final_n: int
    final_seeds: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _names(names: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _range(values: np.ndarray, unit: str) -> str:
    low, high = float(np.min(values)), float(np.max(values))
    if low == high:
        return fmt(low, unit)
    return f"{fmt(low)}–{fmt(high)} {unit}".rstrip()


def spread(leaders: Sequence[np.ndarray], runner: np.ndarray, higher_better: bool = False) -> str:
    """ "clear" when every seed of the leaders beat every seed of the runner-up (a miss counts
    as +inf), "one seed" when either side has fewer than two, else "seeds overlap"."""
    if min(len(s) for s in [*leaders, runner]) < 2:
        return "one seed"
    sign = -1.0 if higher_better else 1.0
    lead_worst = float(np.max(sign * np.concatenate(list(leaders))))
    return "clear" if lead_worst < float(np.min(sign * runner)) else "seeds overlap"


def compare(
    contenders: Sequence[Contender],
    value: dict[str, float],
    seeds: dict[str, np.ndarray],
    unit: str,
    higher_better: bool = False,
    ratio: bool = True,
) -> str:
    """Who leads on ``value`` (name -> median or mean) and whether the lead exceeds the spread.

    Non-finite values are misses (never leaders); the lead is "clear" when the leaders' worst
    seed beats the runner-up's best seed."""
    sign = -1.0 if higher_better else 1.0
    names = [c.optimizer for c in contenders]
    finite = [n for n in names if math.isfinite(value[n])]
    if not finite:
        return "no optimizer got there, so there is no winner."
    best = min(sign * value[n] for n in finite)
    leaders = [n for n in finite if sign * value[n] == best]
    others = sorted((n for n in names if n not in leaders), key=lambda n: sign * value[n])
    lead = _names(leaders)
    shown = fmt(value[leaders[0]], unit)
    text = f"{lead} tie at {shown}" if len(leaders) > 1 else f"{lead}, {shown}"
    if not others:
        return text + ("; nobody else ran." if len(names) == 1 else ".")
    runner = others[0]
    runner_value = value[runner]
    if math.isfinite(runner_value):
        text += f", against {runner}'s {fmt(runner_value, unit)}"
        if ratio and best != 0 and not higher_better:
            text += f" ({runner_value / value[leaders[0]]:.2g}×)"
    else:
        text += f"; {runner} did not get there"
    lead_seeds = np.concatenate([seeds[n] for n in leaders])
    runner_seeds = seeds[runner]
    verdict = spread([seeds[n] for n in leaders], runner_seeds, higher_better)
    if verdict == "one seed":
        return text + "; one seed only, so the seeds' spread is unknown."
    spans = f"{lead} {_range(lead_seeds, unit)}, {runner} {_range(runner_seeds, unit)}"
    if verdict == "clear":
        return text + f"; this exceeds the seeds' spread (seeds: {spans})."
    return text + f"; within the seeds' spread, the seeds overlap ({spans})."


def _median(values: pd.Series) -> float:
    """Median of the recorded values (NaN, e.g. a DeepOBS-only file's steps, left out)."""
    array = values.to_numpy(dtype=float)
    array = array[~np.isnan(array)]
    return float(np.median(array)) if array.size else math.nan


def _target_text(row: pd.Series) -> str:
    relation = "≥" if row["target_metric"] == "accuracy" else "≤"
    return f"{row['target_split']} {row['target_metric']} {relation} {fmt(row['target_value'])}"


def contenders(summary: pd.DataFrame, runs: pd.DataFrame) -> list[Contender]:
    """The summary rows of one problem and budget, each with its seeds' values."""
    out = []
    for row in summary.itertuples(index=False):
        mine = runs[
            (runs["problem"] == row.problem)
            & (runs["budget"] == row.budget)
            & (runs["optimizer"] == row.optimizer)
            & (runs["setting"] == row.setting)
        ]
        targeted = mine[mine["target_value"].notna()]
        finished = mine[mine["status"] == "finished"]
        out.append(
            Contender(
                optimizer=str(row.optimizer),
                medians={u: float(getattr(row, f"{u}_to_target")) for u, _, _ in UNITS},
                seeds={u: targeted[f"{u}_to_target"].to_numpy(dtype=float) for u, _, _ in UNITS},
                n_reached=int(row.n_reached),
                n_with_target=int(row.n_with_target),
                best_on_target=_median(targeted["best_target_metric"]),
                updates_run=_median(mine["steps"]),
                final_mean=float(row.final_mean),
                final_std=float(row.final_std),
                final_n=int(row.final_n),
                final_seeds=finished["final_metric"].to_numpy(dtype=float),
            )
        )
    return out


def _optimizer_line(c: Contender, kind: str, target: pd.Series | None) -> str:
    final = (
        f"final test {kind} {fmt(c.final_mean)} ± {fmt(c.final_std)}"
        if c.final_n
        else "no finished seed"
    )
    if target is None or not c.n_with_target:
        return f"{c.optimizer}: {final}."
    reached = f"{c.n_reached}/{c.n_with_target} seeds reached"
    if math.isfinite(c.medians["steps"]):
        times = ", ".join(fmt(c.medians[u], unit) for u, unit, _ in UNITS)
        return f"{c.optimizer}: {times} to target ({reached}); {final}."
    best = f"best {target['target_split']} {target['target_metric']} {fmt(c.best_on_target)}"
    return (
        f"{c.optimizer}: not reached: {best} after {fmt(c.updates_run, 'updates')} "
        f"(medians over seeds; {reached}); {final}."
    )


def headline(
    summary: pd.DataFrame, runs: pd.DataFrame, machine: str, resolution: float
) -> tuple[str, list[str]]:
    """(opening sentence, bullet lines) for one problem and budget's summary rows.

    ``machine`` names where the seconds were measured; ``resolution`` is the updates between
    evaluations (a time to target is only known at an evaluation)."""
    first = summary.iloc[0]
    kind = str(first["metric_kind"])
    targeted = summary[summary["target_value"].notna() & summary["n_with_target"].gt(0)]
    target = targeted.iloc[0] if len(targeted) else None
    pool = contenders(summary, runs)
    sources = sorted({part for v in summary["data_source"] for part in str(v).split(",")})
    opening = f"{first['problem']} ({'/'.join(sources)} data), budget {first['budget']}"
    if target is not None:
        opening += f", target {_target_text(target)}"
    opening += " (medians over seeds, a miss counts as infinite"
    if math.isfinite(resolution):
        opening += f"; the target is checked every {fmt(resolution, 'updates')}"
    opening += "):"
    lines = [_optimizer_line(c, kind, target) for c in pool]
    timed = [c for c in pool if c.n_with_target]
    if target is None:
        lines.append("No target recorded: no time to target.")
    elif not any(math.isfinite(c.medians["steps"]) for c in timed):
        tried = f"{len(timed)} optimizer{'s' if len(timed) != 1 else ''} tried"
        if any(c.n_reached for c in timed):
            lines.append(
                "No optimizer reached the target on more than half of its seeds (every median "
                f"is infinite): no winner in any unit ({tried})."
            )
        else:
            lines.append(
                f"No optimizer reached the target within the budget: no winner in any unit "
                f"({tried})."
            )
    else:
        for unit, short, opener in UNITS:
            medians = {c.optimizer: c.medians[unit] for c in timed}
            per_seed = {c.optimizer: c.seeds[unit] for c in timed}
            sentence = compare(timed, medians, per_seed, short)
            suffix = f" Seconds measured on {machine}." if unit == "seconds" else ""
            lines.append(f"{opener}: {sentence}{suffix}")
    finished = [c for c in pool if c.final_n]
    if len(finished) > 1:
        means = {c.optimizer: c.final_mean for c in finished}
        per_seed = {c.optimizer: c.final_seeds for c in finished}
        better = "Highest" if higher_is_better(kind) else "Lowest"
        sentence = compare(
            finished, means, per_seed, "", higher_better=higher_is_better(kind), ratio=False
        )
        lines.append(f"{better} final test {kind} (mean over seeds): {sentence}")
    return opening, lines
