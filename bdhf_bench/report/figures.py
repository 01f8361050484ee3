"""Report figures as PNG bytes: learning curves, time-to-target bars, profiles, curvature sweep.

Figures are built on ``matplotlib.figure.Figure`` (Agg, no pyplot), with seaborn's style as a
context, so making a report changes no global plotting state. Each function returns the PNG's
bytes; the caller writes them (atomically) and embeds them in the HTML page.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .baselines import LABEL

DPI = 100
X_AXES = {
    "step": "updates",
    "epoch": "epochs",
    "train_seconds": "training seconds",
    "gradient_equivalents": "gradient-equivalents",
}
CURVE_AXES = ("step", "train_seconds", "gradient_equivalents")
"""The learning curves' x axes: the three units a time to target is counted in."""
BASELINE_COLOR = "0.45"
MISS_LABEL = "not reached"
SHORT_CITATION = "Schneider, Balles, Hennig, ICLR 2019"


def palette(optimizers: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """A stable optimizer -> colour map (sorted names), shared by every figure of a report."""
    names = sorted(set(optimizers))
    colors = sns.color_palette("colorblind", n_colors=max(len(names), 1))
    return dict(zip(names, colors))


def as_png(drawn: Figure | bytes) -> bytes:
    """A drawn figure as PNG bytes (bytes pass through): figures whose lines tests inspect
    return the Figure itself."""
    return drawn if isinstance(drawn, bytes) else _png(drawn)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _new_figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _band(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per evaluation index over seeds: median x, mean y, min-max band of y."""
    clean = frame[["evaluation", x, y]].replace([math.inf, -math.inf], math.nan)
    grouped = clean.groupby("evaluation")
    band = pd.DataFrame(
        {
            "x": grouped[x].median(),
            "mean": grouped[y].mean(),
            "low": grouped[y].min(),
            "high": grouped[y].max(),
        }
    )
    return band.dropna(subset=["x", "mean"])


def _target_line(ax: Axes, target: dict | None, kind: str) -> None:
    """The target as a dotted line on the panels of its metric, labelled with its split."""
    if target and target.get("metric") == kind:
        label = f"target ({target.get('split', '')})"
        ax.axhline(target["value"], color="black", linestyle=":", linewidth=1.2, label=label)


def _baseline_lines(ax: Axes, baselines: pd.DataFrame, kind: str) -> None:
    """DeepOBS's final test means as grey lines, each named at the right edge."""
    for _, row in baselines[baselines["metric_kind"] == kind].iterrows():
        ax.axhline(
            row["final_mean"],
            color=BASELINE_COLOR,
            linestyle="-.",
            linewidth=1.0,
            label=f"{LABEL}: final test mean",
        )
        ax.annotate(
            f"DeepOBS TF {row['ours']}",
            xy=(0.99, row["final_mean"]),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize="x-small",
            color=BASELINE_COLOR,
        )


def _legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend below the panels, each label once (panels share optimizers and lines)."""
    seen: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()), list(seen), loc="outside lower center", ncols=3, fontsize="small"
        )


def smooth(values: np.ndarray) -> np.ndarray:
    """Centred moving average over about 1/30 of the run (an odd window, at least 1 update);
    NaNs are skipped, so a run's curve is never cut by one missing loss."""
    window = 2 * (len(values) // 60) + 1
    if window == 1:
        return np.asarray(values, dtype=float)
    series = pd.Series(values, dtype=float)
    return series.rolling(window, center=True, min_periods=1).mean().to_numpy()


def _step_band(steps: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per update index over seeds: median x, mean and min-max of each seed's smoothed loss."""
    parts = []
    for _, run in steps.groupby("run_id", sort=True):
        run = run.sort_values("step")
        parts.append(
            pd.DataFrame(
                {
                    "step": run["step"].to_numpy(),
                    "x": run[x].to_numpy(dtype=float),
                    "y": smooth(run["minibatch_loss"].to_numpy(dtype=float)),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["x", "mean", "low", "high"])
    grouped = pd.concat(parts).replace([math.inf, -math.inf], math.nan).groupby("step")
    band = pd.DataFrame(
        {
            "x": grouped["x"].median(),
            "mean": grouped["y"].mean(),
            "low": grouped["y"].min(),
            "high": grouped["y"].max(),
        }
    )
    return band.dropna(subset=["x", "mean"])


def spans_decades(values: Sequence[float]) -> bool:
    """True when the positive values span at least a factor of ten (then a log axis reads
    better); False if any value is not positive."""
    array = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if array.size < 2 or (array <= 0).any():
        return False
    return float(array.max() / array.min()) >= 10.0


def _x_axes(evaluations: pd.DataFrame) -> list[str]:
    xs = [x for x in CURVE_AXES if evaluations[x].notna().any()]
    return xs or ["epoch"]  # DeepOBS-only files: epochs are all there is


def _curve_splits(target: dict | None) -> list[tuple[str, str]]:
    """The evaluated splits drawn, with their line style: test and train, and the target's split
    when it is another (a validation target's line needs the validation curve beside it)."""
    splits = [("test", "o-"), ("train", "s--")]
    if target and target.get("split") == "valid":
        splits.append(("valid", "^:"))
    return splits


def learning_curves(
    evaluations: pd.DataFrame,
    steps: pd.DataFrame,
    problem: str,
    kind: str,
    colors: dict[str, tuple[float, float, float]],
    target: dict | None = None,
    baselines: pd.DataFrame | None = None,
    machine: str = "",
) -> Figure:
    """Per optimizer, against updates, training seconds and gradient-equivalents: every logged
    mini-batch loss (smoothed, thin), the test (solid, dots) and train (dashed) evaluations, and
    the validation ones (dotted, triangles) when the target is on validation; lines are means
    over seeds, bands the seeds' min-max; log scale where a loss spans decades."""
    xs = _x_axes(evaluations)
    kinds = ["loss", "accuracy"] if kind == "accuracy" else ["loss"]
    fig, axes = _new_figure(len(kinds), len(xs), 4.6, 3.4)
    for r, metric in enumerate(kinds):
        for c, x in enumerate(xs):
            ax = axes[r, c]
            drawn: list[float] = []
            for optimizer, runs in evaluations.groupby("optimizer", sort=True):
                color = colors.get(str(optimizer), "C0")
                if metric == "loss" and x != "epoch":
                    mine = steps[steps["optimizer"] == optimizer]
                    band = _step_band(mine, x)
                    if len(band):
                        ax.plot(
                            band["x"],
                            band["mean"],
                            "-",
                            color=color,
                            linewidth=0.8,
                            alpha=0.7,
                            label=f"{optimizer} mini-batch (smoothed)",
                        )
                        ax.fill_between(
                            band["x"],
                            band["low"],
                            band["high"],
                            color=color,
                            alpha=0.1,
                            linewidth=0,
                        )
                        drawn.extend(band["low"])
                        drawn.extend(band["high"])
                for split, style in _curve_splits(target):
                    band = _band(runs, x, f"{split}_{metric}")
                    if band.empty:
                        continue
                    ax.plot(
                        band["x"],
                        band["mean"],
                        style,
                        color=color,
                        markersize=3,
                        linewidth=1.6,
                        label=f"{optimizer} {split}",
                    )
                    ax.fill_between(band["x"], band["low"], band["high"], color=color, alpha=0.2)
                    drawn.extend(band["low"])
                    drawn.extend(band["high"])
            _target_line(ax, target, metric)
            if x == xs[0] and baselines is not None:
                _baseline_lines(ax, baselines, metric)
            if metric == "loss" and spans_decades(drawn):
                ax.set_yscale("log")
            ax.set_xlabel(X_AXES[x])
            ax.set_ylabel(f"{metric} (log)" if ax.get_yscale() == "log" else metric)
    _legend(fig, axes)
    title = f"{problem}: mean over seeds, band = min-max over seeds"
    if machine:
        title += f"\nseconds on {machine}"
    if baselines is not None and len(baselines):
        title += f"\ndash-dot grey: {LABEL} ({SHORT_CITATION})"
    fig.suptitle(title, fontsize="medium")
    return fig


def _bars(ax: Axes, labels: list[str], values: list[float], notes: list[str], colors: list) -> None:
    """Vertical bars of the finite values; a miss is no bar but a marker at the top of the axis
    and "not reached" in readable type (a bar would read as a time)."""
    finite = [v for v in values if math.isfinite(v)]
    top = 1.15 * max(finite) if finite and max(finite) > 0 else 1.0
    heights = [v if math.isfinite(v) else 0.0 for v in values]
    bars = ax.bar(labels, heights, color=colors)
    for bar, value, note, color in zip(bars, values, notes, colors):
        x = bar.get_x() + bar.get_width() / 2
        if math.isfinite(value):
            text = f"{value:.3g}\n{note}" if note else f"{value:.3g}"
            ax.annotate(text, (x, value), ha="center", va="bottom", fontsize="small")
            continue
        ax.plot([x], [top], marker="^", markersize=11, color=color, clip_on=False)
        text = f"{MISS_LABEL}\n{note}" if note else MISS_LABEL
        ax.annotate(text, (x, top * 0.97), ha="center", va="top", fontsize="small")
    ax.set_ylim(0, top * 1.3)
    ax.tick_params(axis="x", labelrotation=20)


def time_to_target_overview(
    workloads: Sequence[tuple[str, pd.DataFrame]],
    colors: dict[str, tuple[float, float, float]],
    machine: str = "",
) -> Figure:
    """Every problem's median time to target in one figure, a row per problem and a column per
    unit, horizontal bars; a miss is a marker at the axis end, labelled "not reached"."""
    units = [
        ("steps_to_target", "updates"),
        ("seconds_to_target", "training seconds"),
        ("gradient_equivalents_to_target", "gradient-equivalents"),
    ]
    heights = [0.9 + 0.32 * len(rows) for _, rows in workloads]
    fig = Figure(figsize=(12.0, sum(heights) + 0.6), layout="constrained")
    axes = fig.subplots(len(workloads), len(units), squeeze=False, height_ratios=heights)
    for r, (workload, rows) in enumerate(workloads):
        rows = rows.sort_values("optimizer", ascending=False)
        names = list(rows["optimizer"].astype(str))
        for c, (column, unit) in enumerate(units):
            ax = axes[r, c]
            values = [float(v) for v in rows[column]]
            finite = [v for v in values if math.isfinite(v)]
            right = 1.25 * max(finite) if finite and max(finite) > 0 else 1.0
            for y, (name, value) in enumerate(zip(names, values)):
                color = colors.get(name, "C0")
                if math.isfinite(value):
                    ax.barh(y, value, color=color, height=0.7)
                    ax.annotate(f" {value:.3g}", (value, y), va="center", fontsize="small")
                else:
                    ax.plot([right], [y], marker=">", markersize=9, color=color, clip_on=False)
                    ax.annotate(
                        f"{MISS_LABEL} ", (right, y), va="center", ha="right", fontsize="small"
                    )
            ax.set_yticks(range(len(names)), names if c == 0 else [""] * len(names))
            ax.set_xlim(0, right * 1.02)
            ax.grid(axis="x", color="0.9")
            ax.set_axisbelow(True)
            if r == 0:
                ax.set_title(unit, fontsize="medium")
            if c == 0:
                ax.set_ylabel(workload, fontsize="medium")
    title = "Median time to target over seeds (a miss counts as infinite: not reached)"
    fig.suptitle(title + (f"; seconds on {machine}" if machine else ""), fontsize="medium")
    return fig


def time_to_target_bars(
    summary: pd.DataFrame,
    problem: str,
    colors: dict[str, tuple[float, float, float]],
    baselines: pd.DataFrame | None = None,
    machine: str = "",
) -> bytes:
    """Median updates, seconds and gradient-equivalents to target per optimizer; a miss is a
    marker, not a bar.
    With DeepOBS baselines an epochs panel is added, the unit of DeepOBS's ``speed``."""
    panels = [
        ("steps_to_target", "updates"),
        ("seconds_to_target", "training seconds"),
        ("gradient_equivalents_to_target", "gradient-equivalents"),
    ]
    has_baselines = baselines is not None and len(baselines) > 0
    if has_baselines:
        panels.append(("epochs_to_target", "epochs"))
    fig, axes = _new_figure(1, len(panels), 4.2, 3.6)
    rows = summary.sort_values("optimizer")
    notes = [f"{r.n_reached}/{r.n_with_target} reached" for r in rows.itertuples()]
    for ax, (column, name) in zip(axes[0], panels):
        labels = list(rows["optimizer"].astype(str))
        values = [float(v) for v in rows[column]]
        bar_colors = [colors.get(label, "C0") for label in labels]
        bar_notes = list(notes)
        if column == "epochs_to_target" and has_baselines:
            for _, base in baselines.iterrows():
                labels.append(f"DeepOBS TF {base['ours']}")
                values.append(float(base["speed_epochs"]))
                bar_colors.append(BASELINE_COLOR)
                bar_notes.append("mean, v1.1")
        _bars(ax, labels, values, bar_notes, bar_colors)
        ax.set_ylabel(name)
    target = summary[["target_metric", "target_split", "target_value"]].dropna().head(1)
    title = f"{problem}: median time to target over seeds (a miss counts as infinite)"
    if len(target):
        t = target.iloc[0]
        title += f"\ntarget: {t['target_split']} {t['target_metric']} {t['target_value']:g}"
    if machine:
        title += f"; seconds on {machine}"
    if has_baselines:
        title += f"\ngrey: {LABEL}, mean epochs ({SHORT_CITATION})"
    fig.suptitle(title, fontsize="medium")
    return _png(fig)


def profile_figure(
    profile: pd.DataFrame,
    time_name: str,
    colors: dict[str, tuple[float, float, float]],
    note: str = "",
) -> Figure:
    """rho(tau) per optimizer on a log tau axis out to the largest ratio (``note``, under the
    title: where the seconds were measured). Lines that coincide (two optimizers with the same
    ratios) are drawn a hair apart in their own dash style, so each one shows."""
    fig, axes = _new_figure(1, 1, 6.4, 4.2)
    ax = axes[0, 0]
    taus = [float(t) for t in profile.columns]
    styles = ("-", "--", "-.", ":")
    n = len(profile.index)
    for k, (optimizer, row) in enumerate(profile.iterrows()):
        offset = (k - (n - 1) / 2) * 0.012
        ax.step(
            taus,
            row.to_numpy() + offset,
            where="post",
            label=str(optimizer),
            color=colors.get(str(optimizer), "C0"),
            linestyle=styles[k % len(styles)],
            linewidth=2,
        )
    ax.set_xscale("log")
    right = max(taus) if taus else 4.0
    ax.set_xlim(1.0, right)
    ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 10, 20, 40, 100, 200, 400, 1000) if t <= right]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(4.0, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel(f"tau: ratio of {time_name}-to-target to the best optimizer's (log)")
    ax.set_ylabel("fraction of problems")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    title = f"Performance profile ({time_name}); the score integrates to tau = 4 (dotted)"
    ax.set_title(f"{title}\n{note}" if note else title, fontsize="medium")
    return fig


def curvature_figure(
    table: pd.DataFrame,
    problem: str,
    colors: dict[str, tuple[float, float, float]],
    target: dict | None = None,
) -> bytes:
    """BDHF vs HF against curvature batch size: final test metric and time to target.

    A missed target (an infinite median) is drawn as an x on a dashed "miss" line above the
    finite values; optimizers are nudged sideways so their markers do not hide each other."""
    kind = str(table["metric_kind"].iloc[0])
    fig, axes = _new_figure(1, 2, 4.8, 3.6)
    left, right = axes[0]
    cost = table["gradient_equivalents_to_target"].astype(float)
    finite = cost[np.isfinite(cost)]
    miss_level = 1.15 * float(finite.max()) if len(finite) and finite.max() > 0 else 1.0
    for index, (optimizer, rows) in enumerate(table.groupby("optimizer", sort=True)):
        color = colors.get(str(optimizer), "C0")
        rows = rows.sort_values("curvature_batch_size")
        sizes = rows["curvature_batch_size"].astype(float) * 2 ** (0.04 * (index - 0.5))
        left.errorbar(
            sizes,
            rows["final_mean"],
            yerr=rows["final_std"],
            marker="o",
            capsize=3,
            color=color,
            label=str(optimizer),
        )
        values = rows["gradient_equivalents_to_target"].astype(float)
        hit = np.isfinite(values.to_numpy())
        right.plot(sizes[hit], values[hit], "o-", color=color, label=str(optimizer))
        if (~hit).any():
            right.plot(
                sizes[~hit],
                [miss_level] * int((~hit).sum()),
                "x",
                color=color,
                markersize=10,
                mew=2,
                label=f"{optimizer}: {MISS_LABEL}",
            )
    if not np.isfinite(cost.to_numpy()).all():
        right.axhline(miss_level, color="0.6", linestyle="--", linewidth=1)
        right.annotate(
            MISS_LABEL,
            xy=(0.01, miss_level),
            xycoords=("axes fraction", "data"),
            va="bottom",
            fontsize="x-small",
            color="0.4",
        )
    _target_line(left, target, kind)
    ticks = sorted(float(v) for v in table["curvature_batch_size"].dropna().unique())
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.minorticks_off()
        ax.set_xlabel("curvature batch size (examples)")
        ax.legend(fontsize="small")
    left.set_ylabel(f"final test {kind} (mean ± std)")
    right.set_ylabel("median grad-equivalents to target")
    right.set_ylim(0, miss_level * 1.15)
    fig.suptitle(f"{problem}: BDHF vs HF over curvature batch size", fontsize="medium")
    return _png(fig)
