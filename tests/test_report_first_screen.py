"""The page's first screen: the winner of each unit per problem, bars that draw a miss as a
miss, and performance profiles that keep every optimizer's line visible."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from bdhf_bench.report.figures import profile_figure, time_to_target_overview
from bdhf_bench.report.headline import Contender
from bdhf_bench.report.profiles import performance_profile, performance_ratios, profile_taus
from bdhf_bench.report.winners import winner_cell

INF = math.inf


def _contender(name: str, steps: list[float]) -> Contender:
    seeds = np.array(steps, dtype=float)
    median = float(np.median(seeds))
    return Contender(
        optimizer=name,
        medians={"steps": median, "seconds": median, "gradient_equivalents": median},
        seeds={"steps": seeds, "seconds": seeds, "gradient_equivalents": seeds},
        n_reached=int(np.isfinite(seeds).sum()),
        n_with_target=len(seeds),
        best_on_target=0.0,
        updates_run=0.0,
        final_mean=0.0,
        final_std=0.0,
        final_n=len(seeds),
    )


def test_the_winner_cell_names_the_lead_and_whether_the_seeds_overlap():
    hf, adam = _contender("hf", [10, 12, 14]), _contender("adam", [30, 40, 50])
    assert winner_cell([adam, hf], "steps") == "hf, 3.33× over adam (clear)"
    close = _contender("sgd", [13, 15, 16])
    assert winner_cell([close, hf], "steps") == "hf, 1.25× over sgd (seeds overlap)"
    twin = _contender("bdhf", [11, 12, 20])
    assert winner_cell([adam, twin, hf], "steps") == "bdhf = hf, 3.33× over adam (clear)"
    missed = _contender("kfac", [INF, INF, 5])
    assert winner_cell([missed, hf], "steps") == "hf (only one reached)"
    assert winner_cell([missed], "steps") == "none reached"


def _summary() -> pd.DataFrame:
    rows = [
        ("adam", 40.0, 3),
        ("bdhf", INF, 1),
        ("hf", 10.0, 3),
    ]
    return pd.DataFrame(
        {
            "optimizer": [r[0] for r in rows],
            "steps_to_target": [r[1] for r in rows],
            "seconds_to_target": [r[1] for r in rows],
            "gradient_equivalents_to_target": [r[1] for r in rows],
            "n_reached": [r[2] for r in rows],
            "n_with_target": [3, 3, 3],
        }
    )


def test_a_miss_is_a_marker_labelled_not_reached_never_a_bar():
    fig = time_to_target_overview([("p", _summary())], {"adam": "C0", "bdhf": "C1", "hf": "C2"})
    for ax in fig.axes:
        widths = sorted(
            round(p.get_width(), 6)
            for p in ax.patches
            if isinstance(p, Rectangle) and p.get_width()
        )
        assert widths == [10.0, 40.0]  # two bars: hf and adam; none for bdhf's miss
        markers = [line for line in ax.lines if line.get_marker() == ">"]
        assert len(markers) == 1 and markers[0].get_xdata()[0] >= 40.0
        texts = [t.get_text().strip() for t in ax.texts]
        assert "not reached" in texts


def test_profiles_reach_the_largest_ratio_on_a_log_axis_with_a_line_per_optimizer():
    times = pd.DataFrame(
        {"adam": [1.0, 1.0], "bdhf": [20.0, 8.0], "hf": [20.0, 8.0]}, index=["p1", "p2"]
    )
    ratios = performance_ratios(times)
    taus = profile_taus(ratios)
    assert taus[0] == 1.0 and taus[-1] >= 20.0 and 8.0 in taus and 20.0 in taus
    profile = performance_profile(ratios, taus)
    assert profile.loc["bdhf"].iloc[-1] == 1.0  # solved both within the largest ratio
    fig = profile_figure(profile, "updates", {})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim()[1] >= 20.0
    lines = {line.get_label(): line for line in ax.lines if isinstance(line, Line2D)}
    bdhf, hf = lines["bdhf"], lines["hf"]
    # the same ratios, drawn apart: in height and in dash style
    assert not np.array_equal(bdhf.get_ydata(), hf.get_ydata())
    assert bdhf.get_linestyle() != hf.get_linestyle()
