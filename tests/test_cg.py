"""Block CG against torch.linalg.solve, a plain numpy CG, and each stopping rule; the tests that
take ``cg`` hold the compiled iteration (``compiled=True``) to the same references."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from cg_reference import function_cg

from bdhf_bench.curvature import BlockLayout, backtracking_schedule


@pytest.fixture(params=["eager", "compiled"])
def cg(request):
    """block_cg (on a FunctionOperator), eager or with its compiled iteration."""
    if request.param == "eager":
        return function_cg
    return functools.partial(function_cg, compiled=True)


def _spd(n: int, cond: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


def _problem(sizes, conds, seed=0):
    mats = [_spd(n, c, seed + i) for i, (n, c) in enumerate(zip(sizes, conds))]
    tensors = [[torch.zeros(n, dtype=torch.float64)] for n in sizes]
    layout = BlockLayout(tensors)
    a = torch.block_diag(*mats)
    calls = []

    def matvec(p, active):
        calls.append(list(active))
        return torch.cat([m @ seg for m, seg in zip(mats, p.split(sizes))])

    return layout, mats, a, matvec, calls


def _numpy_cg_phis(a: np.ndarray, b: np.ndarray, iters: int) -> list[float]:
    """Textbook CG from 0 on A x = b, returning phi_i = 0.5 x^T A x - b^T x for i = 0..iters."""
    x = np.zeros_like(b)
    r = b - a @ x
    p = r.copy()
    phis = [0.0]
    for _ in range(iters):
        ap = a @ p
        alpha = (r @ r) / (p @ ap)
        x = x + alpha * p
        r_new = r - alpha * ap
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
        phis.append(0.5 * x @ a @ x - b @ x)
    return phis


def _first_progress_stop(phis: list[float], tol: float, max_iters: int) -> int:
    for i in range(1, max_iters + 1):
        k = max(10, math.ceil(0.1 * i))
        if i > k and phis[i] < 0 and (phis[i] - phis[i - k]) / phis[i] < k * tol:
            return i
    return max_iters


def test_solves_each_block_like_linalg_solve(cg):
    layout, mats, _, matvec, _ = _problem([6, 9, 4], [10.0, 100.0, 3.0])
    b = torch.randn(layout.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    lam = torch.tensor([0.1, 0.01, 1.0], dtype=torch.float64)
    res = cg(matvec, b, layout, lam, max_iters=200, tol=1e-12)
    for (lo, hi), m, lam_b in zip(layout.block_bounds, mats, lam):
        eye = torch.eye(m.shape[0], dtype=torch.float64)
        expect = torch.linalg.solve(m + lam_b * eye, b[lo:hi])
        torch.testing.assert_close(res.x[lo:hi], expect, rtol=1e-8, atol=1e-10)
    assert all(r in ("converged", "nonpositive_curvature", "progress") for r in res.stop_reasons)


def test_blocks_stop_independently_and_skip_finished_products():
    # A well-conditioned 2x2 block converges long before a 30-dim ill-conditioned one.
    layout, _, _, matvec, calls = _problem([2, 30], [2.0, 1e4])
    b = torch.ones(layout.numel, dtype=torch.float64)
    res = function_cg(matvec, b, layout, 0.0, max_iters=40)
    assert res.iterations[0] <= 3 < res.iterations[1]
    assert res.block_products[0] < res.block_products[1]
    assert any(c == [False, True] for c in calls)
    # Each block's result equals a CG run on that block alone.
    for k, ((lo, hi), n) in enumerate(zip(layout.block_bounds, [2, 30])):
        solo_layout, _, _, solo_mv, _ = _problem([n], [[2.0, 1e4][k]], seed=k)
        solo = function_cg(solo_mv, b[lo:hi], solo_layout, 0.0, max_iters=40)
        torch.testing.assert_close(res.x[lo:hi], solo.x, rtol=1e-12, atol=1e-14)
        assert solo.iterations[0] == res.iterations[k]


def test_progress_rule_fires_where_martens_rule_says(cg):
    # A uniform spectrum keeps finite-precision CG on the exact-arithmetic path, so a second,
    # textbook implementation gives the same phi sequence to rounding.
    n, tol, max_iters = 300, 5e-4, 200
    d = torch.linspace(1.0, 3000.0, n, dtype=torch.float64)
    layout = BlockLayout([[torch.zeros(n, dtype=torch.float64)]])
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    res = cg(lambda p, act: d * p, b, layout, 0.0, max_iters=max_iters, tol=tol)
    phis = _numpy_cg_phis(np.diag(d.numpy()), b.numpy(), max_iters)
    expect = _first_progress_stop(phis, tol, max_iters)
    assert 10 < expect < max_iters
    assert res.iterations == [expect]
    assert res.stop_reasons == ["progress"]
    assert res.phi[0].item() == pytest.approx(phis[expect], rel=1e-9)
    looser = cg(lambda p, act: d * p, b, layout, 0.0, max_iters=max_iters, tol=10 * tol)
    assert looser.iterations[0] == _first_progress_stop(phis, 10 * tol, max_iters) < expect


def test_max_iters_and_min_iters(cg):
    layout, _, _, matvec, _ = _problem([20], [1e3])
    b = torch.ones(20, dtype=torch.float64)
    res = cg(matvec, b, layout, 0.0, max_iters=3)
    assert res.iterations == [3] and res.stop_reasons == ["max_iters"]
    d = torch.linspace(1.0, 3000.0, 300, dtype=torch.float64)
    layout = BlockLayout([[torch.zeros(300, dtype=torch.float64)]])
    b = torch.ones(300, dtype=torch.float64)
    loose = cg(lambda p, a: d * p, b, layout, 0.0, max_iters=100, tol=1.0)
    strict = cg(lambda p, a: d * p, b, layout, 0.0, max_iters=100, tol=1.0, min_iters=40)
    assert loose.iterations[0] == 11 and loose.stop_reasons == ["progress"]
    assert strict.iterations[0] == 40 and strict.stop_reasons == ["progress"]


def test_nonpositive_curvature_stops_before_the_step(cg):
    layout = BlockLayout(
        [[torch.zeros(3, dtype=torch.float64)], [torch.zeros(3, dtype=torch.float64)]]
    )
    a = torch.block_diag(-torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    b = torch.ones(6, dtype=torch.float64)
    res = cg(lambda p, act: a @ p, b, layout, 0.0, max_iters=10)
    assert res.stop_reasons[0] == "nonpositive_curvature" and res.iterations[0] == 0
    assert torch.equal(res.x[:3], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(res.x[3:], b[3:])


def test_nonfinite_products_stop_the_block():
    layout = BlockLayout(
        [[torch.zeros(2, dtype=torch.float64)], [torch.zeros(2, dtype=torch.float64)]]
    )

    def matvec(p, active):
        out = p.clone()
        out[:2] = float("nan")
        return out

    res = function_cg(matvec, torch.ones(4, dtype=torch.float64), layout, 0.0, max_iters=5)
    assert res.stop_reasons[0] == "nonfinite"
    assert torch.isfinite(res.x).all()
    assert res.stop_reasons[1] in ("converged", "nonpositive_curvature")


def test_zero_right_hand_side_is_converged():
    layout, _, _, matvec, calls = _problem([4], [10.0])
    res = function_cg(matvec, torch.zeros(4, dtype=torch.float64), layout, 0.0)
    assert res.stop_reasons == ["converged"] and res.iterations == [0] and not calls


def test_preconditioner_diagonal_system_in_one_iteration(cg):
    d = torch.logspace(0, 6, 12, dtype=torch.float64)
    layout = BlockLayout([[torch.zeros(12, dtype=torch.float64)]])
    b = torch.ones(12, dtype=torch.float64)
    res = cg(lambda p, a: d * p, b, layout, 0.0, preconditioner=d, max_iters=50, tol=1e-12)
    torch.testing.assert_close(res.x, b / d)
    plain = cg(lambda p, a: d * p, b, layout, 0.0, max_iters=5)
    assert res.iterations[0] == 1 and plain.iterations[0] == 5


def test_warm_start_from_the_solution(cg):
    layout, _, a, matvec, _ = _problem([8], [50.0])
    b = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    sol = torch.linalg.solve(a, b)
    res = cg(matvec, b, layout, 0.0, x0=sol, max_iters=50)
    torch.testing.assert_close(res.x, sol, rtol=1e-9, atol=1e-12)
    # The residual is rounding noise: the progress rule ends it at its first chance (i = 11).
    assert res.iterations[0] <= 11 and res.stop_reasons[0] != "max_iters"
    assert res.matvecs >= 1  # the residual of the warm start costs one product


def test_iterates_kept_at_martens_schedule(cg):
    assert backtracking_schedule(30) == sorted(
        {math.ceil(5 * 1.3**j) for j in range(10) if math.ceil(5 * 1.3**j) <= 30}
    )
    assert backtracking_schedule(250)[:6] == [5, 7, 9, 11, 15, 19]
    layout, _, _, matvec, _ = _problem([40], [1e6])
    res = cg(
        matvec, torch.ones(40, dtype=torch.float64), layout, 0.0, max_iters=23, keep_iterates=True
    )
    assert [i for i, _ in res.iterates] == [5, 7, 9, 11, 15, 19, 23]
    assert torch.equal(res.iterates[-1][1], res.x)


def test_bitwise_deterministic_on_cpu():
    layout, _, _, matvec, _ = _problem([7, 5], [100.0, 10.0])
    b = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    r1 = function_cg(matvec, b, layout, torch.tensor([0.1, 0.2]), max_iters=30)
    r2 = function_cg(matvec, b, layout, torch.tensor([0.1, 0.2]), max_iters=30)
    assert torch.equal(r1.x, r2.x) and r1.iterations == r2.iterations


def test_float32_vectors_keep_float64_scalars(cg):
    layout = BlockLayout([[torch.zeros(30)]])
    a = _spd(30, 1e3, 3).float()
    res = cg(lambda p, act: a @ p, torch.ones(30), layout, 0.0, max_iters=60, tol=1e-9)
    assert res.x.dtype == torch.float32 and res.phi.dtype == torch.float64
    expect = torch.linalg.solve(a.double(), torch.ones(30, dtype=torch.float64))
    torch.testing.assert_close(res.x.double(), expect, rtol=1e-3, atol=1e-3)


def test_bad_arguments():
    layout, _, _, matvec, _ = _problem([3], [2.0])
    with pytest.raises(ValueError, match="right-hand side"):
        function_cg(matvec, torch.ones(4, dtype=torch.float64), layout, 0.0)
    with pytest.raises(ValueError, match="max_iters"):
        function_cg(matvec, torch.ones(3, dtype=torch.float64), layout, 0.0, max_iters=0)
    with pytest.raises(ValueError, match="x0"):
        function_cg(matvec, torch.ones(3, dtype=torch.float64), layout, 0.0, x0=torch.ones(2))


def _textbook_pcg(a, b, x0, m_inv, iters):
    """Preconditioned CG on A x = b from x0 (numpy, float64), the iterate after ``iters``."""
    x = x0.copy()
    r = b - a @ x
    z = m_inv * r
    p = z.copy()
    for _ in range(iters):
        ap = a @ p
        alpha = (r @ z) / (p @ ap)
        x = x + alpha * p
        r_new = r - alpha * ap
        z_new = m_inv * r_new
        p = z_new + (r_new @ z_new) / (r @ z) * p
        r, z = r_new, z_new
    return x


def test_warm_start_on_a_damped_system_follows_textbook_cg_to_the_solution(cg):
    layout, mats, _, matvec, _ = _problem([7, 5], [200.0, 30.0], seed=3)
    g = torch.Generator().manual_seed(6)
    b = torch.randn(layout.numel, dtype=torch.float64, generator=g)
    x0 = torch.randn(layout.numel, dtype=torch.float64, generator=g)
    lam = [0.3, 2.0]
    # three iterations: each block's iterate is textbook CG's from the same start
    early = cg(matvec, b, layout, lam, x0=x0, max_iters=3, tol=1e-12)
    solved = cg(matvec, b, layout, lam, x0=x0, max_iters=100, tol=1e-14)
    for (lo, hi), m, lam_b in zip(layout.block_bounds, mats, lam):
        damped = (m + lam_b * torch.eye(hi - lo, dtype=torch.float64)).numpy()
        ones = np.ones(hi - lo)
        expect = _textbook_pcg(damped, b[lo:hi].numpy(), x0[lo:hi].numpy(), ones, 3)
        np.testing.assert_allclose(early.x[lo:hi].numpy(), expect, rtol=1e-10, atol=1e-12)
        exact = torch.linalg.solve(torch.from_numpy(damped), b[lo:hi])
        torch.testing.assert_close(solved.x[lo:hi], exact, rtol=1e-9, atol=1e-11)
    assert early.stop_reasons == ["max_iters", "max_iters"]
    # the start's residual is one product per block, and the start is not modified in place
    assert early.block_products == [4, 4] and not torch.equal(early.x, x0)


def test_preconditioned_cg_on_a_coupled_system_is_textbook_pcg(cg):
    n = 10
    a = _spd(n, 500.0, 8)
    m = torch.logspace(-1, 2, n, dtype=torch.float64)  # a diagonal far from A's
    layout = BlockLayout([[torch.zeros(n, dtype=torch.float64)]])
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lam = 0.05
    damped = a + lam * torch.eye(n, dtype=torch.float64)
    for iters in (2, 4):
        res = cg(lambda p, act: a @ p, b, layout, lam, preconditioner=m, max_iters=iters)
        expect = _textbook_pcg(damped.numpy(), b.numpy(), np.zeros(n), 1 / m.numpy(), iters)
        np.testing.assert_allclose(res.x.numpy(), expect, rtol=1e-10, atol=1e-12)
    full = cg(lambda p, act: a @ p, b, layout, lam, preconditioner=m, max_iters=200, tol=1e-14)
    torch.testing.assert_close(full.x, torch.linalg.solve(damped, b), rtol=1e-9, atol=1e-11)


def test_progress_window_grows_beyond_iteration_100(cg):
    # Martens' window k = max(10, ceil(0.1 i)): past i = 100 it is wider than 10, and here a
    # fixed window of 10 would stop four iterations earlier.
    n, tol, max_iters = 800, 5e-5, 300
    d = torch.linspace(1.0, 1e7, n, dtype=torch.float64)
    layout = BlockLayout([[torch.zeros(n, dtype=torch.float64)]])
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    res = cg(lambda p, act: d * p, b, layout, 0.0, max_iters=max_iters, tol=tol)
    phis = _numpy_cg_phis(np.diag(d.numpy()), b.numpy(), max_iters)
    expect = _first_progress_stop(phis, tol, max_iters)
    fixed_window = next(
        i
        for i in range(11, max_iters)
        if phis[i] < 0 and (phis[i] - phis[i - 10]) / phis[i] < 10 * tol
    )
    assert expect == 138 and fixed_window == 134
    assert res.iterations == [expect] and res.stop_reasons == ["progress"]


def test_per_block_limits(cg):
    layout, mats, _, matvec, _ = _problem([6, 6, 6], [1e3, 1e3, 1e3])
    b = torch.ones(18, dtype=torch.float64)
    res = cg(matvec, b, layout, 0.1, max_iters=[2, 5, 40], tol=[1e-12, 1e-12, 1e-12])
    assert res.iterations[:2] == [2, 5] and res.stop_reasons[:2] == ["max_iters"] * 2
    assert res.stop_reasons[2] == "converged"
    # each block as if it ran alone with its own limit
    for k, cap in enumerate([2, 5]):
        lo, hi = layout.block_bounds[k]
        solo_layout = BlockLayout([[torch.zeros(6, dtype=torch.float64)]])
        solo = cg(lambda p, a, m=mats[k]: m @ p, b[lo:hi], solo_layout, 0.1, max_iters=cap)
        torch.testing.assert_close(res.x[lo:hi], solo.x, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="max_iters needs one value or one per block"):
        cg(matvec, b, layout, 0.1, max_iters=[2, 5])
