"""A curvature-scaled first lambda makes HF and BDHF invariant to the loss's scale.

Scaling the objective by c scales the GGN and the gradient by c. With ``damping_start =
"curvature"`` lambda starts at ``damping * g'Gg / g'g``, which scales too, so every later step
is the same; with a fixed first lambda it is not. Checked over 10 steps on a mean and a summed
loss, for c = 1e-3 and 1e3 (float64, the same Hessian code path for every c).

"The same" is to rounding: the two runs differ by rounding from the first product on, and HF's
steps amplify such differences (here from 1e-16 to about 1e-7 in ten steps). CG-backtracking's
choice among kept iterates is a discrete one that a near-tie can flip (seen at step 9 of one
HF case), so HF's case with backtracking runs 7 steps and the 10-step cases run without it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bdhf_bench.curvature import ConvexOutputLoss, partition
from bdhf_bench.optim import BlockDiagonalHF, HessianFree, ModelClosure, param_groups_from_blocks
from bdhf_bench.optim.damping_rules import curvature_damping, rayleigh_quotients


def _trajectory(cls, scale: float, reduction: str, start: str, steps: int = 10, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    if cls is BlockDiagonalHF:
        opt = cls(param_groups_from_blocks(partition(model, "module")), **kw)
    else:
        opt = cls(model.parameters(), **kw)
    for group in opt.param_groups:
        group["damping_start"] = start
    loss = ConvexOutputLoss(lambda z, t: scale * F.cross_entropy(z, t, reduction=reduction))
    g = torch.Generator().manual_seed(1)
    path, lambdas = [], []
    for _ in range(steps):
        x, y = torch.randn(32, 5, generator=g), torch.randint(0, 3, (32,), generator=g)
        opt.step(ModelClosure(model, loss, x, y))
        path.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        lambdas.append(opt.last_step.damping)
    return torch.stack(path), lambdas


CASES = [
    (HessianFree, {"backtrack": False}),
    (HessianFree, {"steps": 7}),
    (BlockDiagonalHF, {}),
    (BlockDiagonalHF, {"damping_mode": "per_block"}),
]


@pytest.mark.parametrize(
    ("cls", "kw"), CASES, ids=["hf", "hf-backtracking", "bdhf", "bdhf-per-block"]
)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_curvature_start_takes_the_same_steps_at_any_loss_scale(float64, cls, kw, reduction, scale):
    ref, ref_lam = _trajectory(cls, 1.0, reduction, "curvature", damping=1.0, **kw)
    got, got_lam = _trajectory(cls, scale, reduction, "curvature", damping=1.0, **kw)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_lam, ref_lam):  # lambda itself scales with the loss
        assert a == pytest.approx([scale * v for v in b], rel=1e-4)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_fixed_start_does_not(float64, reduction):
    ref, _ = _trajectory(HessianFree, 1.0, reduction, "fixed", damping=1.0)
    got, _ = _trajectory(HessianFree, 1e3, reduction, "fixed", damping=1.0)
    assert (got - ref).abs().max() > 1e-3


def test_the_first_lambda_is_the_rayleigh_quotient_along_the_gradient(float64):
    """Against the dense GGN: lambda_0 = damping * g'Gg / g'g after the first step's start."""
    from dense_reference import dense_ggn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    loss = ConvexOutputLoss(lambda z, t: F.cross_entropy(z, t))
    params = list(model.parameters())
    ggn = dense_ggn(model, x, lambda out: loss(out, y), params)
    grad = torch.cat([q.reshape(-1) for q in torch.autograd.grad(loss(model(x), y), params)])
    expected = 0.5 * float(grad @ ggn @ grad / (grad @ grad))
    opt = HessianFree(
        model.parameters(), damping=0.5, damping_start="curvature", curvature_fraction=1.0
    )
    seen = []
    real = opt._update_damping
    opt._update_damping = lambda rho: (seen.append(opt._damping()), real(rho))
    opt.step(ModelClosure(model, loss, x, y))
    assert seen[0] == pytest.approx([expected], rel=1e-10)
    assert opt.last_step.block_products == [opt.last_step.cg_iterations[0] + 1]


def test_rules_pool_per_block_and_keep_the_factor_without_information():
    assert rayleigh_quotients([2.0, 6.0], [1.0, 3.0], pooled=True) == [2.0, 2.0]
    assert rayleigh_quotients([2.0, 6.0], [1.0, 3.0], pooled=False) == [2.0, 2.0]
    assert rayleigh_quotients([2.0, 0.0], [4.0, 0.0], pooled=False)[0] == 0.5
    assert math.isnan(rayleigh_quotients([2.0, 0.0], [4.0, 0.0], pooled=False)[1])
    assert curvature_damping([3.0, 3.0], [0.5, math.nan], 1e-12, 1e12) == [1.5, 3.0]
    assert curvature_damping([3.0], [1e20], 1e-12, 1e12) == [1e12]
