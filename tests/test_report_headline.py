"""The headline says exactly what the numbers show: per unit the leader, a tie as a tie, no winner
where nobody reached the target, and "exceeds the seeds' spread" only when the seeds' ranges are
disjoint. Expected sentences are worked out by hand from ``write_scenario`` and small folders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_report_helpers import P1, P2, make_run, write_doc, write_run, write_scenario

from bdhf_bench.report import build_report, load_results, setting_table, summary_table
from bdhf_bench.report.headline import Contender, compare, headline

INF = math.inf


def _lines(root: Path, problem: str, machine: str = "M", resolution: float = 8.0):
    runs = load_results([root]).runs
    summary = summary_table(setting_table(runs))
    return headline(summary[summary["problem"] == problem], runs, machine, resolution)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scenario(tmp_path_factory.mktemp("headline") / "results")


def test_loss_problem_headline_from_hand_computed_medians(scenario: Path) -> None:
    # P2: adam reaches at 4 s (0.5 s/update -> 8 updates, 8 grad-eq) on all 3 seeds; bdhf at
    # 2 s (2 s/update -> 1 update, 4 grad-eq); hf at 3 s on two seeds and misses on the third
    # (3 s/update -> 1 update, 5 grad-eq; medians of [x, x, inf] = x)
    opening, lines = _lines(scenario, P2, machine="device cpu, CPU X, threads 1")
    assert opening.startswith(f"{P2} (synthetic data), budget 2 epochs, target test loss ≤ 100 ")
    assert "every 8 updates" in opening
    assert lines[:3] == [
        "adam: 8 updates, 4 s, 8 grad-eq to target (3/3 seeds reached); final test loss 92 ± 1.63.",
        "bdhf: 1 update, 2 s, 4 grad-eq to target (3/3 seeds reached); final test loss 95 ± 0.",
        "hf: 1 update, 3 s, 5 grad-eq to target (2/3 seeds reached); final test loss 96 ± 0.",
    ]
    # updates: bdhf and hf tie; hf's missed seed (inf) overlaps adam's 8 -> within the spread
    assert lines[3] == (
        "Fewest updates to target: bdhf and hf tie at 1 update, against adam's 8 updates (8×); "
        "within the seeds' spread, the seeds overlap (bdhf and hf 1–∞ updates, adam 8 updates)."
    )
    # seconds: every bdhf seed (2) beats every hf seed (3, 3, inf)
    assert lines[4] == (
        "Fewest training seconds to target: bdhf, 2 s, against hf's 3 s (1.5×); this exceeds "
        "the seeds' spread (seeds: bdhf 2 s, hf 3–∞ s). Seconds measured on device cpu, CPU X, "
        "threads 1."
    )
    assert lines[5].startswith("Fewest gradient-equivalents to target: bdhf, 4 grad-eq, against")
    assert "exceeds the seeds' spread" in lines[5]
    # final test loss: adam 90/92/94 vs bdhf 95/95/95 -> disjoint
    assert lines[6] == (
        "Lowest final test loss (mean over seeds): adam, 92, against bdhf's 95; this exceeds the "
        "seeds' spread (seeds: adam 90–94, bdhf 95)."
    )
    assert len(lines) == 7


def test_a_miss_is_reported_with_its_best_value_and_a_lead_can_be_within_the_spread(
    scenario: Path,
) -> None:
    # P1: adam (lr=0.001) reached at [2, 4, 6, miss] s -> median 5 s, [4, 8, 12, inf] updates
    # -> 10; bdhf (fraction 1/8) at 12 s on all seeds -> 6 updates; hf (fraction 1/4, the
    # better validation) reached on 1 of 4 seeds -> not reached, best test accuracy 0.5 after
    # 16 updates
    _, lines = _lines(scenario, P1)
    assert lines[2] == (
        "hf: not reached: best test accuracy 0.5 after 16 updates (medians over seeds; 1/4 seeds "
        "reached); final test accuracy 0.5 ± 0."
    )
    assert lines[3] == (
        "Fewest updates to target: bdhf, 6 updates, against adam's 10 updates (1.7×); within "
        "the seeds' spread, the seeds overlap (bdhf 6 updates, adam 4–∞ updates)."
    )
    assert lines[4].startswith(
        "Fewest training seconds to target: adam, 5 s, against bdhf's 12 s (2.4×); within the "
        "seeds' spread, the seeds overlap (adam 2–∞ s, bdhf 12 s)."
    )
    # final test accuracy: means 0.5 (adam), 0.5 (bdhf) and 0.5 (hf): a three-way tie
    assert (
        lines[6] == "Highest final test accuracy (mean over seeds): adam, bdhf and hf tie at 0.5."
    )


def test_nobody_reaching_the_target_names_no_winner(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for seed in (1, 2):
        write_run(root, seed=seed, final_test=0.5, final_valid=0.5)
        write_run(root, optimizer="bdhf", seed=seed, final_test=0.625, final_valid=0.5)
    _, lines = _lines(root, "mnist_mlp")
    assert lines[:3] == [
        "adam: not reached: best test accuracy 0.5 after 16 updates (medians over seeds; 0/2 "
        "seeds reached); final test accuracy 0.5 ± 0.",
        "bdhf: not reached: best test accuracy 0.625 after 16 updates (medians over seeds; 0/2 "
        "seeds reached); final test accuracy 0.625 ± 0.",
        "No optimizer reached the target within the budget: no winner in any unit "
        "(2 optimizers tried).",
    ]
    assert not any(line.startswith("Fewest") for line in lines)


def test_one_seed_leaves_the_spread_unknown(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_run(root, seed=1, reached_seconds=1.0)
    write_run(root, optimizer="bdhf", seed=1, reached_seconds=4.0)
    _, lines = _lines(root, "mnist_mlp")
    assert lines[3] == (
        "Fewest training seconds to target: adam, 1 s, against bdhf's 4 s (4×); one seed only, "
        "so the seeds' spread is unknown. Seconds measured on M."
    )


def _contender(name: str) -> Contender:
    return Contender(name, {}, {}, 0, 0, math.nan, 0.0, 0.0, 0.0, 0)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 2.0, 2.5], [3.0, 4.0, 5.0], "exceeds"),
        ([1.0, 2.0, 3.0], [3.0, 4.0, 5.0], "within"),  # a tie between seeds is not a clear lead
        ([1.0, 2.0, INF], [3.0, 4.0, 5.0], "within"),  # a missed seed of the leader
        ([1.0, 2.0, 2.0], [3.0, INF, INF], "exceeds"),  # the runner-up's median is a miss
    ],
)
def test_compare_calls_a_lead_clear_only_when_the_seeds_are_disjoint(a, b, expected) -> None:
    pool = [_contender("a"), _contender("b")]
    medians = {"a": float(np.median(a)), "b": float(np.median(b))}
    text = compare(pool, medians, {"a": np.array(a), "b": np.array(b)}, "s")
    assert text.startswith("a, ") and expected in text


def test_compare_with_higher_is_better_picks_the_largest() -> None:
    pool = [_contender("a"), _contender("b")]
    seeds = {"a": np.array([0.5, 0.6]), "b": np.array([0.7, 0.8])}
    text = compare(pool, {"a": 0.55, "b": 0.75}, seeds, "", higher_better=True, ratio=False)
    assert text == (
        "b, 0.75, against a's 0.55; this exceeds the seeds' spread (seeds: b 0.7–0.8, a 0.5–0.6)."
    )


def test_the_headline_opens_both_pages(scenario: Path, tmp_path: Path) -> None:
    summary = build_report([scenario], tmp_path / "out")
    text = summary.leaderboard.read_text()
    assert text.index("## Headline") < text.index("## Leaderboard") < text.index("## About")
    assert text.split("\n## ")[1].startswith("Headline")
    html = summary.html.read_text()
    assert html.index('<section id="headline">') < html.index('<section id="leaderboard">')
    assert "Fewest training seconds to target: bdhf, 2 s" in html


def test_most_seeds_missing_is_not_called_nobody_reaching(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for seed, reached in ((1, 1.0), (2, None)):  # median of [x, inf] is inf
        write_run(root, seed=seed, reached_seconds=reached)
        write_run(root, optimizer="bdhf", seed=seed)
    _, lines = _lines(root, "mnist_mlp")
    assert lines[2] == (
        "No optimizer reached the target on more than half of its seeds (every median is "
        "infinite): no winner in any unit (2 optimizers tried)."
    )


def test_a_deepobs_only_seed_adds_no_unknown_step_count(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_run(root, seed=1, num_epochs=2)
    write_run(root, seed=2, num_epochs=2, diverged_after=1)  # 12 updates
    keys = ("testproblem", "batch_size", "num_epochs", "random_seed", "optimizer_name")
    keys += ("optimizer_hyperparams", "train_losses", "valid_losses", "test_losses")
    keys += ("train_accuracies", "valid_accuracies", "test_accuracies")
    doc = make_run(seed=3)
    deepobs = {k: doc[k] for k in keys}  # no steps, no timing: DeepOBS's own file
    write_doc(root, deepobs, name="random_seed__3__deepobs.json")
    opening, lines = _lines(root, "mnist_mlp")
    assert opening.startswith("mnist_mlp (synthetic/unknown data), budget 2 epochs")
    # best test accuracy 0.9 and 0.5 (diverged after one epoch): median 0.7; updates 16 and 12
    assert lines[0] == (
        "adam: not reached: best test accuracy 0.7 after 14 updates (medians over seeds; 0/2 "
        "seeds reached); final test accuracy 0.9 ± 0."
    )
