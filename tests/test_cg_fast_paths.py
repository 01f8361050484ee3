"""The overhead-free CG loop against the loop it replaced (tests/cg_reference.py, kept verbatim):
bitwise equal with default options; ``check_every`` > 1 equal in every result but the product
counts; the products written into one reused buffer equal the packed products."""

from __future__ import annotations

import math

import pytest
import torch
from cg_reference import reference_block_cg
from torch import nn

from bdhf_bench.curvature import BlockLayout, CrossEntropy, GGNContext, block_cg, partition


def _spd(n: int, cond: float, seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    return (q @ torch.diag(eig) @ q.T).to(dtype)


def _system(sizes, conds, dtype=torch.float64, seed=0, reuse=False):
    """Blocks with SPD matrices; the matvec writes into one buffer when ``reuse``."""
    mats = [_spd(n, c, seed + i, dtype) for i, (n, c) in enumerate(zip(sizes, conds))]
    layout = BlockLayout([[torch.zeros(n, dtype=dtype)] for n in sizes])
    buf = torch.empty(sum(sizes), dtype=dtype)

    def matvec(p, active):
        parts = [
            m @ seg if a else torch.zeros_like(seg)
            for m, seg, a in zip(mats, p.split(sizes), active)
        ]
        if not reuse:
            return torch.cat(parts)
        return torch.cat(parts, out=buf)

    return layout, matvec


def _same(a, b, counts=True):
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.phi, b.phi)
    assert a.iterations == b.iterations and a.stop_reasons == b.stop_reasons
    assert [i for i, _ in a.iterates] == [i for i, _ in b.iterates]
    assert all(torch.equal(u, v) for (_, u), (_, v) in zip(a.iterates, b.iterates))
    if counts:
        assert a.matvecs == b.matvecs and a.block_products == b.block_products


def _rhs(n, dtype, seed=7):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(
        dtype
    )


CASES = {
    # several blocks stopping at different iterations, one lambda (the one-kernel damping)
    "one_lambda": dict(sizes=[5, 40, 12], conds=[3.0, 1e5, 1e2], kw=dict(damping=0.01)),
    # a lambda per block (per-block damping), float32 vectors, progress stops
    "per_block_float32": dict(
        sizes=[30, 50, 8],
        conds=[1e3, 1e4, 10.0],
        dtype=torch.float32,
        kw=dict(damping=[0.1, 0.001, 0.0], tol=1e-3),
    ),
    # warm start, a preconditioner, iterates kept, per-block limits
    "warm_precond_limits": dict(
        sizes=[25, 35, 10],
        conds=[1e4, 1e3, 50.0],
        kw=dict(
            damping=[0.05, 0.2, 0.05],
            warm=True,
            precond=True,
            keep_iterates=True,
            max_iters=[7, 60, 30],
            min_iters=[0, 12, 1],
        ),
    ),
    # ten distinct eigenvalues: solved at iteration 10, so a stale mask runs past the kept
    # iterate at 11 (and 15)
    "solved_at_ten": dict(sizes=[10], conds=[10.0], kw=dict(damping=0.0, keep_iterates=True)),
    # one block (full HF), iterates kept, the max-iteration stop
    "one_block": dict(
        sizes=[120], conds=[1e6], kw=dict(damping=1e-4, keep_iterates=True, max_iters=37)
    ),
}


def _run(solver, case, reuse=False, **extra):
    sizes, conds = case["sizes"], case["conds"]
    dtype = case.get("dtype", torch.float64)
    kw = dict(case["kw"])
    layout, matvec = _system(sizes, conds, dtype, reuse=reuse)
    n = layout.numel
    b = _rhs(n, dtype)
    if kw.pop("warm", False):
        kw["x0"] = 0.3 * _rhs(n, dtype, seed=8)
    if kw.pop("precond", False):
        kw["preconditioner"] = torch.logspace(-1, 1, n, dtype=torch.float64).to(dtype)
    damping = kw.pop("damping")
    kw.setdefault("max_iters", 80)
    return solver(matvec, b, layout, damping, **kw, **extra)


@pytest.mark.parametrize("name", list(CASES))
def test_default_loop_is_bitwise_the_reference(name):
    case = CASES[name]
    ref = _run(reference_block_cg, case)
    assert len(set(ref.iterations)) > 1 or len(ref.iterations) == 1  # blocks stop apart
    _same(_run(block_cg, case), ref)
    # a matvec that hands back the same buffer every call changes nothing
    _same(_run(block_cg, case, reuse=True), ref)
    _same(_run(block_cg, case, check_every=1), ref)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("every", [2, 3, 8])
def test_check_every_keeps_the_results_and_pays_in_products(name, every):
    case = CASES[name]
    ref = _run(reference_block_cg, case)
    got = _run(block_cg, case, check_every=every)
    _same(got, ref, counts=False)
    assert got.matvecs >= ref.matvecs
    assert all(g >= r for g, r in zip(got.block_products, ref.block_products))
    # the extra products: at most every-1 per block past its stop, none for a block that ran
    # to the last iteration
    assert all(g - r <= every - 1 for g, r in zip(got.block_products, ref.block_products))
    if max(ref.iterations) == case["kw"].get("max_iters", 80):
        assert got.matvecs == ref.matvecs  # the mask is read at the limit


def test_check_every_reads_the_mask_less_often():
    case = CASES["one_lambda"]
    reads = []
    real = torch.Tensor.tolist

    def counting(self):
        reads.append(self.numel())
        return real(self)

    torch.Tensor.tolist = counting
    try:
        ref = _run(block_cg, case)
        n_ref = len(reads)
        reads.clear()
        _run(block_cg, case, check_every=4)
        n_got = len(reads)
    finally:
        torch.Tensor.tolist = real
    iters = max(ref.iterations)
    assert iters > 20
    # one read per iteration by default, about one per four with check_every=4
    assert n_ref - n_got >= iters - math.ceil(iters / 4) - 1


def test_check_every_must_be_positive():
    layout, matvec = _system([3], [2.0])
    with pytest.raises(ValueError, match="check_every"):
        block_cg(matvec, torch.ones(3, dtype=torch.float64), layout, 0.0, check_every=0)


def _net_and_context():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.randn(16, 6)
    y = torch.randint(0, 3, (16,))
    params = list(model.parameters())
    l2 = [0.01 if p.dim() > 1 else 0.0 for p in params]
    ctx = GGNContext.from_model(model, x, y, CrossEntropy(), params, l2)
    blocks = [b.params for b in partition(model)]
    return ctx, BlockLayout(blocks, all_params=params)


@pytest.mark.parametrize("active", [[True, True, True], [True, False, True], [False, True, False]])
def test_layout_product_into_a_buffer_is_the_packed_product(active):
    ctx, layout = _net_and_context()
    v = torch.randn(layout.numel, generator=torch.Generator().manual_seed(3))
    ref = ctx.layout_mvp(layout, v, active)
    out = torch.full_like(v, float("nan"))  # stale values everywhere, as in a reused buffer
    got = ctx.layout_mvp(layout, v, active, out=out)
    assert got is out
    assert torch.equal(got, ref)
    for (lo, hi), a in zip(layout.block_bounds, active):
        if not a:
            assert torch.equal(got[lo:hi], torch.zeros(hi - lo))
        else:
            assert got[lo:hi].abs().sum() > 0
