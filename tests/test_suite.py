"""Suites: the shipped ones load, sweeps expand, mistakes fail before any run, the leaderboard
command runs a suite and writes its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_helpers import cli, load, result_files

from bdhf_bench.runner.run import RunOutcome
from bdhf_bench.runner.store import ResultStore
from bdhf_bench.runner.suite import SuiteError, load_suite, run_suite


def test_shipped_suites_load():
    ci = load_suite("ci")
    problems = ("mnist1d_mlp", "mnist1d_cnn", "mnist1d_lstm", "digits_autoencoder")
    tuned = {(t.problem.name, t.entry.name) for t in ci.tunings}
    # every optimizer tuned on every problem; on the LSTM with CG capped (the suite's cost)
    optimizers = ("adam", "bdhf", "hf", "kfac", "soap")
    assert tuned == {(p, o) for p in problems for o in optimizers}
    # Adam, K-FAC and SOAP: 3 settings; BDHF and HF: 2; each then the 3 final seeds
    assert ci.runs == [] and ci.size() == 12 * (3 + 3) + 8 * (2 + 3)
    caps = {
        t.entry.name: {s["cg_max_iters"] for s in t.settings}
        for t in ci.tunings
        if t.problem.name == "mnist1d_lstm" and t.entry.name in ("bdhf", "hf")
    }
    assert caps == {"bdhf": {10}, "hf": {20}}
    assert {t.data for t in ci.tunings} == {"real"}
    assert all(t.final_seeds == [42, 43, 44] for t in ci.tunings)
    small = load_suite("small")
    assert len(small.tunings) == 20 and all(len(t.final_seeds) == 10 for t in small.tunings)
    old = load_suite("paper_cpu_60_updates")
    fractions = {
        (s.problem, s.optimizer, s.hyperparameters["curvature_fraction"]) for s in old.runs
    }
    assert len(fractions) == 2 * 2 * 4
    assert str(old.report) == "reports/paper/60_update_study"


def test_the_time_to_target_suites():
    autoencoder, lstm = load_suite("paper_cpu"), load_suite("paper_cpu_lstm")
    assert (autoencoder.results, autoencoder.report) == (lstm.results, lstm.report)
    tunings = autoencoder.tunings + lstm.tunings
    assert not autoencoder.runs and not lstm.runs and len(tunings) == 6
    assert {t.problem.name for t in autoencoder.tunings} == {"mnist_autoencoder"}
    assert {t.problem.name for t in lstm.tunings} == {"smnist_lstm"}
    for plan in tunings:
        # the same tuning budget for every optimizer, and a budget that stops at the target
        assert len(plan.settings) == 8 and plan.final_seeds == [42, 43, 44]
        assert plan.budget.stop_at_target and plan.budget.patience and plan.eval_every == 10
        assert plan.data == "real" and plan.problem.target.split == "valid"
    bdhf = [t for t in tunings if t.entry.name == "bdhf"]
    knobs = ("blocks", "rescale", "damping_mode", "damping", "curvature_fraction", "cg_max_iters")
    for plan in bdhf:
        # BDHF's design space: every knob takes two or more values among the 8 settings
        assert all(len({s[k] for s in plan.settings}) >= 2 for k in knobs), plan.problem.name
    sizes = load_suite("paper_cpu_batch_size")
    batches = {t.batch_size for t in sizes.tunings}
    assert batches >= {100, 200, 500, 1000}
    assert {t.entry.name for t in sizes.tunings} == {"adam", "hf", "bdhf"}
    assert len({len(t.settings) for t in sizes.tunings}) == 1  # equal tuning budgets
    assert all(t.problem.name == "mnist_autoencoder" for t in sizes.tunings)


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
    shipped = sorted(path.stem for path in (Path(__file__).parents[1] / "runners").glob("*.toml"))
    assert {"ci", "paper_cpu", "small"} <= set(shipped)
    assert "valid: " + ", ".join(shipped) in lines[0]


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
    assert again.exit_code == 0 and again.output.count("reused:") == 8


class _SimulatedExecutor:
    """Runs nothing: every run ends with a made-up validation accuracy, runs that ``slow``
    picks end after all the others, and the follow-up hook is honoured as an executor must
    (its specs join the queue). Records what ended and what was added, in order."""

    def __init__(self, accuracy, slow):
        self.accuracy, self.slow = accuracy, slow
        self.events = []

    def run(self, specs, store, follow_up=None, expected=()):
        queue, outcomes = list(specs), {}
        while len(outcomes) < len(queue):
            open_ = [i for i in range(len(queue)) if i not in outcomes]
            fast = [i for i in open_ if not self.slow(queue[i])]
            i = (fast or open_)[0]
            spec = queue[i]
            result = {"status": "finished", "valid_accuracies": [0.1, self.accuracy(spec)]}
            outcomes[i] = RunOutcome(spec, "finished", result=result)
            self.events.append(("ended", spec))
            added = list(follow_up(i, outcomes[i])) if follow_up else []
            self.events += [("added", a) for a in added]
            queue += added
        return [outcomes[i] for i in range(len(queue))]


def test_a_tunings_final_seeds_start_when_its_own_search_ends(tmp_path):
    (tmp_path / "lr.toml").write_text("optimizer = 'adam'\n[grid]\nlr = [0.001, 0.01, 0.1]\n")
    suite = load_suite(
        _write(
            tmp_path,
            "[defaults]\nsteps = 2\nseeds = [1, 2, 3]\ndata = 'synthetic'\n"
            "[[experiment]]\nproblem = 'tiny_mlp'\noptimizers = ['adam', 'sgd']\n"
            "batch_size = 16\ntune = { adam = 'lr.toml' }\n"
            "[[experiment]]\nproblem = 'tiny_mlp'\noptimizers = ['adam']\nbatch_size = 32\n"
            "tune = { adam = 'lr.toml' }\n",
        )
    )
    best = {16: 0.01, 32: 0.1}  # a different winner per experiment

    def accuracy(spec):
        return 0.9 if spec.hyperparameters["lr"] == best[spec.batch_size] else 0.5

    def slow(spec):  # the batch-32 search is the slowest of the suite
        return spec.batch_size == 32 and spec.seed == 1

    executor = _SimulatedExecutor(accuracy, slow)
    outcomes = run_suite(suite, ResultStore(tmp_path / "results"), executor)
    events = [(kind, s.batch_size, s.hyperparameters["lr"], s.seed) for kind, s in executor.events]
    added = [e[1:] for e in events if e[0] == "added"]
    assert sorted(added) == [(b, best[b], seed) for b in (16, 32) for seed in (1, 2, 3)]
    # the batch-16 finals join the queue while the batch-32 search still runs ...
    search_32 = [events.index(("ended", 32, lr, 1)) for lr in (0.001, 0.01, 0.1)]
    assert events.index(("added", 16, 0.01, 1)) < min(search_32)
    # ... and the batch-32 finals only once its last search run has ended
    assert events.index(("added", 32, 0.1, 1)) > max(search_32)
    ended_adam = sorted(
        (s.batch_size, s.hyperparameters["lr"], s.seed)
        for kind, s in executor.events
        if kind == "ended" and s.optimizer == "adam"
    )
    assert ended_adam == sorted(
        [(b, lr, 1) for b in (16, 32) for lr in (0.001, 0.01, 0.1)]
        + [(b, best[b], s) for b in (16, 32) for s in (1, 2, 3)]
    )
    ended_sgd = [(s.batch_size, s.seed) for k, s in executor.events if s.optimizer == "sgd"]
    assert sorted(ended_sgd) == [(16, 1), (16, 2), (16, 3)]  # the fixed runs, from the start
    assert len(outcomes) == 6 + 3 + 6


@pytest.mark.parametrize(
    ("line", "given", "expected"),
    [("workers = 4\n", [], 3), ("workers = 2\n", [], 2), ("", [], 1), ("workers = 2\n", ["5"], 5)],
)
def test_leaderboard_workers_default_to_the_suites_at_most_the_cores(
    tmp_path, monkeypatch, line, given, expected
):
    import click

    import bdhf_bench.cli.leaderboard as leaderboard_module

    seen = []

    def executor(kind, address, workers, *rest):
        seen.append(workers)
        raise click.ClickException("stop here")

    monkeypatch.setattr(leaderboard_module, "make_executor", executor)
    monkeypatch.setattr(leaderboard_module, "cores", lambda: 3)
    suite = _write(
        tmp_path, f"{line}[[experiment]]\nproblem = 'tiny_mlp'\noptimizers = ['adam']\nsteps = 1\n"
    )
    workers = ["--workers", *given] if given else []
    res = cli("leaderboard", "--suite", suite, "--results", str(tmp_path / "r"), *workers)
    assert "stop here" in res.output and seen == [expected]


def test_suite_workers_must_be_a_positive_integer(tmp_path):
    for bad in ("0", "1.5", "true", '"2"'):
        path = _write(tmp_path, f"workers = {bad}\n[[experiment]]\nproblem = 'tiny_mlp'\n")
        with pytest.raises(SuiteError, match="workers must be a positive integer"):
            load_suite(path)
