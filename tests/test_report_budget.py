"""Budgets are part of the comparison (rows, selection and Adam's step cost are per budget; a
mixed folder says so), the machine is shown beside every per-second figure, and a figure with
nothing to show is a sentence instead."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from test_report_helpers import make_run, write_doc, write_run

from bdhf_bench.report import build_report, load_results, setting_table, summary_table
from bdhf_bench.report.profiles import time_matrix
from bdhf_bench.report.tables import machine

STEPS = {"epochs": None, "steps": 16, "time_budget": None, "eval_every": 8}
CPU = {"threads": 1, "cpu": "Example CPU 9000"}


def _write(root: Path, budget: dict | None, **kwargs) -> None:
    doc = make_run(budget=budget, **kwargs)
    tag = "steps" if budget else "epochs"
    write_doc(root, doc, name=f"random_seed__{doc['random_seed']}__{tag}.json")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """adam under two budgets: lr=0.1 has the best validation overall but only under the step
    budget; under the epoch budget lr=0.001 is the only setting. bdhf ran the step budget only."""
    root = tmp_path_factory.mktemp("budgets") / "results"
    for seed in (1, 2):
        _write(root, None, seed=seed, final_valid=0.5, reached_seconds=4.0, environment=CPU)
        _write(root, STEPS, seed=seed, hps={"lr": 0.1}, final_valid=0.875, reached_seconds=2.0)
        _write(root, STEPS, seed=seed, final_valid=0.75, reached_seconds=3.0)
        _write(
            root,
            STEPS,
            optimizer="bdhf",
            seed=seed,
            final_valid=0.5,
            reached_seconds=6.0,
            seconds_per_step=2.0,
        )
    return root


def test_selection_and_step_cost_stay_within_one_budget(mixed: Path) -> None:
    settings = setting_table(load_results([mixed]).runs)
    summary = summary_table(settings).set_index(["budget", "optimizer"])
    assert list(summary.index) == [
        ("16 steps, eval every 8", "adam"),
        ("16 steps, eval every 8", "bdhf"),
        ("2 epochs", "adam"),
    ]
    # the epoch budget keeps its own (only) setting although lr=0.1 validates better elsewhere
    assert summary.loc[("2 epochs", "adam"), "setting"].startswith("lr=0.001 |")
    assert summary.loc[("2 epochs", "adam"), "n_settings"] == 1
    assert summary.loc[("16 steps, eval every 8", "adam"), "setting"].startswith("lr=0.1 |")
    assert summary.loc[("16 steps, eval every 8", "adam"), "n_settings"] == 2
    # bdhf's 2 s per update against the step budget's adam (0.5 s), not a mix of budgets
    assert summary.loc[("16 steps, eval every 8", "bdhf"), "overhead_vs_adam"] == 4.0
    times = time_matrix(summary.reset_index(), "seconds_to_target")
    assert list(times.index) == ["mnist_mlp (16 steps, eval every 8)", "mnist_mlp (2 epochs)"]
    assert times.loc["mnist_mlp (2 epochs)", "adam"] == 4.0
    assert times.loc["mnist_mlp (16 steps, eval every 8)", "adam"] == 2.0


def test_a_mixed_folder_says_so_and_shows_the_machine(mixed: Path, tmp_path: Path) -> None:
    text = build_report([mixed], tmp_path / "out").leaderboard.read_text()
    headline = text.split("\n## ")[1]
    assert (
        "These results mix budgets (mnist_mlp: 16 steps, eval every 8, 2 epochs). Runs are "
        "compared, and settings selected, only within one budget" in headline
    )
    assert headline.count("mnist_mlp (synthetic data), budget ") == 2
    # recorded threads and CPU where the files have them, "unknown" where they do not
    assert "Seconds measured on device cpu, CPU Example CPU 9000, threads 1." in headline
    assert "Seconds measured on device cpu, CPU unknown, threads unknown." in headline
    profile = next(line for line in text.splitlines() if line.startswith("*seconds: ratio"))
    assert "seconds on adam: device cpu, CPU Example CPU 9000, threads 1; adam: " in profile
    assert "| mnist_mlp | 2 epochs | adam |" in text
    assert "| mnist_mlp | 16 steps, eval every 8 | bdhf |" in text
    figures = sorted(p.name for p in (tmp_path / "out" / "figures").glob("curves_*"))
    assert figures == [
        "curves_mnist_mlp_16_steps_eval_every_8.png",
        "curves_mnist_mlp_2_epochs.png",
    ]


def test_nothing_reached_draws_no_empty_figure(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for seed in (1, 2):
        write_doc(root, make_run(seed=seed))
        write_doc(root, make_run(optimizer="bdhf", seed=seed))
    summary = build_report([root], tmp_path / "out")
    drawn = sorted(p.name for p in summary.written if p.suffix == ".png")
    assert drawn == ["curves_mnist_mlp.png"]
    text = summary.leaderboard.read_text()
    for label in ("seconds", "gradient-equivalents"):
        assert (
            "No optimizer reached the target on its one problem: every "
            f"{label} ratio is infinite, so there is no {label} profile to draw." in text
        )
    assert "No optimizer reached the target on mnist_mlp" in text


@pytest.mark.parametrize(
    ("recorded", "shown"),
    [
        (("NVIDIA H200", "AMD EPYC", "4"), "device NVIDIA H200, CPU AMD EPYC, threads 4"),
        (("AMD EPYC", "AMD EPYC", "1"), "CPU AMD EPYC, threads 1"),  # a CPU run
        (("x86_64", "", ""), "device x86_64, CPU unknown, threads unknown"),  # an older file
    ],
)
def test_machine_label(recorded: tuple[str, str, str], shown: str) -> None:
    device_name, cpu, threads = recorded
    row = SimpleNamespace(device_name=device_name, cpu=cpu, threads=threads)
    assert machine(row) == shown


def test_runs_that_shared_the_machine_are_named_beside_the_seconds(tmp_path: Path) -> None:
    root = tmp_path / "r"
    cpu = {**CPU, "device_name": CPU["cpu"]}
    for seed in (1, 2):
        write_run(root, seed=seed, environment={**cpu, "runs_at_once": 2})
        write_run(root, optimizer="bdhf", seed=seed, environment={**cpu, "runs_at_once": 1})
    summary = summary_table(setting_table(load_results([root]).runs))
    shown = {r.optimizer: machine(r) for r in summary.itertuples(index=False)}
    assert shown == {
        "adam": "CPU Example CPU 9000, threads 1, 2 runs at once",
        "bdhf": "CPU Example CPU 9000, threads 1",
    }
