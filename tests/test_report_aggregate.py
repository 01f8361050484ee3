"""Aggregates from hand-made result files equal hand-computed values exactly.

Std is the POPULATION std (ddof=0); a missed target counts as +inf in the median; selection uses
the final validation metric. The numbers come from ``write_scenario`` (test_report_helpers.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_helpers import BDHF_HI, BDHF_LO, LOSS_TARGET, P1, P2, write_run, write_scenario

from bdhf_bench.report import (
    curvature_table,
    load_results,
    median_with_misses,
    performance_profile,
    performance_ratios,
    profile_scores,
    setting_table,
    summary_table,
    time_matrix,
)
from bdhf_bench.report.load import setting_key
from bdhf_bench.report.schema import RunRecord

INF = math.inf


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    root = write_scenario(tmp_path_factory.mktemp("scenario") / "results")
    loaded = load_results([root])
    assert loaded.skipped == []
    settings = setting_table(loaded.runs)
    return {
        "runs": loaded.runs,
        "settings": settings,
        "summary": summary_table(settings),
        "curvature": curvature_table(settings),
    }


def _row(frame: pd.DataFrame, problem: str, optimizer: str) -> pd.Series:
    rows = frame[(frame["problem"] == problem) & (frame["optimizer"] == optimizer)]
    assert len(rows) == 1
    return rows.iloc[0]


def _key(hps: dict) -> str:
    record = RunRecord("bdhf-bench", P1, "x", hps, 128, 2, None, 0, "finished", 0, 0, [])
    record.budget = {"epochs": 2, "steps": None, "time_budget": None, "eval_every": None}
    return setting_key(record)


def test_median_with_misses_follows_algoperf() -> None:
    assert median_with_misses([2.0, 4.0, 6.0, INF]) == 5.0
    assert median_with_misses([8.0, INF, INF, INF]) == INF
    assert median_with_misses([9.0, INF]) == INF
    assert median_with_misses([3.0, 3.0, INF]) == 3.0
    assert math.isnan(median_with_misses([math.nan, math.nan]))  # no target: not a miss


def test_final_metric_is_mean_and_population_std_over_finished_seeds(frames) -> None:
    adam = _row(frames["summary"], P1, "adam")
    assert adam["final_mean"] == (0.25 + 0.25 + 0.75 + 0.75) / 4
    assert adam["final_std"] == 0.25  # sample std would be 0.2886...
    assert adam["final_n"] == 4
    bdhf = _row(frames["summary"], P1, "bdhf")
    mean = (0.375 + 0.5 + 0.625) / 3
    assert bdhf["final_mean"] == mean
    assert bdhf["final_std"] == math.sqrt(((0.375 - mean) ** 2 + 0.0 + (0.625 - mean) ** 2) / 3)
    p2 = _row(frames["summary"], P2, "adam")
    assert p2["metric_kind"] == "loss"
    assert p2["final_mean"] == 92.0
    assert p2["final_std"] == math.sqrt((4.0 + 0.0 + 4.0) / 3)
    assert p2["best_valid_mean"] == 91.0


def test_selection_uses_validation_never_test(frames) -> None:
    settings = frames["settings"]
    adam = settings[(settings["problem"] == P1) & (settings["optimizer"] == "adam")]
    ranked = list(adam.sort_values("rank")["setting"])
    # lr=0.001 (valid 0.5) beats lr=0.01 (valid 0.375, test 1.0); lr=0.1 has a diverged seed
    assert ranked == [_key({"lr": 0.001}), _key({"lr": 0.01}), _key({"lr": 0.1})]
    scores = list(adam.sort_values("rank")["selection_score"])
    assert scores == [0.5, 0.375, -INF]
    assert _row(frames["summary"], P1, "adam")["setting"] == _key({"lr": 0.001})
    assert _row(frames["summary"], P1, "adam")["n_settings"] == 3
    # bdhf: fraction 1/4 (valid 0.75 but a diverged seed) ranks below fraction 1/8 (0.625)
    assert _row(frames["summary"], P1, "bdhf")["setting"] == _key(BDHF_LO)
    assert _row(frames["summary"], P1, "hf")["setting"] == _key(BDHF_HI)


def test_to_target_medians_count_misses_as_infinite(frames) -> None:
    adam = _row(frames["summary"], P1, "adam")
    # seconds [2, 4, 6, miss]; steps = seconds / 0.5; epochs = steps / 8; one grad-eq per step
    assert adam["seconds_to_target"] == (4.0 + 6.0) / 2
    assert adam["steps_to_target"] == (8.0 + 12.0) / 2
    assert adam["epochs_to_target"] == (1.0 + 1.5) / 2
    assert adam["gradient_equivalents_to_target"] == 10.0
    assert (adam["n_reached"], adam["n_with_target"]) == (3, 4)
    bdhf = _row(frames["summary"], P1, "bdhf")
    assert bdhf["seconds_to_target"] == 12.0
    assert bdhf["steps_to_target"] == 6.0
    assert bdhf["gradient_equivalents_to_target"] == 18.0
    hf = _row(frames["summary"], P1, "hf")
    assert hf["seconds_to_target"] == INF  # 1 of 4 reached: the median is a miss
    assert (hf["n_reached"], hf["n_with_target"]) == (1, 4)
    assert _row(frames["summary"], P2, "hf")["seconds_to_target"] == 3.0  # [3, 3, miss]


def test_diverged_runs_are_counted_and_timed_but_not_averaged(frames) -> None:
    settings = frames["settings"]
    hi = settings[(settings["optimizer"] == "bdhf") & (settings["setting"] == _key(BDHF_HI))]
    hi = hi[hi["problem"] == P1].iloc[0]
    assert (hi["n_runs"], hi["n_finished"], hi["n_diverged"]) == (4, 3, 1)
    assert hi["final_n"] == 3
    assert hi["final_mean"] == (0.25 + 0.5 + 0.75) / 3
    # seconds [10, miss (diverged), 20, 30] -> median of [10, 20, 30, inf]
    assert hi["seconds_to_target"] == 25.0
    runs = frames["runs"]
    diverged = runs[runs["status"] == "diverged"]
    assert len(diverged) == 2
    assert all(
        Path(p).relative_to(Path(p).parents[4]).parts[0] == "_diverged" for p in diverged["path"]
    )


def test_speed_and_overhead_against_adam(frames) -> None:
    summary = frames["summary"]
    assert _row(summary, P1, "adam")["seconds_per_step"] == 0.5
    assert _row(summary, P1, "adam")["seconds_per_epoch"] == 8 * 0.5
    assert _row(summary, P1, "adam")["overhead_vs_adam"] == 1.0
    assert _row(summary, P1, "bdhf")["overhead_vs_adam"] == 2.0 / 0.5
    assert _row(summary, P1, "hf")["overhead_vs_adam"] == 3.0 / 0.5
    assert _row(summary, P2, "hf")["overhead_vs_adam"] == 3.0 / 0.5


def test_curvature_table_has_one_selected_setting_per_fraction(frames) -> None:
    table = frames["curvature"]
    assert set(table["problem"]) == {P1}  # P2 ran one fraction only
    got = list(zip(table["optimizer"], table["curvature_fraction"], table["curvature_batch_size"]))
    assert got == [
        ("bdhf", 0.125, 16.0),
        ("bdhf", 0.25, 32.0),
        ("hf", 0.125, 16.0),
        ("hf", 0.25, 32.0),
    ]
    hf_lo = table[(table["optimizer"] == "hf") & (table["curvature_fraction"] == 0.125)].iloc[0]
    assert hf_lo["seconds_to_target"] == INF  # [9, miss]


def test_profile_ratios_curve_and_score(frames) -> None:
    times = time_matrix(frames["summary"], "seconds_to_target")
    assert times.loc[P1].to_dict() == {"adam": 5.0, "bdhf": 12.0, "hf": INF}
    assert times.loc[P2].to_dict() == {"adam": 4.0, "bdhf": 2.0, "hf": 3.0}
    ratios = performance_ratios(times)
    assert ratios.loc[P1].to_dict() == {"adam": 1.0, "bdhf": 12.0 / 5.0, "hf": INF}
    assert ratios.loc[P2].to_dict() == {"adam": 4.0 / 2.0, "bdhf": 1.0, "hf": 3.0 / 2.0}
    taus = [1.0, 1.5, 2.0, 12.0 / 5.0, 3.0, 4.0]
    profile = performance_profile(ratios, np.array(taus))
    assert list(profile.loc["adam"]) == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert list(profile.loc["bdhf"]) == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert list(profile.loc["hf"]) == [0.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    scores = profile_scores(ratios)
    assert scores["adam"] == ((4 - 1.0) / 3 + (4 - 2.0) / 3) / 2
    assert scores["bdhf"] == ((4 - 2.4) / 3 + (4 - 1.0) / 3) / 2
    assert scores["hf"] == (0.0 + (4 - 1.5) / 3) / 2
    ge = performance_ratios(time_matrix(frames["summary"], "gradient_equivalents_to_target"))
    assert ge.loc[P1].to_dict() == {"adam": 1.0, "bdhf": 18.0 / 10.0, "hf": INF}
    assert ge.loc[P2].to_dict() == {"adam": 8.0 / 4.0, "bdhf": 1.0, "hf": 5.0 / 4.0}


def test_profile_edge_cases() -> None:
    times = pd.DataFrame(
        {"a": [INF, 0.0, 2.0], "b": [INF, 1.0, 7.0]}, index=["nobody", "instant", "far"]
    )
    ratios = performance_ratios(times)
    assert ratios.loc["nobody"].tolist() == [INF, INF]  # counts against both
    assert ratios.loc["instant"].tolist() == [1.0, INF]
    assert ratios.loc["far"].tolist() == [1.0, 3.5]
    profile = performance_profile(ratios, np.array([1.0, 4.0]))
    assert profile.loc["a"].tolist() == [2 / 3, 2 / 3]
    assert profile.loc["b"].tolist() == [0.0, 1 / 3]
    assert profile_scores(ratios)["b"] == ((4 - 3.5) / 3) / 3


def test_varied_labels_name_only_what_differs(frames) -> None:
    settings = frames["settings"]
    adam = settings[(settings["problem"] == P1) & (settings["optimizer"] == "adam")]
    assert list(adam.sort_values("rank")["varied"]) == ["lr=0.001", "lr=0.01", "lr=0.1"]
    bdhf = settings[(settings["problem"] == P1) & (settings["optimizer"] == "bdhf")]
    assert list(bdhf.sort_values("rank")["varied"]) == [
        "curvature_fraction=0.125",
        "curvature_fraction=0.25",
    ]
    assert list(settings[settings["problem"] == P2]["varied"]) == ["–", "–", "–"]


def test_selection_weighs_settings_on_the_seeds_they_share(tmp_path: Path) -> None:
    """A tuner scores every setting on seed 1 and reruns its choice with seeds 2 and 3: the
    choice must not lose to a one-seed setting because its other seeds are worse."""
    root = tmp_path / "results"
    for seed, valid in ((1, 0.75), (2, 0.25), (3, 0.25)):  # three-seed mean 0.4166...
        write_run(root, hps={"lr": 0.001}, seed=seed, final_valid=valid)
    write_run(root, hps={"lr": 0.01}, seed=1, final_valid=0.5)
    settings = setting_table(load_results([root]).runs)
    ranked = settings.sort_values("rank")
    assert list(ranked["setting"]) == [_key({"lr": 0.001}), _key({"lr": 0.01})]
    assert list(ranked["selection_score"]) == [0.75, 0.5]
    assert list(ranked["selection_seeds"]) == ["1", "1"]
    assert list(ranked["seeds"]) == ["1,2,3", "1"]
    # settings without a common seed are each scored on all of their own
    write_run(root, problem=P2, kind="loss", target=LOSS_TARGET, seed=5, final_valid=90.0)
    write_run(
        root, problem=P2, kind="loss", target=LOSS_TARGET, hps={"lr": 0.1}, seed=6, final_valid=80.0
    )
    settings = setting_table(load_results([root]).runs)
    p2 = settings[settings["problem"] == P2].sort_values("rank")
    assert list(p2["selection_score"]) == [80.0, 90.0]


def test_a_time_budget_setting_holds_seeds_that_covered_different_epochs(tmp_path: Path) -> None:
    root = tmp_path / "results"
    budget = {"epochs": None, "steps": None, "time_budget": 60.0, "eval_every": None}
    for seed, epochs in ((1, 2), (2, 3), (3, 3)):
        write_run(root, seed=seed, num_epochs=epochs, budget=budget)
    settings = setting_table(load_results([root]).runs)
    assert len(settings) == 1
    row = settings.iloc[0]
    assert (row["n_runs"], row["seeds"], row["budget"]) == (3, "1,2,3", "60 s")
    assert "num_epochs" not in row["setting"] and "time_budget=60" in row["setting"]
    assert row["varied"] == "–"


def test_a_time_to_target_study_selects_the_fewest_updates_as_its_tuner_did(tmp_path: Path) -> None:
    """Under stop_at_target every run that got there ends at the target's level, so the final
    validation metric says nothing; the setting shown is the one with the fewest updates."""
    root = tmp_path / "results"
    budget = {"epochs": None, "steps": 40, "time_budget": None, "eval_every": 8}
    stop = {**budget, "stop_at_target": True, "patience": 16}
    # 0.5 s per update: reached_seconds 4 -> 8 updates, 12 -> 24 updates
    write_run(root, hps={"lr": 0.01}, seed=1, final_valid=0.81, reached_seconds=12.0, budget=stop)
    write_run(root, hps={"lr": 0.1}, seed=1, final_valid=0.85, reached_seconds=None, budget=stop)
    for seed in (1, 2, 3):
        write_run(
            root, hps={"lr": 0.001}, seed=seed, final_valid=0.8, reached_seconds=4.0, budget=stop
        )
    settings = setting_table(load_results([root]).runs)
    ranked = settings.sort_values("rank")
    assert list(ranked["setting"].str.extract(r"lr=([0-9.]+)")[0]) == ["0.001", "0.01", "0.1"]
    assert list(ranked["selection_steps"]) == [8.0, 24.0, INF]
    assert set(ranked["budget"]) == {"40 steps, eval every 8, stop at target, patience 16"}
    # the same runs without early stops are selected on the final validation metric
    plain = tmp_path / "plain"
    for hps, valid in (({"lr": 0.01}, 0.81), ({"lr": 0.1}, 0.85), ({"lr": 0.001}, 0.8)):
        write_run(plain, hps=hps, seed=1, final_valid=valid, reached_seconds=4.0, budget=budget)
    first = setting_table(load_results([plain]).runs).sort_values("rank").iloc[0]
    assert "lr=0.1 " in first["setting"] + " "
