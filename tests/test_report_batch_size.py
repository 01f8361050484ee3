"""The batch-size study: per (optimizer, batch size) the setting the tuning seed selects, the
median updates to the level over its seeds (a miss infinite), and the log-log figure's plotted
numbers, all on a hand-built results folder whose answers are worked out below by hand."""

from __future__ import annotations

import math

import pytest
from test_report_helpers import make_run, write_doc

from bdhf_bench.report.batch_size import (
    batch_size_figure,
    batch_size_table,
    first_reach,
    studied_problems,
)
from bdhf_bench.report.build import build_report
from bdhf_bench.report.load import load_results

EVERY = 10  # updates between evaluations
GE = 3.0  # gradient-equivalents per update
INF = math.inf


def _doc(optimizer: str, batch: int, lr: float, seed: int, reach: float):
    """A run whose validation loss falls 200 -> 150 -> ... and is <= 100 first at update
    ``reach`` (inf: never; it stays at 105), evaluated every 10 updates up to 60."""
    n = 7
    doc = make_run(
        problem="mnist_autoencoder",
        optimizer=optimizer,
        hps={"lr": lr},
        seed=seed,
        kind="loss",
        batch_size=batch,
        num_epochs=n - 1,
        target=("loss", "valid", 100.0),
        budget={"epochs": None, "steps": 60, "time_budget": None, "eval_every": EVERY},
    )
    for i, e in enumerate(doc["evaluations"]):
        step = i * EVERY
        e.update(step=step, gradient_equivalents=GE * step, train_seconds=0.5 * step)
        e["valid_loss"] = 99.0 if step >= reach else max(200.0 - 50 * i, 105.0)
    doc["valid_losses"] = [e["valid_loss"] for e in doc["evaluations"]]
    doc["steps"] = 60
    doc["minibatch_train_losses"] = [1.0] * 60
    doc["train_seconds"] = 30.0
    return doc


# (optimizer, batch, lr, seed, first update at or below 100)
RUNS = [
    # batch 100: the search (seed 42) prefers lr 1e-2 (20 < 40); its seeds reach at 20, 30, never
    ("adam", 100, 1e-3, 42, 40),
    ("adam", 100, 1e-2, 42, 20),
    ("adam", 100, 1e-2, 43, 30),
    ("adam", 100, 1e-2, 44, INF),
    ("adam", 200, 1e-3, 42, 20),
    ("adam", 200, 1e-3, 43, 20),
    ("adam", 200, 1e-3, 44, 40),
    ("adam", 400, 1e-3, 42, 10),
    ("adam", 400, 1e-3, 43, 20),
    ("adam", 400, 1e-3, 44, 20),
    ("hf", 100, 1.0, 42, 10),
    ("hf", 200, 1.0, 42, INF),
    ("hf", 400, 1.0, 42, 10),
]


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    for optimizer, batch, lr, seed, reach in RUNS:
        write_doc(root, _doc(optimizer, batch, lr, seed, reach))
    return root


def test_first_reach_reads_the_evaluations(results):
    evals = load_results([results]).evaluations
    runs = first_reach(evals, "loss", "valid", 100.0)
    assert len(runs) == len(RUNS)
    got = {
        (r.optimizer, r.batch_size, r.seed, r.setting.split(" | ")[0]): (r.updates, r.best)
        for r in runs.itertuples()
    }
    assert got[("adam", 100, 42, "lr=0.01")] == (20.0, 99.0)
    assert got[("adam", 100, 44, "lr=0.01")] == (INF, 105.0)
    one = runs[(runs.optimizer == "hf") & (runs.batch_size == 400)].iloc[0]
    assert (one.gradient_equivalents, one.seconds) == (GE * 10, 5.0)


def test_each_point_is_the_tuned_settings_median(results):
    evals = load_results([results]).evaluations
    assert studied_problems(evals) == ["mnist_autoencoder"]
    table = batch_size_table(evals, "mnist_autoencoder", "loss", "valid", 100.0)
    rows = {(r.optimizer, r.batch_size): r for r in table.itertuples()}
    adam100 = rows[("adam", 100)]
    assert adam100.setting.startswith("lr=0.01") and (adam100.n_seeds, adam100.n_reached) == (3, 2)
    assert adam100.updates == 30.0  # median of 20, 30, inf
    assert adam100.gradient_equivalents == GE * 30
    assert rows[("adam", 200)].updates == 20.0 and rows[("adam", 400)].updates == 20.0
    assert rows[("hf", 100)].updates == 10.0 and rows[("hf", 400)].updates == 10.0
    assert rows[("hf", 200)].updates == INF and rows[("hf", 200)].n_reached == 0


def test_the_figure_plots_those_numbers_log_log(results):
    evals = load_results([results]).evaluations
    table = batch_size_table(evals, "mnist_autoencoder", "loss", "valid", 100.0)
    fig = batch_size_figure(table, "mnist_autoencoder")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = {line.get_label(): line.get_xydata().tolist() for line in ax.get_lines()}
    assert lines["adam"] == [[100, 30], [200, 20], [400, 20]]
    # the miss at 200 breaks hf's line: no segment joins 100 and 400 across it
    assert lines["hf"][0] == [100, 10] and lines["hf"][2] == [400, 10]
    assert lines["hf"][1][0] == 200 and math.isnan(lines["hf"][1][1])
    assert lines["hf: not reached"] == [[200, 1.5 * 30]]  # above the largest finite median
    # under a decade of updates (10 to 30): the 1-2-5 values inside it are labelled, as numbers
    formatter = ax.yaxis.get_major_formatter()
    assert [(v, formatter(v, i)) for i, v in enumerate(ax.get_yticks())] == [(10, "10"), (20, "20")]


def test_the_report_draws_it(results, tmp_path):
    summary = build_report([results], tmp_path / "report")
    assert (tmp_path / "report" / "figures" / "batch_size_mnist_autoencoder.png").is_file()
    text = summary.leaderboard.read_text()
    assert "mnist_autoencoder: updates to target vs batch size" in text
    assert "| adam | 100 | 30 (2/3) | 90 |" in text
