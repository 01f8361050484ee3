"""The curvature peers as entries: every one trains on every ci problem, resumes exactly from
a checkpoint, is driven by its own protocol, and says which package it lacks."""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from runner_helpers import cli, interrupt_then_resume, run_spec, without_timings

from bdhf_bench.optim import ModelClosure, get_optimizer
from bdhf_bench.runner import Budget, RunSpec

PEERS = ("kfac", "soap", "shampoo", "adahessian", "sophia", "sfadamw", "lbfgs")
CI_PROBLEMS = ("mnist1d_mlp", "mnist1d_cnn", "mnist1d_lstm", "digits_autoencoder")
# short refresh periods, so a dozen steps see several refreshes and a resume between two
SHORT = {"kfac": {"update_period": 3}, "soap": {"update_period": 3}}
SHORT |= {"shampoo": {"update_period": 3}, "sophia": {"update_period": 3}}


def _spec(optimizer: str, problem: str = "tiny_mlp", steps: int = 12, data: str = "real"):
    return RunSpec(
        problem=problem,
        optimizer=optimizer,
        hyperparameters=get_optimizer(optimizer).resolve(SHORT.get(optimizer, {})),
        seed=3,
        batch_size=get_problem_batch(problem),
        budget=Budget(steps=steps),
        eval_every=4,
        data=data,
    )


def get_problem_batch(problem: str) -> int:
    from bdhf_bench.problems import get_problem

    return min(get_problem(problem).batch_size, 32)


def _run(spec: RunSpec, root: Path, **execution) -> dict:
    return run_spec(spec, root, **execution)


def test_every_peer_is_listed():
    out = cli("list", "optimizers")
    for name in PEERS:
        assert name in out.output


@pytest.mark.parametrize("problem", CI_PROBLEMS)
def test_every_peer_trains_on_every_ci_problem(tmp_path, problem):
    """Two updates of each peer on the problem (generated data of the real shapes): finite
    losses, and a measured cost of at least one gradient per update."""
    for name in PEERS:
        result = _run(_spec(name, problem, steps=2, data="synthetic"), tmp_path / name)
        assert result["status"] == "finished", name
        last = result["evaluations"][-1]
        assert math.isfinite(last["valid_loss"]), name
        assert last["gradient_equivalents"] >= 2 * (1 - 1e-9), name


@pytest.mark.parametrize("name", [*PEERS, "adam", "bdhf", "hf"])
@pytest.mark.parametrize("checkpoint_every", [0.0, 300.0], ids=["every-step", "at-evals"])
def test_interrupted_and_resumed_matches_uninterrupted(
    tmp_path, monkeypatch, name, checkpoint_every
):
    """Stopped after step 7 (a checkpoint at every step, or only at the evaluation of step 4),
    then run again: the same result as one uninterrupted run, losses bitwise."""
    spec = _spec(name)
    reference = _run(spec, tmp_path / "straight")
    resumed = interrupt_then_resume(
        monkeypatch, spec, tmp_path / "killed", 7, checkpoint_every=checkpoint_every
    )
    assert without_timings(resumed) == without_timings(reference)


def test_a_missing_library_is_named_in_one_line_before_anything_is_made(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pytorch_optimizer" else real(name, *a),
    )
    out_dir = tmp_path / "results"
    out = cli("run", "-p", "tiny_mlp", "-o", "soap", "--steps", "1", "-q", "--device", "cpu",
              "--output-dir", str(out_dir))  # fmt: skip
    assert out.exit_code == 2
    message = out.output.strip().splitlines()
    assert message == [
        "Error: optimizer soap needs the package pytorch-optimizer: pip install pytorch-optimizer"
    ]
    assert not out_dir.exists()


def test_second_backward_methods_release_the_graph():
    """AdaHessian differentiates the gradient inside its step; afterwards no gradient holds
    a graph (the driver drops them), and the step moved the weights."""
    from bdhf_bench.curvature import CrossEntropy

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    entry = get_optimizer("adahessian")
    driver = entry.driver(entry.build(model, entry.resolve({"lr": 0.01})))
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    driver.step(ModelClosure(model, CrossEntropy(), x, y))
    assert all(p.grad is None for p in model.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_schedule_free_is_evaluated_at_its_averaged_point():
    """Before an evaluation the parameters are schedule-free's x (not the y it steps at), and
    back at y, to rounding, when stepping resumes."""
    from bdhf_bench.curvature import CrossEntropy

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    entry = get_optimizer("sfadamw")
    optimizer = entry.build(model, entry.resolve({"lr": 0.05}))
    driver = entry.driver(optimizer)
    driver.before_steps()
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        driver.step(ModelClosure(model, CrossEntropy(), x, y))
    y_params = [p.detach().clone() for p in model.parameters()]
    driver.before_evaluation()
    beta1 = optimizer.param_groups[0]["betas"][0]
    for p, y_p in zip(model.parameters(), y_params):
        z = optimizer.state[p]["z"]
        # y = (1 - beta1) z + beta1 x, so x = (y - (1 - beta1) z) / beta1
        torch.testing.assert_close(p.detach(), (y_p - (1 - beta1) * z) / beta1)
    driver.before_steps()
    for p, y_p in zip(model.parameters(), y_params):
        torch.testing.assert_close(p.detach(), y_p)


def test_a_factorisation_of_nonfinite_curvature_is_a_divergence(tmp_path, monkeypatch):
    """A library that raises LinAlgError on non-finite statistics ends the run as diverged at
    that step, with what came before kept."""
    from bdhf_bench.optim.protocol import StepDriver

    real = StepDriver.step
    calls = {"n": 0}

    def failing(self, closure):
        calls["n"] += 1
        if calls["n"] == 7:  # the cost probe's step is the first call, then steps 1 to 6
            raise torch.linalg.LinAlgError("linalg.svd: non-finite values")
        return real(self, closure)

    monkeypatch.setattr(StepDriver, "step", failing)
    result = _run(_spec("adam"), tmp_path)
    assert result["status"] == "diverged"
    assert result["diverged_at"]["step"] == 6
    assert [e["step"] for e in result["evaluations"]] == [0, 4]


def test_no_optimizer_class_is_tested_outside_optim():
    """The runner, report, benchmarks and CLI drive every optimizer through its entry."""
    names = {"BlockDiagonalHF", "HessianFree", "KFAC"}
    root = Path(__file__).resolve().parents[1] / "bdhf_bench"
    offenders = []
    for path in root.rglob("*.py"):
        if path.parent.name == "optim":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                used = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if used & names:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_the_overhead_benchmark_drives_every_peer():
    """Side by side per step: schedule-free switched to train mode, Adam and sfadamw at exactly
    one gradient, the curvature methods above it by what their refreshes cost."""
    from bdhf_bench.benchmarks.step_cost import measure_step_cost

    rows = measure_step_cost(
        "tiny_mlp",
        [(name, SHORT.get(name, {})) for name in PEERS],
        device=torch.device("cpu"),
        steps=3,
        warmup=0,
        parts=False,
    )
    geq = {r.optimizer: r.gradient_equivalents for r in rows}
    assert geq["adam"] == 1.0 and geq["sfadamw"] == 1.0
    for name in ("kfac", "soap", "shampoo", "adahessian"):
        assert geq[name] > 1.0, name
