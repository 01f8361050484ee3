"""Gradient-equivalents measured, not assumed: dense factorisations counted by formula, whole
steps measured over a refresh period, and the HF methods' exact counters agreeing with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bdhf_bench.curvature import CrossEntropy
from bdhf_bench.optim import ModelClosure, get_optimizer
from bdhf_bench.optim import hf as hf_module
from bdhf_bench.runner.cost import measure_cost
from bdhf_bench.runner.flops import count_flops, eigh_flops, svd_flops


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda a: torch.linalg.eigh(a), 3 * 9 * 7**3),
        (lambda a: torch.linalg.cholesky(a), 3 * (7**3 // 3)),
        (lambda a: torch.linalg.inv(a), 3 * 2 * 7**3),
        (lambda a: torch.cholesky_inverse(torch.linalg.cholesky(a)), 3 * (7**3 // 3 + 7**3)),
        (lambda a: torch.linalg.solve(a, a[..., :2]), 3 * (2 * 7**3 // 3 + 2 * 7**2 * 2)),
        (lambda a: torch.linalg.qr(a), 3 * 2 * (2 * 7**3 - 2 * 7**3 // 3)),
        (lambda a: torch.linalg.svd(a), 3 * (4 + 8 + 9) * 7**3),
        (lambda a: a[0].clone().addmm_(a[1], a[2]), 2 * 7**3),
        (lambda a: torch.mv(a[0], a[1, 0]), 2 * 7**2),
        # matrix_power is matmuls, which torch counts itself: two of 2 n^3
        (lambda a: torch.linalg.matrix_power(a, 3), 3 * 2 * 2 * 7**3),
    ],
    ids=[
        "eigh",
        "cholesky",
        "inv",
        "cholesky_inverse",
        "solve",
        "qr",
        "svd",
        "addmm_",
        "mv",
        "pow",
    ],
)
def test_factorisations_are_charged_their_textbook_counts(call, expected):
    a = torch.randn(3, 7, 7)
    spd = a @ a.mT + 7 * torch.eye(7)
    assert count_flops(lambda: call(spd)) == expected


def test_values_only_decompositions_are_charged_less():
    """Read off the outputs (an empty eigenvector or U output). Under a dispatch mode torch's
    eigvalsh and svdvals compute the vectors anyway, so the counter sees full ones there."""
    assert eigh_flops((2, 7, 7), out_shape=((2, 7), (0,))) == 2 * (4 * 7**3 // 3)
    assert eigh_flops((2, 7, 7), out_shape=((2, 7), (2, 7, 7))) == 2 * 9 * 7**3
    assert svd_flops((9, 7), out_shape=((0,), (7,), (0,))) == 4 * 9 * 7**2 - 4 * 7**3 // 3


def test_torch_alone_counts_no_factorisation():
    """Why the mapping exists: FlopCounterMode by itself charges an eigh nothing."""
    from torch.utils.flop_counter import FlopCounterMode

    a = torch.randn(20, 20)
    with FlopCounterMode(display=False) as counter:
        torch.linalg.eigh(a @ a.T)
    assert counter.get_total_flops() == 2 * 20**3  # the matmul only


def _setup(name, hps, period_batches=12, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    entry = get_optimizer(name)
    resolved = entry.resolve(hps)
    opt = entry.build(model, resolved)
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g))
        for _ in range(period_batches)
    ]

    def make(m, x, y):
        return ModelClosure(m, CrossEntropy(), x, y)

    cost = measure_cost(entry, resolved, opt, model, make, batches[: entry.period(resolved)])
    return cost, model, opt


def test_adam_costs_one_gradient_per_step():
    cost, *_ = _setup("adam", {})
    assert cost.probe_steps == 1
    assert cost.extra_per_step == 0.0
    assert cost.step_flops == cost.gradient
    assert cost.gradient_equivalents(1.0, 1.0, [], 0, 1) == 1.0


@pytest.mark.parametrize(("name", "combine"), [("hf", None), ("bdhf", "scale")])
@pytest.mark.parametrize("fraction", [0.5, "auto", "auto-quarter"])
def test_hf_counters_agree_with_the_measured_step(name, combine, fraction, monkeypatch):
    """The exact counters (passes and products times their FLOPs) account for every FLOP of a
    whole measured step: the two measures agree. With ``"auto"`` the products are probed on
    the whole mini-batch and counted in its units, and the noise estimate's half-batch
    gradient is a counted pass; "auto-quarter" makes the rule pick a quarter."""
    if fraction == "auto-quarter":
        monkeypatch.setattr(hf_module, "auto_fraction", lambda ratio: 0.25)
        fraction = "auto"
    hps = {"cg_max_iters": 7, "curvature_fraction": fraction}
    cost, *_ = _setup(name, hps if combine is None else {**hps, "combine": combine})
    assert cost.step_flops > 4 * cost.gradient  # products and evaluations, not just a gradient
    assert abs(cost.extra_per_step) <= 1e-9 * cost.step_flops


def test_bdhf_block_coefficients_cost_their_small_solve_beyond_the_counters():
    """With a factor per block, the counters miss only the B x B system: its LU solve
    (2/3 B^3 + 2 B^2) and one B x B matrix-vector product (2 B^2); the dots are free."""
    cost, *_ = _setup("bdhf", {"cg_max_iters": 7, "curvature_fraction": 0.5})
    blocks = len(cost.block_products)
    assert blocks == 2 and cost.full_product > 0
    assert cost.extra_per_step == (2 * blocks**3) // 3 + 2 * blocks**2 + 2 * blocks**2


def test_shampoo_is_charged_its_svds_averaged_over_the_period():
    """pytorch-optimizer's Shampoo: per step and tensor dimension d of a tensor with n entries,
    one matmul with the d x d inverse root (2 n d FLOPs); every ``update_period`` steps one SVD
    per dimension. Measured over one period, the extra per step is that closed form."""
    period = 4
    cost, model, _ = _setup("shampoo", {"update_period": period})
    assert cost.probe_steps == period
    shapes = [p.shape for p in model.parameters()]
    # per step and dimension: the statistics' in-place addmm_ (d x n/d times n/d x d) and the
    # product with the inverse root (d x d times d x n/d): 2nd FLOPs each
    per_step = sum(2 * 2 * s.numel() * d for s in shapes for d in s)
    # per refresh and dimension: the SVD, and the root formed from it (u s^p @ vh, 2 d^3)
    refresh = sum(svd_flops((d, d)) + 2 * d**3 for s in shapes for d in s)
    expected = per_step + refresh / period
    assert cost.extra_per_step == pytest.approx(expected, rel=1e-12)


def test_kfac_extra_cost_falls_with_a_longer_refresh_period():
    """A refresh (factor passes, Cholesky inverses) is shared by the period's steps; the
    per-step preconditioning is not. With R the refresh and c the per-step part,
    extra(1) = R + c and extra(4) = R/4 + c."""
    one, *_ = _setup("kfac", {"update_period": 1})
    four, *_ = _setup("kfac", {"update_period": 4})
    two, *_ = _setup("kfac", {"update_period": 2})
    refresh = (one.extra_per_step - four.extra_per_step) * 4 / 3
    per_step = one.extra_per_step - refresh
    assert refresh > 0 and per_step > 0
    assert two.extra_per_step == pytest.approx(refresh / 2 + per_step, rel=1e-9)


def test_a_driver_that_needs_a_warm_up_takes_it_on_the_twin_after_the_count(monkeypatch):
    """A compiled CG compiles in one step on the cost probe's copy, on the first batch, after
    the FLOP count (checked eager: the hook is what matters, not the compiler)."""
    from bdhf_bench.optim.protocol import HessianFreeDriver

    def closures(warm_up: bool) -> tuple[nn.Module, list]:
        monkeypatch.setattr(HessianFreeDriver, "needs_warm_up", lambda self: warm_up)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
        entry = get_optimizer("bdhf")
        resolved = entry.resolve({"cg_max_iters": 3})
        opt = entry.build(model, resolved)
        g = torch.Generator().manual_seed(1)
        batches = [(torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g))]
        calls = []

        def make(m, x, y):
            calls.append((m, x, batches[0][0]))
            return ModelClosure(m, CrossEntropy(), x, y)

        before = [p.detach().clone() for p in model.parameters()]
        measure_cost(entry, resolved, opt, model, make, batches)
        assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
        return model, calls

    _, counted = closures(False)
    model, calls = closures(True)
    assert len(calls) == len(counted) + 1  # the counted steps, then one warm-up step
    twin, x, first = calls[-1]
    assert twin is calls[-2][0] and twin is not model and x is first
