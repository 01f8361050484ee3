"""Time to milestone levels (``--level``, a suite's ``levels``) against hand-worked medians."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from runner_helpers import cli
from test_report_helpers import LOSS_TARGET, write_run

from bdhf_bench.levels import Level, LevelError, parse_level
from bdhf_bench.report import load_results, setting_table, summary_table
from bdhf_bench.report.level_times import level_table, table_block
from bdhf_bench.runner.suite import SuiteError, load_suite

P = "mnist_autoencoder"


def test_levels_parse_and_bad_ones_say_what_is_valid() -> None:
    assert parse_level("mnist_autoencoder:valid_loss<=125") == Level(P, "valid", "loss", 125.0)
    assert parse_level(" smnist_lstm:test_accuracy >= 0.8 ") == Level(
        "smnist_lstm", "test", "accuracy", 0.8
    )
    for bad, says in (
        ("mnist_autoencoder:valid_loss>=125", "a loss level is <="),
        ("smnist_lstm:valid_accuracy<=0.8", "an accuracy level >="),
        ("mnist_autoencoder:eval_loss<=1", "is not PROBLEM:SPLIT_METRIC<=VALUE"),
        ("valid_loss<=1", "is not PROBLEM:SPLIT_METRIC<=VALUE"),
        ("mnist_autoencoder:valid_loss<=1e999", "must be finite"),
        ("mnist_autoencoder:valid_loss<=1.2.3", "is not a number"),
    ):
        with pytest.raises(LevelError, match=says):
            parse_level(bad)


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """Validation loss 200 -> (200 + final) / 2 -> final at updates 0, 8, 16 (0.5 s and one
    gradient-equivalent per update): seeds 1, 2, 3 end at 90, 100 and 120."""
    root = tmp_path / "results"
    for seed, final in ((1, 90.0), (2, 100.0), (3, 120.0)):
        write_run(root, problem=P, kind="loss", target=LOSS_TARGET, seed=seed, final_valid=final)
    return root


def _table(root: Path, levels: list[Level]):
    loaded = load_results([root])
    summary = summary_table(setting_table(loaded.runs))
    return level_table(loaded.evaluations, summary, levels)


def test_time_to_each_level_is_the_median_first_crossing(results: Path) -> None:
    levels = [parse_level(f"{P}:valid_loss<={v}") for v in (150, 100, 95)]
    table = _table(results, [*levels, parse_level("other_problem:valid_loss<=1")])
    assert list(table["level"]) == ["valid loss <= 150", "valid loss <= 100", "valid loss <= 95"]
    easy, target, hard = (row for _, row in table.iterrows())
    # <= 150: seeds at updates 8 (145), 8 (150 is met), 16 (160 at 8) -> median 8
    assert (easy["updates_to_level"], easy["seconds_to_level"]) == (8.0, 4.0)
    assert (easy["gradient_equivalents_to_level"], easy["n_reached"]) == (8.0, 3)
    # <= 100: 16, 16, miss -> 16
    assert (target["updates_to_level"], target["n_reached"]) == (16.0, 2)
    # <= 95: 16, miss, miss -> a miss; the median best (90, 100, 120) and updates run
    assert math.isinf(hard["updates_to_level"]) and hard["n_reached"] == 1
    assert (hard["best_median"], hard["updates_run_median"]) == (100.0, 16.0)
    rows = table_block(table).rows
    assert rows[0][4:] == ["8 (3/3)", "4", "8"]
    assert rows[2][4:] == ["not reached (1/3): best 100 after 16 updates", "∞", "∞"]


def test_report_and_suite_take_levels(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = cli("report", str(results), "--out", str(out), "--level", f"{P}:valid_loss<=150")
    assert res.exit_code == 0, res.output
    page = (out / "leaderboard.md").read_text()
    assert "## Time to each level" in page and "| valid loss <= 150 | 8 (3/3) | 4 | 8 |" in page
    assert (out / "tables" / "levels.csv").is_file()
    bad = cli("report", str(results), "--out", str(out), "--level", f"{P}:valid_loss>=150")
    assert bad.exit_code == 2 and "a loss level is <=" in bad.output
    suite = tmp_path / "suite.toml"
    body = "[[experiment]]\nproblem = 'tiny_mlp'\noptimizers = ['adam']\nsteps = 1\n"
    suite.write_text(f"levels = ['{P}:valid_loss<=125']\n{body}")
    assert load_suite(str(suite)).levels == [Level(P, "valid", "loss", 125.0)]
    suite.write_text(f"levels = '{P}:valid_loss<=125'\n{body}")
    with pytest.raises(SuiteError, match="levels must be a list of strings"):
        load_suite(str(suite))
