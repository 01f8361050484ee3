"""What a result reports, against independent counts: the passes and products its steps made,
the examples a curvature pass saw, where a run diverged; and the random numbers the passes of
one step share."""

from __future__ import annotations

import math

import pytest
import torch
from runner_helpers import run_spec
from torch import nn

from bdhf_bench.curvature import MSE, CrossEntropy, GGNContext
from bdhf_bench.optim import ModelClosure, get_optimizer
from bdhf_bench.optim.protocol import StepDriver
from bdhf_bench.runner import Budget, RunSpec
from bdhf_bench.runner import loop as loop_module


@pytest.mark.parametrize(
    ("fraction", "rows"), [(0.25, 3), (0.3, 3), (1 / 3, 4), (0.05, 1), (0.99, 10), (1.0, 10)]
)
def test_the_curvature_pass_sees_the_first_ceil_fraction_examples(fraction, rows):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    closure = ModelClosure(model, CrossEntropy(), x, y)
    closure()
    closure.curvature(fraction)
    assert torch.equal(seen[-1], x[:rows])
    assert closure.curvature_share == rows / 10


class _ValueNoise(nn.Module):
    """Adds ``normal(mean, 0.5)`` noise around its own output: a draw the tape does not record
    (its values follow a tensor), so it replays the RNG state of the pass's first draw."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(5, 3)

    def forward(self, x):
        out = self.body(x)
        return torch.normal(out, 0.5)


def test_untaped_value_draws_are_the_same_in_every_evaluation_of_a_step():
    torch.manual_seed(0)
    model = _ValueNoise()
    x, y = torch.randn(12, 5), torch.randn(12, 3)
    closure = ModelClosure(model, MSE(), x, y)
    f0 = float(closure())
    assert float(closure.evaluate("batch")) == f0
    assert float(closure.evaluate("batch")) == f0
    ctx = closure.curvature(0.5)
    first = float(closure.evaluate("curvature"))
    assert float(closure.evaluate("curvature")) == first
    assert first == pytest.approx(float(MSE()(ctx.outputs[0].detach(), y[:6])), rel=1e-6)
    # and a fresh draw would differ: the replay is what makes them equal
    with torch.no_grad():
        assert float(MSE()(model(x), y)) != f0


def _tiny(optimizer: str, hps: dict, steps: int = 6) -> RunSpec:
    return RunSpec(
        problem="tiny_mlp",
        optimizer=optimizer,
        hyperparameters=get_optimizer(optimizer).resolve(hps),
        seed=1,
        batch_size=40,
        budget=Budget(steps=steps),
        eval_every=3,
    )


@pytest.mark.parametrize(
    ("optimizer", "hps"),
    [
        ("hf", {"curvature_fraction": 0.3, "cg_max_iters": 8}),
        ("bdhf", {"curvature_fraction": 0.3, "cg_max_iters": 8}),
        ("bdhf", {"curvature_fraction": 0.3, "cg_max_iters": 8, "damping_start": "curvature"}),
        ("lbfgs", {}),
        ("adam", {}),
    ],
    ids=["hf", "bdhf", "bdhf-curvature-start", "lbfgs", "adam"],
)
def test_the_counters_in_a_result_match_an_independent_count(tmp_path, monkeypatch, optimizer, hps):
    """Forward passes (rows the run's model saw in its steps, over the batch size) and
    curvature products (calls into the GGN context, one per active block), counted by wrapping
    the model and the operator, not read from the runner's counters."""
    rows = {"forward": 0}
    products = {"n": 0}
    in_step = {"on": False}

    real_step = StepDriver.step
    real_setup = loop_module.Trainer._setup

    def setup(self):
        real_setup(self)
        model = self.model

        def hook(module, args, out):
            if in_step["on"] and module is model:
                rows["forward"] += args[0].shape[0]

        model.register_forward_hook(hook)
        self._counted_model = model

    def step(self, closure):
        in_step["on"] = closure.model is getattr(step, "model", None)
        try:
            return real_step(self, closure)
        finally:
            in_step["on"] = False

    real_block, real_full = GGNContext.packed_block_products, GGNContext.packed_product

    def block(self, layout, flat, active, *a, **k):
        if in_step["on"]:
            products["n"] += sum(bool(x) for x in active)
        return real_block(self, layout, flat, active, *a, **k)

    def full(self, *a, **k):
        if in_step["on"]:
            products["n"] += 1
        return real_full(self, *a, **k)

    def train(self, total, progress, *rest):
        step.model = self.model
        return real_train(self, total, progress, *rest)

    real_train = loop_module.Trainer._train
    monkeypatch.setattr(loop_module.Trainer, "_setup", setup)
    monkeypatch.setattr(loop_module.Trainer, "_train", train)
    monkeypatch.setattr(StepDriver, "step", step)
    monkeypatch.setattr(GGNContext, "packed_block_products", block)
    monkeypatch.setattr(GGNContext, "packed_product", full)

    result = run_spec(_tiny(optimizer, hps), tmp_path)
    last = result["evaluations"][-1]
    assert last["forward_passes"] == pytest.approx(rows["forward"] / 40, rel=1e-12)
    assert last["curvature_products"] == products["n"]
    if optimizer in ("hf", "bdhf"):
        assert products["n"] > 6
    if optimizer == "adam":
        assert last["gradient_equivalents"] == last["step"] == 6


@pytest.mark.parametrize("optimizer", ["adam", "hf", "kfac"])
def test_a_loss_made_nonfinite_at_a_chosen_step_is_where_the_run_diverged(
    tmp_path, monkeypatch, optimizer
):
    """The mini-batch objective of step 5 (and after) is NaN: the result says diverged at step
    5, keeps the evaluations before it (0 and 3), and invents none after."""
    real_closure = loop_module.Trainer._closure

    def closure(self, x, y, model=None):
        c = real_closure(self, x, y, model)
        if model is None and self.state.step + 1 >= 5:  # the run's own steps, not the probe's
            real_objective = c.objective
            c.objective = lambda out, t: real_objective(out, t) * math.nan
        return c

    monkeypatch.setattr(loop_module.Trainer, "_closure", closure)
    result = run_spec(_tiny(optimizer, {}, steps=9), tmp_path)
    assert result["status"] == "diverged"
    assert result["diverged_at"]["step"] == 5
    assert [e["step"] for e in result["evaluations"]] == [0, 3]
    assert len(result["minibatch_train_losses"]) == 4
    assert result["stalled"] is None or result["stalled"]["reason"] == "diverged"
