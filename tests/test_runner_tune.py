"""`bdhf-bench tune`: selection on validation only, seeds for the winner, shared folders."""

from __future__ import annotations

import math

from runner_helpers import cli, cli_subprocess, load, result_files

from bdhf_bench.optim import get_optimizer
from bdhf_bench.problems import get_problem
from bdhf_bench.runner import Budget, RunOutcome
from bdhf_bench.runner.tune import TunePlan, grid_settings, random_settings


def _outcome(valid_acc, test_acc, status="finished"):
    result = {
        "status": status,
        "valid_accuracies": [0.1, valid_acc],
        "test_accuracies": [0.1, test_acc],
        "valid_losses": [2.0, 1.0],
    }
    return RunOutcome(spec=None, status=status, result=result)


def test_selection_uses_validation_never_test():
    entry = get_optimizer("adam")
    settings = grid_settings(entry, {"lr": [1e-3, 1e-2, 1e-1]}, {})
    plan = TunePlan(get_problem("tiny_mlp"), entry, settings, 50, Budget(epochs=1), "real")
    outcomes = [_outcome(0.80, 0.99), _outcome(0.90, 0.50), _outcome(0.95, 0.10, "diverged")]
    best, score = plan.select(outcomes)
    assert best["lr"] == 1e-2 and score == 0.90


def test_random_search_stays_in_the_grid_range():
    entry = get_optimizer("bdhf")
    points = random_settings(
        entry, {"damping": [0.01, 10.0], "blocks": ["module", "all"]}, {}, trials=20, seed=1
    )
    assert len(points) == 20
    assert all(0.01 <= p["damping"] <= 10.0 for p in points)
    assert {p["blocks"] for p in points} == {"module", "all"}
    logs = [math.log10(p["damping"]) for p in points]
    assert min(logs) < -1 and max(logs) > 0  # log-uniform, not piled at the top
    assert random_settings(entry, {"damping": [0.01, 10.0]}, {}, 5, 7) == random_settings(
        entry, {"damping": [0.01, 10.0]}, {}, 5, 7
    )


def _grid(tmp_path, lrs):
    path = tmp_path / "grid.toml"
    path.write_text("[grid]\nlr = [" + ", ".join(lrs) + "]\n")
    return path


def _tune_args(grid, out, final_seeds: int) -> tuple[str, ...]:
    return (
        "tune",
        "-p",
        "tiny_mlp",
        "-o",
        "adam",
        "--grid",
        str(grid),
        "--epochs",
        "1",
        "--final-seeds",
        str(final_seeds),
        "--output-dir",
        str(out),
        "-q",
    )


def test_tune_end_to_end_selects_on_validation_and_reruns_the_winner(tmp_path):
    grid = _grid(tmp_path, ["1e-5", "3e-3", "1e-1"])
    out = tmp_path / "results"
    res = cli(*_tune_args(grid, out, final_seeds=2))
    assert res.exit_code == 0, res.output
    runs = [load(p) for p in result_files(out)]
    search = [r for r in runs if r["random_seed"] == 42]
    assert len(search) == 3
    best = max(search, key=lambda r: r["valid_accuracies"][-1])
    lr = best["optimizer_hyperparams"]["lr"]
    assert f"'lr': {lr}" in res.output
    finals = [r for r in runs if r["random_seed"] == 43]
    assert len(finals) == 1 and finals[0]["optimizer_hyperparams"]["lr"] == lr
    assert len(runs) == 4  # seed 42 of the winner is shared with the search


def test_two_tune_processes_share_a_folder_without_duplicates(tmp_path):
    grid = _grid(tmp_path, ["1e-3", "3e-3", "1e-2", "3e-2"])
    out = tmp_path / "shared"
    args = (*_tune_args(grid, out, final_seeds=3), "--device", "cpu")
    procs = [cli_subprocess(*args) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr
    files = result_files(out)
    keys = [(load(f)["optimizer_hyperparams"]["lr"], load(f)["random_seed"]) for f in files]
    assert len(keys) == len(set(keys)) == 4 + 2  # 4 search runs, 2 more seeds of the winner
    tally = [line for out_, _ in outputs for line in out_.splitlines() if " | runs: " in line]
    trained = [line for line in tally if line.startswith("finished:")]
    skipped = [line for line in tally if line.startswith("reused:")]
    # Each process goes through 4 search runs and 3 final seeds (one shared with the search):
    # every run was trained exactly once, and seen finished (or waited for) by the other.
    assert len(trained) == 6 and len(tally) == 2 * 7
    assert len(skipped) == 2 * 7 - 6
