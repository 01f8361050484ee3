"""BlockDiagonalHF and HessianFree: exact steps on quadratics, damping, line search, rejection,
state, and a small classification race against Adam."""

from __future__ import annotations

import io
import math

import pytest
import torch
from fixed_start import BlockDiagonalHF, HessianFree
from torch import nn

from bdhf_bench.curvature import MSE, ConvexOutputLoss, CrossEntropy, partition
from bdhf_bench.optim import ModelClosure, get_optimizer, param_groups_from_blocks


def _least_squares(seed=0, n=64, d=6, k=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, k, generator=g)
    torch.manual_seed(seed)
    model = nn.Linear(d, k)
    return model, x, y


def _lstsq_solution(x, y):
    xa = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
    sol = torch.linalg.lstsq(xa, y).solution  # (d+1, k)
    return sol[:-1].T, sol[-1]


def _params_equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a, b))


def test_one_hf_step_lands_on_the_least_squares_minimizer(float64):
    model, x, y = _least_squares()
    opt = HessianFree(model.parameters(), damping=1e-10, curvature_fraction=1.0, cg_tol=1e-12)
    opt.step(ModelClosure(model, MSE(), x, y))
    w, b = _lstsq_solution(x, y)
    torch.testing.assert_close(model.weight.detach(), w, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(model.bias.detach(), b, rtol=1e-7, atol=1e-9)
    assert opt.last_step.accepted and opt.last_step.step_size == 1.0
    # The quadratic model is exact: rho is 1 and the damping drops by 2/3.
    assert opt.last_step.rho[0] == pytest.approx(1.0, abs=1e-6)
    assert opt.param_groups[0]["damping"] == pytest.approx(1e-10 * 2 / 3)


def test_bdhf_with_one_block_is_hf(float64):
    results = []
    for cls, params in ((BlockDiagonalHF, None), (HessianFree, None)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 5, generator=g), torch.randint(0, 3, (32,), generator=g)
        params = model.parameters()
        opt = cls(params, backtrack=False, cg_max_iters=50)
        for _ in range(3):
            opt.step(ModelClosure(model, CrossEntropy(), x, y))
        results.append([p.detach().clone() for p in model.parameters()])
    assert _params_equal(*results)


class TwoRegressions(nn.Module):
    """Two independent linear regressions: a block-separable quadratic under MSE."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 2)
        self.b = nn.Linear(3, 2)

    def forward(self, inputs):
        xa, xb = inputs
        return torch.cat([self.a(xa), self.b(xb)], dim=1)


def test_bdhf_takes_the_exact_newton_step_on_a_block_separable_quadratic(float64):
    torch.manual_seed(0)
    model = TwoRegressions()
    g = torch.Generator().manual_seed(3)
    xa, xb = torch.randn(40, 4, generator=g), torch.randn(40, 3, generator=g)
    y = torch.randn(40, 4, generator=g)
    opt = BlockDiagonalHF(
        param_groups_from_blocks(partition(model)),
        damping=1e-10,
        curvature_fraction=1.0,
        cg_tol=1e-12,
    )
    assert opt.layout().num_blocks == 2
    opt.step(ModelClosure(model, MSE(), (xa, xb), y))
    wa, ba = _lstsq_solution(xa, y[:, :2])
    wb, bb = _lstsq_solution(xb, y[:, 2:])
    for got, want in (
        (model.a.weight, wa),
        (model.a.bias, ba),
        (model.b.weight, wb),
        (model.b.bias, bb),
    ):
        torch.testing.assert_close(got.detach(), want, rtol=1e-7, atol=1e-9)


class ScriptedClosure(ModelClosure):
    """A closure whose extra evaluations are scripted, to drive damping and line search.

    ``curvature_ratio`` r: the curvature-batch objective after the step reports r times the
    true reduction (on an exact quadratic the true reduction is the predicted one, so rho = r).
    ``batch_values(i)``: the value of the i-th mini-batch evaluation.
    """

    def __init__(self, *args, curvature_ratio=None, batch_values=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.curvature_ratio = curvature_ratio
        self.batch_values = batch_values
        self.batch_calls = 0

    def curvature(self, fraction):
        ctx = super().curvature(fraction)
        self._f_c0 = float(ctx.loss_value())
        return ctx

    def evaluate(self, part="batch"):
        true = super().evaluate(part)
        if part == "curvature" and self.curvature_ratio is not None:
            return torch.tensor(self._f_c0 + self.curvature_ratio * (float(true) - self._f_c0))
        if part == "batch" and self.batch_values is not None:
            value = self.batch_values(self.batch_calls)
            self.batch_calls += 1
            return torch.tensor(value)
        return true


def _scripted_step(rho_target=None, batch_values=None, **opt_kwargs):
    """One BDHF step on a linear least-squares problem (an exact quadratic model) with
    scripted evaluations; returns (optimizer, model, parameters before, closure)."""
    model, x, y = _least_squares(seed=5, n=32, d=4, k=2)
    opt = BlockDiagonalHF(model.parameters(), curvature_fraction=1.0, **opt_kwargs)
    closure = ScriptedClosure(
        model, MSE(), x, y, curvature_ratio=rho_target, batch_values=batch_values
    )
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure)
    return opt, model, before, closure


@pytest.mark.parametrize(
    ("rho", "seen", "factor"),
    [
        (0.1, 0.1, 1.5),
        (-2.0, -math.inf, 1.5),  # the objective went up: Martens sets rho = -inf
        (0.5, 0.5, 1.0),
        (0.9, 0.9, 2 / 3),
        (1.3, 1.3, 2 / 3),
    ],
)
def test_damping_moves_the_right_way(rho, seen, factor):
    opt, *_ = _scripted_step(rho_target=rho, damping=2.0)
    assert opt.last_step.rho[0] == pytest.approx(seen, rel=1e-4)
    assert opt.param_groups[0]["damping"] == pytest.approx(2.0 * factor)


def test_line_search_accepts_shrinks_and_rejects():
    # Accept at t = 1: the true objective decreases enough on this problem.
    opt, *_ = _scripted_step()
    assert opt.last_step.accepted and opt.last_step.step_size == 1.0
    assert opt.last_step.line_search_evals == 1

    # Shrink: the first three trials are far too high, the fourth is low enough.
    opt, model, before, _ = _scripted_step(batch_values=lambda i: 1e6 if i < 3 else -1e6)
    assert opt.last_step.accepted
    assert opt.last_step.step_size == pytest.approx(0.8**3)
    assert opt.last_step.line_search_evals == 4

    # Reject after 60 tries: parameters bitwise unchanged, the step counted as rejected.
    opt, model, before, _closure = _scripted_step(batch_values=lambda i: 1e6)
    assert not opt.last_step.accepted and opt.last_step.outcome == "line_search_failed"
    assert opt.last_step.line_search_evals == 60
    assert _params_equal(before, list(model.parameters()))
    assert opt.totals["rejected"] == 1


def test_nonfinite_loss_is_rejected_and_leaves_parameters_bitwise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(8, 3)
    x[0, 0] = float("nan")
    opt = BlockDiagonalHF(model.parameters(), damping=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(ModelClosure(model, MSE(), x, torch.zeros(8, 2)))
    assert math.isnan(loss.item())
    assert _params_equal(before, list(model.parameters()))
    assert opt.last_step.outcome == "nonfinite_loss" and not opt.last_step.accepted
    assert opt.param_groups[0]["damping"] == pytest.approx(1.5)


def test_nonfinite_curvature_is_rejected():
    # |o|^1.5 has an infinite second derivative at o = 0: finite loss, non-finite curvature.
    model = nn.Linear(3, 2)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    loss = ConvexOutputLoss(lambda o, t: ((o - t) ** 2).sum() + o.abs().pow(1.5).sum())
    opt = HessianFree(model.parameters(), damping=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(ModelClosure(model, loss, torch.randn(4, 3), torch.ones(4, 2)))
    assert opt.last_step.outcome == "nonfinite_curvature"
    assert _params_equal(before, list(model.parameters()))
    assert opt.param_groups[0]["damping"] == pytest.approx(1.5)


def test_counters_add_up():
    opt, _model, _before, _closure = _scripted_step()
    s = opt.last_step
    # gradient + curvature forward + rho evaluation (curvature batch) + one line-search trial
    assert s.forward_passes == pytest.approx(1 + 1.0 + 1.0 + 1)
    # the gradient, and recording J^T u on the curvature batch for the products
    assert s.backward_passes == pytest.approx(1.0 + 1.0)
    # one block product per CG iteration (no warm start on the first step), and one full
    # product for the step scale and rho
    assert s.block_products == s.cg_iterations
    assert s.full_products == 1
    assert opt.totals["block_products"] == sum(s.block_products)


def _classification_data(seed=0, n=512):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g) * torch.logspace(-1, 1, 10)
    w = torch.randn(10, 16, generator=g)
    y = (torch.tanh(x @ w) @ torch.randn(16, 4, generator=g)).argmax(dim=1)
    return x, y


def _deep_tanh(seed):
    torch.manual_seed(seed)
    layers = [nn.Linear(10, 32), nn.Tanh()]
    for _ in range(3):
        layers += [nn.Linear(32, 32), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(32, 4))


def _train(name, hps, steps=20, seed=0):
    """Full-batch training of a 4-layer tanh net on generated data; final training loss."""
    x, y = _classification_data(seed)
    model = _deep_tanh(seed)
    entry = get_optimizer(name)
    opt = entry.build(model, entry.resolve(hps))
    for _ in range(steps):
        opt.step(ModelClosure(model, CrossEntropy(), x, y))
    with torch.no_grad():
        return CrossEntropy()(model(x), y).item(), opt


def test_bdhf_and_hf_beat_tuned_adam_per_step():
    adam = min(_train("adam", {"lr": lr})[0] for lr in (3e-3, 1e-2, 3e-2, 1e-1, 3e-1))
    bdhf, _ = _train("bdhf", {})
    hf, _ = _train("hf", {})
    assert bdhf < 0.7 * adam
    assert hf < 0.7 * adam


def test_state_dict_roundtrip_gives_the_same_next_step():
    x, y = _classification_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4))
    bdhf = get_optimizer("bdhf")
    setting = bdhf.resolve({"damping_mode": "per_block"})
    opt = bdhf.build(model, setting)
    for i in range(3):
        opt.step(
            ModelClosure(model, CrossEntropy(), x[i * 64 : (i + 1) * 64], y[i * 64 : (i + 1) * 64])
        )
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    batch = (x[300:364], y[300:364])
    opt.step(ModelClosure(model, CrossEntropy(), *batch))
    expected = [p.detach().clone() for p in model.parameters()]

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    torch.manual_seed(123)
    model2 = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4))
    model2.load_state_dict(saved["model"])
    opt2 = bdhf.build(model2, setting)
    opt2.load_state_dict(saved["opt"])
    assert opt2.totals["steps"] == 3
    assert [g["damping"] for g in opt2.param_groups] == [
        g["damping"] for g in saved["opt"]["param_groups"]
    ]
    opt2.step(ModelClosure(model2, CrossEntropy(), *batch))
    assert _params_equal(expected, list(model2.parameters()))


def test_float32_and_float64_both_work():
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
        x, y = torch.randn(32, 4, dtype=dtype), torch.randint(0, 3, (32,))
        opt = HessianFree(model.parameters(), cg_max_iters=20)
        first = opt.step(ModelClosure(model, CrossEntropy(), x, y)).item()
        for _ in range(4):
            last = opt.step(ModelClosure(model, CrossEntropy(), x, y)).item()
        assert last < first and all(p.dtype == dtype for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"damping": -1.0}, r"invalid damping=-1.0: must be in \[damping_min, damping_max\]"),
        (
            {"curvature_fraction": 0.0},
            r"invalid curvature_fraction=0.0: must be 'auto' or a number in \(0, 1\]",
        ),
        ({"cg_max_iters": 0}, r"invalid cg_max_iters=0"),
        ({"step_rule": "wolfe"}, r"invalid step_rule='wolfe': must be one of"),
        ({"warm_start": 1.5}, r"invalid warm_start=1.5: must be in \[0, 1\]"),
    ],
)
def test_invalid_hyperparameters_name_the_parameter_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockDiagonalHF(nn.Linear(2, 2).parameters(), **kwargs)


def test_step_needs_a_model_closure():
    opt = HessianFree(nn.Linear(2, 2).parameters())
    with pytest.raises(TypeError, match=r"needs a bdhf_bench\.optim\.ModelClosure"):
        opt.step(lambda: torch.tensor(0.0))


def test_preconditioner_diagonal_is_the_mean_squared_per_example_gradient(float64):
    from bdhf_bench.curvature import BlockLayout
    from bdhf_bench.optim.preconditioner import squared_gradient_diagonal

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    closure = ModelClosure(model, CrossEntropy(), x, y)
    closure.curvature(0.5)  # the diagonal is taken on the curvature sub-batch: 6 examples
    layout = BlockLayout([list(model.parameters())])
    got = squared_gradient_diagonal(closure, layout)
    # reference: one backward per example, Martens' mean of squares
    squares = torch.zeros(layout.numel)
    for i in range(6):
        model.zero_grad()
        CrossEntropy()(model(x[i : i + 1]), y[i : i + 1]).backward()
        squares += torch.cat([p.grad.reshape(-1) for p in model.parameters()]).square()
    torch.testing.assert_close(got, squares / 6)


def test_preconditioned_hf_steps_and_batchnorm_is_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    opt = HessianFree(model.parameters(), precondition=True, cg_max_iters=20)
    first = opt.step(ModelClosure(model, CrossEntropy(), x, y)).item()
    for _ in range(3):
        last = opt.step(ModelClosure(model, CrossEntropy(), x, y)).item()
    assert last < first
    bn = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).train()
    opt = HessianFree(bn.parameters(), precondition=True)
    with pytest.raises(ValueError, match="BatchNorm in training mode"):
        opt.step(ModelClosure(bn, CrossEntropy(), x, y))


def test_per_block_damping_follows_each_blocks_rho(float64):
    torch.manual_seed(0)
    model = TwoRegressions()
    g = torch.Generator().manual_seed(3)
    xa, xb = torch.randn(40, 4, generator=g), torch.randn(40, 3, generator=g)
    y = torch.randn(40, 4, generator=g)
    groups = param_groups_from_blocks(partition(model))
    groups[1]["damping"] = 5.0  # blocks start from their own lambda
    opt = BlockDiagonalHF(groups, damping=2.0, damping_mode="per_block", curvature_fraction=1.0)
    opt.step(ModelClosure(model, MSE(), (xa, xb), y))
    # each block's quadratic model is exact (a linear model, MSE): both rhos are 1
    assert opt.last_step.rho == pytest.approx([1.0, 1.0], abs=1e-6)
    assert [g["damping"] for g in opt.param_groups] == pytest.approx([2.0 * 2 / 3, 5.0 * 2 / 3])
