"""The pieces of one HF step against independent references: warm start, step scale, Armijo,
CG-backtracking, damping after a failed line search, the preconditioner as a step builds it,
curvature sub-batches, and the pass counters."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from dense_reference import dense_ggn
from fixed_start import BlockDiagonalHF, HessianFree
from torch import nn

import bdhf_bench.optim.hf as hf_module
from bdhf_bench.curvature import MSE, CrossEntropy, partition
from bdhf_bench.optim import ModelClosure, param_groups_from_blocks

pytestmark = pytest.mark.usefixtures("float64")  # every test: tests/conftest.py


@pytest.fixture
def cg_calls(monkeypatch):
    """Every block_cg call of the optimizer: (keyword arguments, result), copied when made:
    the optimizer's CG vectors live in its workspace, which the next step overwrites."""
    calls = []
    real = hf_module.block_cg

    def spy(*args, **kwargs):
        snapshot = {k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}
        res = real(*args, **kwargs)
        kept = [(i, v.clone()) for i, v in res.iterates]
        calls.append((snapshot, dataclasses.replace(res, x=res.x.clone(), iterates=kept)))
        return res

    monkeypatch.setattr(hf_module, "block_cg", spy)
    return calls


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _tanh_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def _data(seed=1, n=24):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


class Scripted(ModelClosure):
    """Mini-batch evaluations return ``batch(i)`` for the i-th call (the true value if None)."""

    def __init__(self, *args, batch=None, ratio=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch, self.ratio, self.calls = batch, ratio, 0

    def curvature(self, fraction):
        ctx = super().curvature(fraction)
        self.f_c0 = float(ctx.loss_value())
        return ctx

    def evaluate(self, part="batch"):
        true = super().evaluate(part)
        if part == "curvature" and self.ratio is not None:
            return torch.tensor(self.f_c0 + self.ratio * (float(true) - self.f_c0))
        if part == "batch" and self.batch is not None:
            self.calls += 1
            value = self.batch(self.calls - 1)
            return true if value is None else torch.tensor(value)
        return true


def _dense_system(model, x, y, loss):
    """The dense GGN and the gradient at the model's parameters (autograd only)."""
    big = dense_ggn(model, x, lambda out: loss(out, y))
    model.zero_grad()
    loss(model(x), y).backward()
    return big, _flat([p.grad for p in model.parameters()])


# -- warm start and the step scale ---------------------------------------------------------------


def test_warm_start_is_095_of_the_final_unbacktracked_iterate_and_is_used(cg_calls):
    model, (x, y) = _tanh_net(), _data()
    opt = HessianFree(model.parameters(), damping=0.5, cg_max_iters=12, cg_tol=1e-12)
    # step 1: backtracking walks back one kept iterate and stops at the first increase
    opt.step(Scripted(model, CrossEntropy(), x, y, batch=[5.0, 4.0, 4.5, 3.0, -1e6].__getitem__))
    s1, (_, res1) = opt.last_step, cg_calls[0]
    kept = [i for i, _ in res1.iterates]
    assert s1.backtrack_evals == 3 and s1.chosen_iteration == kept[-2] < res1.iterations[0]
    stored = _flat(opt.state[p]["cg_solution"] for p in model.parameters())
    assert torch.equal(stored, res1.x)
    # step 2 starts from 0.95 times it, and its CG run is textbook CG from there
    theta = _flat(model.parameters())
    opt.step(ModelClosure(model, CrossEntropy(), x, y))
    kwargs2, res2 = cg_calls[1]
    assert torch.equal(kwargs2["x0"], 0.95 * res1.x)
    lam = s1.damping[0]
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta, model.parameters())
    _, g = _dense_system(model, x, y, F.cross_entropy)
    # the damped GGN on the curvature sub-batch (the first quarter: 6 examples)
    big_c = dense_ggn(model, x[:6], lambda out: F.cross_entropy(out, y[:6]))
    a = big_c + lam * torch.eye(len(g))
    xk, r = 0.95 * res1.x, a @ (0.95 * res1.x) + g
    p = -r
    for _ in range(res2.iterations[0]):
        ap = a @ p
        alpha = (r @ r) / (p @ ap)
        xk, r_new = xk + alpha * p, r + alpha * ap
        p = -r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
    torch.testing.assert_close(res2.x, xk, rtol=1e-8, atol=1e-10)


def test_hf_step_scale_is_one_from_zero_and_the_full_ggn_minimiser_after_a_poor_start(cg_calls):
    model, (x, y) = _tanh_net(2), _data(3)
    opt = HessianFree(model.parameters(), warm_start=0.0, curvature_fraction=1.0, backtrack=False)
    for _ in range(3):
        opt.step(ModelClosure(model, CrossEntropy(), x, y))
        assert opt.last_step.scale == 1.0
    # a poor warm start: 40 times the last direction, one CG iteration from there
    poor = HessianFree(
        model.parameters(),
        warm_start=1.0,
        curvature_fraction=1.0,
        cg_max_iters=1,
        step_rule="fixed",
        backtrack=False,
    )
    for p, v in zip(model.parameters(), opt.state.values()):
        poor.state[p]["cg_solution"] = 40 * v["cg_solution"]
    theta = _flat(model.parameters())
    big, g = _dense_system(model, x, y, F.cross_entropy)
    poor.step(ModelClosure(model, CrossEntropy(), x, y))
    d = cg_calls[-1][1].x
    alpha = min(1.0, float(-(g @ d) / (d @ big @ d)))
    assert alpha < 0.9 and poor.last_step.scale == pytest.approx(alpha, rel=1e-10)
    torch.testing.assert_close(_flat(model.parameters()) - theta, alpha * d, rtol=1e-9, atol=1e-12)


# -- line search, backtracking and damping ---------------------------------------------------------


def _quadratic(seed=5):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 4, generator=g), torch.randn(32, 2, generator=g)
    torch.manual_seed(seed)
    return nn.Linear(4, 2), x, y


def test_armijo_accepts_just_below_the_sufficient_decrease_line():
    model, x, y = _quadratic()
    # independently: f0, g and the Newton step d = theta* - theta0 (damping ~ 0)
    xa = torch.cat([x, torch.ones(32, 1)], dim=1)
    sol = torch.linalg.lstsq(xa, y).solution
    d = torch.cat([sol[:-1].T.reshape(-1), sol[-1]]) - _flat(model.parameters())
    model.zero_grad()
    f0 = F.mse_loss(model(x), y)
    f0.backward()
    gd = float(_flat([p.grad for p in model.parameters()]) @ d)
    line = [f0.item() + 1e-2 * t * gd for t in (1.0, 0.8, 0.64)]  # f0 + c t g.d, g.d < 0
    eps = 1e-9 * abs(gd)
    values = [line[0] + eps, line[1] + eps, line[2] - eps]
    opt = HessianFree(
        model.parameters(), damping=1e-12, curvature_fraction=1.0, cg_tol=1e-14, backtrack=False
    )
    opt.step(Scripted(model, MSE(), x, y, batch=values.__getitem__))
    s = opt.last_step
    assert s.accepted and s.line_search_evals == 3 and s.step_size == pytest.approx(0.64)


@pytest.mark.parametrize("combine", ["scale", "coefficients"])
def test_no_objective_value_is_reused_for_a_rescaled_direction(combine):
    # weight and bias as two blocks of one strongly coupled regression: the block solutions
    # overshoot together and the step scale (or the block factors) shorten the direction
    g = torch.Generator().manual_seed(0)
    x, y = 3.0 + torch.randn(40, 3, generator=g), torch.randn(40, 1, generator=g)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    groups = [{"params": [model.weight]}, {"params": [model.bias]}]
    opt = BlockDiagonalHF(
        groups, damping=1e-3, curvature_fraction=1.0, backtrack=True, combine=combine
    )
    # the backtracking evaluation of d reports a huge decrease; the line search must not use it
    opt.step(Scripted(model, MSE(), x, y, batch=lambda i: -1e6 if i == 0 else None))
    s = opt.last_step
    shortened = s.scale < 0.9 if combine == "scale" else min(s.block_coefficients) < 0.9
    assert shortened and s.backtrack_evals == 1
    assert s.line_search_evals >= 1 and s.accepted


def test_hf_reuses_the_backtracking_value_when_the_scale_is_one():
    model, x, y = _quadratic()
    opt = HessianFree(model.parameters(), damping=1e-3, curvature_fraction=1.0)
    opt.step(ModelClosure(model, MSE(), x, y))
    s = opt.last_step
    assert s.scale == 1.0 and s.accepted and s.line_search_evals == 0 and s.step_size == 1.0


@pytest.mark.parametrize(("ratio", "factor"), [(0.9, 2 / 3), (0.5, 1.0), (0.1, 1.5)])
def test_a_failed_line_search_moves_damping_by_rhos_rule_only(ratio, factor):
    model, x, y = _quadratic()
    before = _flat(model.parameters())
    opt = BlockDiagonalHF(model.parameters(), damping=2.0, curvature_fraction=1.0)
    opt.step(Scripted(model, MSE(), x, y, ratio=ratio, batch=lambda i: 1e6))
    assert opt.last_step.outcome == "line_search_failed"
    assert opt.param_groups[0]["damping"] == pytest.approx(2.0 * factor)
    assert torch.equal(before, _flat(model.parameters()))


# -- the preconditioner ----------------------------------------------------------------------------


def test_the_preconditioner_a_step_builds(cg_calls):
    model, (x, y) = _tanh_net(4), _data(5, n=20)
    l2 = [0.1, 0.2, 0.3, 0.4]
    opt = HessianFree(model.parameters(), precondition=True, damping=0.37, curvature_fraction=0.5)
    opt.step(ModelClosure(model, CrossEntropy(), x, y, l2=l2))
    got = cg_calls[0][0]["preconditioner"]
    # reference: one backward per example of the curvature half, Martens' mean of squares
    squares = torch.zeros_like(got)
    ref = _tanh_net(4)  # the parameters the step started from
    for i in range(10):
        ref.zero_grad()
        F.cross_entropy(ref(x[i : i + 1]), y[i : i + 1]).backward()
        squares += _flat([p.grad for p in ref.parameters()]).square()
    coeff = torch.cat([torch.full((p.numel(),), c) for p, c in zip(ref.parameters(), l2)])
    torch.testing.assert_close(got, (squares / 10 + 0.37 + coeff) ** 0.75, rtol=1e-12, atol=0)


# -- curvature sub-batch ---------------------------------------------------------------------------


def test_curvature_fraction_below_one_scales_g_and_rho_by_the_sub_batch():
    model, x, y = _quadratic(7)
    theta = _flat(model.parameters())
    big_sub, _ = _dense_system(model, x[:8], y[:8], F.mse_loss)  # G on the first quarter, mean
    _, g = _dense_system(model, x, y, F.mse_loss)  # g on the whole batch
    lam = 0.05
    d = torch.linalg.solve(big_sub + lam * torch.eye(len(g)), -g)
    opt = HessianFree(
        model.parameters(),
        damping=lam,
        curvature_fraction=0.25,
        cg_tol=1e-14,
        warm_start=0.0,
        step_rule="fixed",
        backtrack=False,
    )
    opt.step(ModelClosure(model, MSE(), x, y))
    torch.testing.assert_close(_flat(model.parameters()) - theta, d, rtol=1e-8, atol=1e-11)
    # rho: the sub-batch's actual change against g.d + d^T G_sub d / 2 (undamped, Martens)
    with torch.no_grad():
        ref = nn.Linear(4, 2)
        torch.nn.utils.vector_to_parameters(theta, ref.parameters())
        f_before = F.mse_loss(ref(x[:8]), y[:8])
        torch.nn.utils.vector_to_parameters(theta + d, ref.parameters())
        f_after = F.mse_loss(ref(x[:8]), y[:8])
    predicted = g @ d + 0.5 * d @ big_sub @ d
    rho = float((f_after - f_before) / predicted)
    assert opt.last_step.rho == [pytest.approx(rho, rel=1e-9)]
    assert opt.last_step.curvature_share == 0.25


def test_pass_counters_with_a_sub_batch_and_per_block_damping():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = _data(2, n=40)
    opt = BlockDiagonalHF(
        param_groups_from_blocks(partition(model)),
        damping_mode="per_block",
        curvature_fraction=0.25,
        backtrack=True,
    )
    closure = ModelClosure(model, CrossEntropy(), x, y)
    opt.step(closure)
    s = opt.last_step
    assert s.accepted and s.curvature_share == 0.25
    # gradient 1, curvature forward 1/4, one rho evaluation per block on 1/4,
    # backtracking and line search on the whole batch
    forward = 1 + 0.25 + 2 * 0.25 + s.backtrack_evals + s.line_search_evals
    assert s.forward_passes == pytest.approx(forward) == closure.counts.forward
    assert s.backward_passes == pytest.approx(1 + 0.25) == closure.counts.backward
    # CG's products plus one per block for the block models of rho; one full product
    assert s.block_products == [n + 1 for n in s.cg_iterations]
    assert s.full_products == 1
    assert opt.totals["forward_passes"] == pytest.approx(forward)
