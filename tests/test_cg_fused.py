"""The compiled CG iteration (``block_cg(..., compiled=True)``, the GPU path) against the eager
loop, on CPU: the same iterations, stop reasons, product counts and kept iterates, and x and
phi equal to rounding. The systems are well-conditioned on purpose: CG's iterates on an
ill-conditioned block move by far more than one rounding when one input bit changes (the eager
loop does so too), so only there is "equal to rounding" a test of the arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from cg_reference import function_cg
from test_cg_fast_paths import _rhs, _system

from bdhf_bench.curvature import BlockLayout

CASES = {
    # blocks stopping apart (converged, progress), one lambda
    "one_lambda": dict(sizes=[5, 40, 12], conds=[3.0, 30.0, 10.0], kw=dict(damping=0.01)),
    # a lambda per block, a preconditioner, a warm start, kept iterates, per-block limits
    "per_block": dict(
        sizes=[25, 35, 10],
        conds=[20.0, 30.0, 5.0],
        kw=dict(
            damping=[0.05, 0.2, 0.0],
            warm=True,
            precond=True,
            keep_iterates=True,
            max_iters=[7, 60, 30],
            min_iters=[0, 14, 1],
            tol=[5e-4, 1e-3, 1e-2],
        ),
    ),
    # float32 vectors (float64 scalars), the mask read every third iteration, iterates kept
    "float32_every_3": dict(
        sizes=[30, 50, 8],
        conds=[30.0, 20.0, 10.0],
        dtype=torch.float32,
        kw=dict(
            damping=[0.1, 0.001, 0.0], keep_iterates=True, check_every=3, max_iters=[80, 80, 9]
        ),
    ),
}


def _run(case, **extra):
    sizes, dtype = case["sizes"], case.get("dtype", torch.float64)
    kw = dict(case["kw"])
    layout, matvec = _system(sizes, case["conds"], dtype)
    n = layout.numel
    if kw.pop("warm", False):
        kw["x0"] = 0.3 * _rhs(n, dtype, seed=8)
    if kw.pop("precond", False):
        kw["preconditioner"] = torch.logspace(-0.5, 0.5, n, dtype=torch.float64).to(dtype)
    damping = kw.pop("damping")
    kw.setdefault("max_iters", 80)
    return function_cg(matvec, _rhs(n, dtype), layout, damping, **kw, **extra)


def _close(got, want, rtol):
    assert got.iterations == want.iterations
    assert got.stop_reasons == want.stop_reasons
    assert got.matvecs == want.matvecs and got.block_products == want.block_products
    assert [i for i, _ in got.iterates] == [i for i, _ in want.iterates]
    scale = want.x.abs().max()
    torch.testing.assert_close(got.x, want.x, rtol=0, atol=rtol * scale)
    for (_, u), (_, v) in zip(got.iterates, want.iterates):
        torch.testing.assert_close(u, v, rtol=0, atol=rtol * scale)
    torch.testing.assert_close(got.phi, want.phi, rtol=rtol, atol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_iteration_is_the_eager_loop_to_rounding(name):
    case = CASES[name]
    eager = _run(case)
    eager = type(eager)(**{**eager.__dict__, "x": eager.x.clone()})
    assert len(set(eager.iterations)) == len(eager.iterations)  # every block stops apart
    rtol = 1e-9 if case.get("dtype", torch.float64) == torch.float64 else 1e-4
    _close(_run(case, compiled=True), eager, rtol)


def test_compiled_iteration_stops_as_the_eager_loop_on_bad_curvature():
    """A block with negative curvature stops before its first step, one with a non-finite
    product stops as non-finite, and the healthy block is solved as by linalg.solve."""
    layout = BlockLayout([[torch.zeros(3, dtype=torch.float64)] for _ in range(3)])
    a = torch.block_diag(
        -torch.eye(3, dtype=torch.float64),
        torch.eye(3, dtype=torch.float64),
        torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)),
    )

    def matvec(p, active):  # block by block, as the GGN products are
        out = torch.cat([a[k : k + 3, k : k + 3] @ p[k : k + 3] for k in (0, 3, 6)])
        out[3:6] = math.nan
        return out

    b = torch.ones(9, dtype=torch.float64)
    eager = function_cg(matvec, b, layout, 0.0, max_iters=10)
    got = function_cg(matvec, b, layout, 0.0, max_iters=10, compiled=True)
    assert (
        got.stop_reasons
        == eager.stop_reasons
        == [
            "nonpositive_curvature",
            "nonfinite",
            "converged",
        ]
    )
    assert got.iterations == eager.iterations == [0, 0, 3]
    assert torch.equal(got.x[:6], torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(got.x[6:], torch.linalg.solve(a[6:, 6:], b[6:]))
