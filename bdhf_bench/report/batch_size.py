"""Updates to a target against the gradient batch size, per optimizer, each point tuned.

The paper's case for second-order methods is that they need fewer updates at large batches: the
curve of "steps to result vs batch size" (Shallue et al. 2019; Zhang et al. 2019 for K-FAC) says
where that holds. Each (optimizer, batch size) point is its own tuning: the setting whose run on
the tuning seed (the seed every setting ran) reached the level in the fewest updates, as the
runner's ``stop_at_target`` selection does; the point is the median over that setting's seeds, a
miss counting as infinite (AlgoPerf). Levels are read from the evaluations, so any level of the
target's metric and split can be drawn, not only the target the runs stopped at.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..levels import Level
from .document import Table
from .figures import MISS_LABEL, _new_figure
from .level_times import reach
from .tables import number, to_target

RUN_KEYS = ["problem", "optimizer", "setting", "batch_size", "seed"]
COSTS = ("updates", "gradient_equivalents", "seconds")
"""The time-to-level columns (report/level_times.py's ``reach`` reads them off the evaluations)."""


def first_reach(evaluations: pd.DataFrame, metric: str, split: str, level: float) -> pd.DataFrame:
    """Per run: updates, gradient-equivalents and seconds at the first evaluation whose
    ``{split}_{metric}`` meets ``level`` (inf when none does), and the run's best value."""
    milestone = Level("", "train" if split == "train_eval" else split, metric, level)
    rows = [
        {**dict(zip(RUN_KEYS, key)), **reach(milestone, run)}
        for key, run in evaluations.groupby(RUN_KEYS, sort=True)
    ]
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "best", *COSTS])


def _tuning_seed(group: pd.DataFrame) -> int:
    """The seed the most settings ran (ties: the smallest): the one the search used."""
    counts = group.groupby("seed")["setting"].nunique()
    return int(counts[counts == counts.max()].index.min())


def batch_size_table(
    evaluations: pd.DataFrame, problem: str, metric: str, split: str, level: float
) -> pd.DataFrame:
    """One row per (optimizer, batch size): the selected setting, how many of its seeds reached
    ``level`` and the medians of updates, gradient-equivalents and seconds to it."""
    runs = first_reach(evaluations[evaluations["problem"] == problem], metric, split, level)
    rows = []
    for (optimizer, batch), group in runs.groupby(["optimizer", "batch_size"], sort=True):
        seed = _tuning_seed(group)
        tuned = group[group["seed"] == seed].sort_values(["updates", "setting"])
        setting = tuned["setting"].iloc[0]
        chosen = group[group["setting"] == setting]
        row = {
            "optimizer": optimizer,
            "batch_size": int(batch),
            "setting": setting,
            "n_seeds": len(chosen),
            "n_reached": int(np.isfinite(chosen["updates"]).sum()),
            "best": float(chosen["best"].median()),
        }
        for name in COSTS:
            row[name] = float(np.median(chosen[name].to_numpy()))
        rows.append(row)
    columns = ["optimizer", "batch_size", "setting", "n_seeds", "n_reached", "best", *COSTS]
    return pd.DataFrame(rows, columns=columns)


def batch_size_figure(
    table: pd.DataFrame,
    title: str,
    colors: dict[str, tuple[float, float, float]] | None = None,
) -> Figure:
    """Median updates to the level against batch size, log-log, one line per optimizer; a
    point whose median is a miss is an x on a dashed "miss" line above the finite ones.
    Returns the Figure (its lines carry the plotted numbers, labelled by optimizer)."""
    fig, axes = _new_figure(1, 1, 5.2, 3.8)
    ax = axes[0][0]
    finite = table["updates"][np.isfinite(table["updates"])]
    miss_level = 1.5 * float(finite.max()) if len(finite) else 1.0
    for optimizer, rows in table.groupby("optimizer", sort=True):
        color = (colors or {}).get(str(optimizer))
        rows = rows.sort_values("batch_size")
        hit = rows[np.isfinite(rows["updates"])]
        # NaN at a miss breaks the line there: no segment may join two finite points across a
        # batch size where the optimizer never got to the level (seaborn's lineplot would).
        (line,) = ax.plot(
            rows["batch_size"].to_numpy(dtype=float),
            rows["updates"].where(np.isfinite(rows["updates"])).to_numpy(dtype=float),
            marker="o",
            color=color,
            label=str(optimizer),
        )
        color = line.get_color() if len(hit) else color
        missed = rows[~np.isfinite(rows["updates"])]
        if len(missed):
            ax.plot(
                missed["batch_size"],
                [miss_level] * len(missed),
                "x",
                color=color,
                markersize=10,
                mew=2,
                label=f"{optimizer}: {MISS_LABEL}",
            )
        for r in rows.itertuples():
            y = r.updates if math.isfinite(r.updates) else miss_level
            ax.annotate(
                f"{r.n_reached}/{r.n_seeds}",
                (r.batch_size, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="x-small",
                color="0.3",
            )
    if not np.isfinite(table["updates"]).all():
        ax.axhline(miss_level, color="0.6", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted(int(b) for b in table["batch_size"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    # a log axis over less than a decade labels one power of ten at most: label 1-2-5 steps
    finite = table["updates"][np.isfinite(table["updates"])]
    if len(finite):
        low, high = float(finite.min()) / 1.25, float(finite.max()) * 1.25
        steps = [m * 10**e for e in range(8) for m in (1, 2, 5)]
        ax.set_yticks([v for v in steps if low <= v <= high] or [float(finite.min())])
        ax.yaxis.set_major_formatter(lambda value, _: f"{value:g}")
    ax.set_xlabel("gradient batch size (examples)")
    ax.set_ylabel("updates to the level (median over seeds)")
    ax.set_title(title + "\n(each point tuned; n reached / n seeds beside it)", fontsize="small")
    ax.legend(fontsize="small")
    return fig


MIN_BATCH_SIZES = 3
"""A curve needs at least this many batch sizes of one optimizer on a problem."""


def studied_problems(evaluations: pd.DataFrame) -> list[str]:
    """Problems where some optimizer ran at ``MIN_BATCH_SIZES`` or more batch sizes."""
    if evaluations.empty:
        return []
    sizes = evaluations.groupby(["problem", "optimizer"])["batch_size"].nunique()
    return sorted({str(p) for (p, _), n in sizes.items() if n >= MIN_BATCH_SIZES})


def table_block(table: pd.DataFrame, level_label: str) -> Table:
    """The table under the figure: each point's setting, seeds reached and medians."""
    headers = ["optimizer", "batch", "updates", "grad-eq", "seconds", "best valid", "setting"]
    rows = [
        [
            str(r.optimizer),
            str(r.batch_size),
            to_target(r.updates, r.n_reached, r.n_seeds),
            number(r.gradient_equivalents),
            number(r.seconds),
            number(r.best),
            str(r.setting).split(" | ")[0],
        ]
        for r in table.itertuples(index=False)
    ]
    return Table(headers, rows, f"median to {level_label} over the selected setting's seeds")
