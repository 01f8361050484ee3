"""Early stops for time-to-target studies: a run ends at its target or after ``patience`` steps
without a 1% improvement, records why (``stopped_early``) and, when it missed the target, how
it stalled (``stalled``); the early stops are part of a run's identity only when set; tuning
under ``stop_at_target`` selects the fewest updates to the target."""

from __future__ import annotations

import math

import pytest
import torch
from runner_helpers import without_timings

from bdhf_bench.optim import get_optimizer
from bdhf_bench.problems import get_problem
from bdhf_bench.runner.loop import Execution, Trainer, TrainState
from bdhf_bench.runner.run import RunOutcome, run_one
from bdhf_bench.runner.spec import Budget, RunSpec, setting_folder
from bdhf_bench.runner.store import ResultStore
from bdhf_bench.runner.suite import SuiteError, load_suite
from bdhf_bench.runner.tune import TunePlan, grid_settings

# tiny_mlp's target: test accuracy 0.90 (problems/targets.py)


def _spec(optimizer="adam", hps=None, **budget) -> RunSpec:
    hps = get_optimizer(optimizer).resolve(hps or {})
    return RunSpec(
        "tiny_mlp", optimizer, hps, 42, 50, Budget(**budget), eval_every=5, data="synthetic"
    )


def _run(tmp_path, spec: RunSpec) -> dict:
    out = run_one(spec, ResultStore(tmp_path), Execution(torch.device("cpu"), progress=False))
    assert out.status == "finished", out
    return out.load()


def test_a_run_stops_at_the_evaluation_that_meets_its_target(tmp_path):
    full = _run(tmp_path / "a", _spec(hps={"lr": 1e-2}, steps=60))
    reached = full["target"]["reached"]["step"]
    assert 0 < reached < 60 and full["stopped_early"] is None and full["stalled"] is None
    early = _run(tmp_path / "b", _spec(hps={"lr": 1e-2}, steps=60, stop_at_target=True))
    assert early["stopped_early"] == {"reason": "target", "step": reached}
    assert early["steps"] == reached and early["stalled"] is None
    assert early["budget"]["stop_at_target"] is True and early["budget"]["patience"] is None
    # the same run up to there: every evaluation equal, timings aside
    n = len(early["evaluations"])
    assert without_timings(early)["evaluations"] == without_timings(full)["evaluations"][:n]


def test_a_run_without_progress_stops_after_patience_and_records_the_stall(tmp_path):
    # SGD at lr 1e-7 does not move the test accuracy: no 1% improvement after step 0
    r = _run(tmp_path, _spec("sgd", {"lr": 1e-7}, steps=100, patience=12))
    first = r["evaluations"][0]["test_accuracy"]
    assert r["target"]["reached"] is None
    # evaluations every 5 steps: 15 is the first with 12 steps since the last improvement (0)
    assert r["stopped_early"] == {"reason": "no_improvement", "step": 15} and r["steps"] == 15
    best = max(e["test_accuracy"] for e in r["evaluations"])
    assert best == pytest.approx(first, rel=0.01)
    assert r["stalled"] == {
        "metric": "accuracy",
        "split": "test",
        "target": 0.9,
        "best": best,
        "best_step": next(e["step"] for e in r["evaluations"] if e["test_accuracy"] == best),
        "last_improvement_step": 0,
        "steps": 15,
        "reason": "no_improvement",
        "patience": 12,
        "tolerance": 0.01,
    }


def test_a_budget_that_ends_short_of_the_target_is_a_stall_by_budget(tmp_path):
    r = _run(tmp_path, _spec("sgd", {"lr": 1e-7}, steps=10))
    assert r["stopped_early"] is None
    assert r["stalled"]["reason"] == "budget" and r["stalled"]["steps"] == 10
    assert r["stalled"]["patience"] is None


def _trainer(evaluations, root, patience=20) -> Trainer:
    spec = _spec(steps=500, patience=patience)
    trainer = Trainer(spec, ResultStore(root), Execution(torch.device("cpu")), context={})
    trainer.state = TrainState(evaluations=evaluations, step=evaluations[-1]["step"])
    return trainer


def test_improvement_is_counted_from_the_last_one_percent_gain(tmp_path):
    accs = [(0, 0.50), (10, 0.504), (20, 0.506), (30, 0.52), (40, 0.51), (50, 0.524)]
    evals = [{"step": s, "test_accuracy": a} for s, a in accs]
    trainer = _trainer(evals, tmp_path, patience=25)
    # 0.504 and 0.506 are within 1% of 0.50; 0.52 is not (the anchor moves to step 30);
    # 0.524 is a new best but within 1% of 0.52
    assert trainer._progress_of_target() == (0.524, 50, 30)
    assert not trainer._stop_early()  # 50 - 30 < 25
    trainer.state.evaluations.append({"step": 60, "test_accuracy": math.nan})
    trainer.state.step = 60
    assert trainer._progress_of_target() == (0.524, 50, 30)  # a NaN is no value
    assert trainer._stop_early()
    assert trainer.state.stopped_early == {"reason": "no_improvement", "step": 60}


def test_early_stops_are_in_the_identity_only_when_set():
    plain, early = _spec(steps=60), _spec(steps=60, patience=30, stop_at_target=True)
    assert plain.identity()["budget"] == {"epochs": None, "steps": 60, "seconds": None}
    assert plain.run_id != early.run_id
    assert RunSpec.from_identity(early.identity()) == early
    assert RunSpec.from_identity(plain.identity()) == plain
    folder = setting_folder(early, 12, None, get_optimizer("adam").resolve({}))
    assert folder.endswith("__budget_steps__60__eval_every__5__patience__30__stop_at_target__True")
    with pytest.raises(ValueError, match="patience must be a positive number of steps, got 0"):
        Budget(steps=5, patience=0)


def test_suite_keys(tmp_path):
    path = tmp_path / "s.toml"
    body = '[[experiment]]\nproblem = "tiny_mlp"\noptimizers = ["adam"]\nsteps = 50\n'
    path.write_text(body + "patience = 20\nstop_at_target = true\n")
    (run,) = load_suite(str(path)).runs
    assert run.budget == Budget(steps=50, patience=20, stop_at_target=True)
    path.write_text(body + 'stop_at_target = "yes"\n')
    with pytest.raises(SuiteError, match="stop_at_target must be a boolean, got 'yes'"):
        load_suite(str(path))


def _outcome(reached_step, valid_acc):
    result = {
        "status": "finished",
        "valid_accuracies": [0.1, valid_acc],
        "target": {"reached": None if reached_step is None else {"step": reached_step}},
    }
    return RunOutcome(spec=None, status="finished", result=result)


@pytest.mark.parametrize("stop", [False, True])
def test_selection_under_stop_at_target_is_fewest_updates_to_the_target(stop):
    entry = get_optimizer("adam")
    settings = grid_settings(entry, {"lr": [1e-3, 1e-2, 1e-1, 1.0]}, {})
    budget = Budget(steps=100, stop_at_target=stop)
    plan = TunePlan(get_problem("tiny_mlp"), entry, settings, 50, budget, "synthetic")
    outcomes = [_outcome(None, 0.89), _outcome(40, 0.91), _outcome(25, 0.90), _outcome(None, 0.95)]
    best, score = plan.select(outcomes)
    assert best["lr"] == (1e-1 if stop else 1.0) and score == (0.90 if stop else 0.95)


class _Crash(Exception):
    """Stands for a kill right after a checkpoint."""


def test_a_resumed_run_stops_early_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    spec = _spec("sgd", {"lr": 1e-7}, steps=100, patience=12)
    straight = _run(tmp_path / "straight", spec)
    assert straight["stopped_early"] == {"reason": "no_improvement", "step": 15}
    store = ResultStore(tmp_path / "crashed")
    real_save = store.save_checkpoint

    def save_then_crash(spec, state):
        real_save(spec, state)
        if state["state"]["step"] >= 11:  # past the evaluation at 10, short of the stop at 15
            raise _Crash

    monkeypatch.setattr(store, "save_checkpoint", save_then_crash)
    execution = Execution(torch.device("cpu"), progress=False, checkpoint_every=0.0)
    with pytest.raises(_Crash):
        run_one(spec, store, execution)
    assert any((tmp_path / "crashed" / "_runs").glob("*.ckpt"))
    monkeypatch.setattr(store, "save_checkpoint", real_save)
    resumed = run_one(spec, store, Execution(torch.device("cpu"), progress=False))
    assert resumed.status == "finished"
    assert without_timings(resumed.load()) == without_timings(straight)
