"""Runs a follow-up hook adds while a grid runs: every executor runs them, as soon as they are
added, once each, with their outcomes after the given specs' (the suite starts a tuning's final
seeds this way the moment that tuning's search ends). Runs the results folder already holds
start first, so the progress line counts them from the start."""

from __future__ import annotations

import pytest
import torch
from runner_helpers import load, result_files

from bdhf_bench.optim import get_optimizer
from bdhf_bench.runner import Budget, Execution, ResultStore, RunSpec
from bdhf_bench.runner.executors import LocalExecutor, finished_first


def _spec(lr: float, seed: int = 42) -> RunSpec:
    hps = get_optimizer("adam").resolve({"lr": lr})
    return RunSpec("tiny_mlp", "adam", hps, seed, 50, Budget(steps=2))


def check_follow_ups(executor, tmp_path) -> None:
    """Two given runs; the first one's end adds two more, the second's none."""
    given = [_spec(1e-3), _spec(1e-2)]
    extra = [_spec(1e-3, seed=7), _spec(1e-1)]
    calls = []

    def follow_up(i, outcome):
        calls.append((i, outcome.spec))
        return extra if outcome.spec == given[0] else []

    lines: list[str] = []
    executor.echo = lines.append
    outcomes = executor.run(given, ResultStore(tmp_path), follow_up)
    assert [o.spec for o in outcomes] == given + extra
    assert [o.status for o in outcomes] == ["finished"] * 4
    # called once per run that ended, with that run's index in the grown list
    assert sorted((i, s) for i, s in calls) == list(enumerate(given + extra))
    ran = sorted(
        (r["optimizer_hyperparams"]["lr"], r["random_seed"])
        for r in map(load, result_files(tmp_path))
    )
    assert ran == [(1e-3, 7), (1e-3, 42), (1e-2, 42), (1e-1, 42)]
    assert "runs: 4/4 done, 0 running, 0 failed" in lines[-1]


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executor_runs_what_a_follow_up_adds(tmp_path, workers):
    check_follow_ups(
        LocalExecutor(workers, Execution(torch.device("cpu"), progress=False)), tmp_path
    )


def test_runs_the_folder_holds_are_started_first_in_their_given_order(tmp_path):
    store = ResultStore(tmp_path)
    specs = [_spec(1e-3), _spec(1e-2), _spec(3e-3), _spec(3e-2)]
    LocalExecutor(1, Execution(torch.device("cpu"), progress=False)).run(
        [specs[3], specs[1]], store
    )
    assert finished_first(specs, store) == [1, 3, 0, 2]


def test_a_reused_run_is_counted_before_the_runs_that_train(tmp_path):
    """The progress line's count and ETA are right from the start: a run finished before this
    call settles first, not when the queue reaches it behind the runs that train."""
    executor = LocalExecutor(1, Execution(torch.device("cpu"), progress=False))
    store = ResultStore(tmp_path)
    before = _spec(1e-2)
    executor.run([before], store)
    lines: list[str] = []
    executor.echo = lines.append
    outcomes = executor.run([_spec(1e-3), _spec(3e-3), before], store)
    assert [o.status for o in outcomes] == ["finished", "finished", "skipped"]
    assert lines[0].startswith("reused: ") and "runs: 1/3 done" in lines[0]
    assert all(line.startswith("finished: ") for line in lines[1:])
