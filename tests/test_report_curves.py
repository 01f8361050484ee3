"""Learning curves keep the run's full resolution: one point per logged update (smoothed by a
centred moving average), seeds as a min-max band, three x axes, log scale where a loss spans
decades."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from test_report_helpers import write_run

from bdhf_bench.report import load_results
from bdhf_bench.report.figures import _step_band, learning_curves, smooth, spans_decades


def test_smooth_is_a_centred_moving_average() -> None:
    values = np.arange(120, dtype=float) ** 2  # 120 updates -> window 2 * (120 // 60) + 1 = 5
    got = smooth(values)
    kernel = np.ones(5) / 5
    assert np.allclose(got[2:-2], np.convolve(values, kernel, mode="valid"))
    assert got[0] == values[:3].mean() and got[-1] == values[-3:].mean()  # shorter at the ends
    short = np.array([3.0, 1.0, 2.0])
    assert list(smooth(short)) == [3.0, 1.0, 2.0]  # under 60 updates: every point as logged


def test_step_band_is_mean_and_range_over_seeds() -> None:
    steps = pd.DataFrame(
        {
            "run_id": ["a"] * 3 + ["b"] * 3,
            "step": [0, 1, 2] * 2,
            "minibatch_loss": [4.0, 2.0, 1.0, 6.0, 3.0, 2.0],
            "train_seconds": [0.0, 1.0, 2.0, 0.0, 3.0, 4.0],
        }
    )
    band = _step_band(steps, "train_seconds")
    assert list(band["x"]) == [0.0, 2.0, 3.0]  # median over seeds
    assert list(band["mean"]) == [5.0, 2.5, 1.5]
    assert list(band["low"]) == [4.0, 2.0, 1.0] and list(band["high"]) == [6.0, 3.0, 2.0]


def test_spans_decades() -> None:
    assert not spans_decades([1.0, 9.99])
    assert spans_decades([0.5, 5.0, float("nan")])
    assert not spans_decades([0.0, 100.0])  # a log axis cannot show 0


def test_every_logged_update_is_drawn_on_each_axis(tmp_path: Path) -> None:
    root = tmp_path / "r"
    losses = list(np.geomspace(100.0, 0.1, 16))  # spans four decades
    for seed in (1, 2):
        write_run(root, seed=seed, kind="loss", final_test=90.0, minibatch=losses)
    loaded = load_results([root])
    fig = learning_curves(loaded.evaluations, loaded.steps, "p", "loss", {"adam": (0, 0, 1)})
    axes = fig.axes
    assert [ax.get_xlabel() for ax in axes] == [
        "updates",
        "training seconds",
        "gradient-equivalents",
    ]
    for ax in axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        minibatch = lines["adam mini-batch (smoothed)"]
        assert len(minibatch.get_xdata()) == 16  # every update, not only the 3 evaluations
        assert np.allclose(minibatch.get_ydata(), losses)  # under 60 updates: unsmoothed
        assert len(lines["adam test"].get_xdata()) == 3
        assert ax.get_yscale() == "log"
    assert np.allclose(axes[1].get_lines()[0].get_xdata(), 0.5 * np.arange(16))  # 0.5 s/update


def test_a_validation_target_is_drawn_beside_the_validation_curve(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for seed in (1, 2):
        write_run(root, seed=seed, final_test=0.5, final_valid=0.75)
    loaded = load_results([root])
    target = {"metric": "accuracy", "split": "valid", "value": 0.6}
    fig = learning_curves(
        loaded.evaluations, loaded.steps, "p", "accuracy", {"adam": (0, 0, 1)}, target=target
    )
    accuracy = fig.axes[3]  # second row: accuracy against updates
    lines = {line.get_label(): line for line in accuracy.get_lines()}
    assert np.allclose(lines["adam valid"].get_ydata(), [0.1, 0.425, 0.75])  # 0.1 -> final
    assert np.allclose(lines["adam test"].get_ydata(), [0.1, 0.3, 0.5])
    assert lines["target (valid)"].get_ydata()[0] == 0.6
    test_target = {**target, "split": "test"}
    fig = learning_curves(
        loaded.evaluations, loaded.steps, "p", "accuracy", {"adam": (0, 0, 1)}, target=test_target
    )
    assert "adam valid" not in {line.get_label() for line in fig.axes[3].get_lines()}
