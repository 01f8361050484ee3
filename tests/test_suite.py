"""Suites: the shipped ones load, sweeps expand, mistakes fail before any run, the leaderboard
command runs a suite and writes its report."""

from __future__ import annotations

import pytest
from runner_helpers import cli, load, result_files

from bdhf_bench.runner.suite import SuiteError, load_suite


def test_shipped_suites_load():
    ci = load_suite("ci")
    problems = ("mnist1d_mlp", "mnist1d_cnn", "mnist1d_lstm", "digits_autoencoder")
    tuned = {(t.problem.name, t.entry.name) for t in ci.tunings}
    fixed = {(s.problem, s.optimizer) for s in ci.runs}
    # every optimizer on every problem, tuned except the LSTM's HF methods (fixed damping)
    assert tuned | fixed == {(p, o) for p in problems for o in ("adam", "bdhf", "hf")}
    assert fixed == {("mnist1d_lstm", "bdhf"), ("mnist1d_lstm", "hf")}
    assert ci.size() == 60 and len(ci.runs) == 6
    assert {s.data for s in ci.runs} == {"real"} == {t.data for t in ci.tunings}
    assert {s.seed for s in ci.runs} == {42, 43, 44}
    assert all(t.final_seeds == [42, 43, 44] for t in ci.tunings)
    small = load_suite("small")
    assert len(small.tunings) == 20 and all(len(t.final_seeds) == 10 for t in small.tunings)
    paper = load_suite("paper_cpu")
    fractions = {
        (s.problem, s.optimizer, s.hyperparameters["curvature_fraction"]) for s in paper.runs
    }
    assert len(fractions) == 2 * 2 * 4


def _write(tmp_path, text):
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[[experiment]]\nproblem='tiny_mlp'\noptimizers=['adam']\nstep=3",
            "unknown key(s) ['step']",
        ),
        ("[[experiment]]\nproblem='tiny_mpl'\noptimizers=['adam']", "unknown problem 'tiny_mpl'"),
        ("[[experiment]]\nproblem='tiny_mlp'\noptimizers=['adma']", "unknown optimizer 'adma'"),
        ("description='x'", "needs at least one [[experiment]]"),
        (
            "[[experiment]]\nproblem='tiny_mlp'\noptimizers=['adam']\nsweep={lr=3}",
            "non-empty lists",
        ),
        (
            "[[experiment]]\nproblem='tiny_mlp'\noptimizers=['adam']\nhyperparameters={adam={lr=-1}}",
            "lr=-1.0 is out of range",
        ),
    ],
)
def test_bad_suites_fail_with_one_line(tmp_path, text, message):
    with pytest.raises(SuiteError, match=r"experiment|suite") as err:
        load_suite(_write(tmp_path, text))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_suite_name_lists_the_valid_ones(tmp_path):
    res = cli("leaderboard", "--suite", "cii", "--results", str(tmp_path / "r"))
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "unknown suite 'cii' (did you mean ci" in lines[0]
    assert "valid: ci, paper, paper_cpu, small" in lines[0]


def test_leaderboard_runs_a_suite_and_writes_its_report(tmp_path):
    suite = _write(
        tmp_path,
        "[defaults]\nsteps = 4\neval_every = 2\nseeds = [1, 2]\n"
        "[[experiment]]\nproblem = 'tiny_mlp'\noptimizers = ['adam', 'sgd']\n"
        "sweep = { lr = [0.01, 0.1] }\n",
    )
    out, report = tmp_path / "results", tmp_path / "report"
    res = cli(
        "leaderboard",
        "--suite",
        suite,
        "--results",
        str(out),
        "--out",
        str(report),
        "-q",
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    runs = [load(p) for p in result_files(out)]
    assert sorted(
        (r["optimizer_name"], r["optimizer_hyperparams"]["lr"], r["random_seed"]) for r in runs
    ) == sorted((o, lr, s) for o in ("adam", "sgd") for lr in (0.01, 0.1) for s in (1, 2))
    text = (report / "leaderboard.md").read_text()
    assert "tiny_mlp" in text and (report / "index.html").is_file()
    again = cli("leaderboard", "--suite", suite, "--results", str(out), "--out", str(report), "-q")
    assert again.exit_code == 0 and again.output.count("skipped:") == 8
