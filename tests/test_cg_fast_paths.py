"""The overhead-free CG loop against the loop it replaced (tests/cg_reference.py, kept verbatim):
bitwise equal with default options, with a workspace reused across runs and with the damping
added by the product; ``check_every`` > 1 equal in every result but the product counts; the
products written into one reused buffer (damped or not) equal the packed products."""

from __future__ import annotations

import math

import pytest
import torch
from cg_reference import DampingFunction, function_cg, reference_block_cg
from torch import nn

from bdhf_bench.curvature import (
    BlockLayout,
    CrossEntropy,
    GGNContext,
    Workspace,
    block_cg,
    partition,
)


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
    _same(_run(function_cg, case), ref)
    # a matvec that hands back the same buffer every call changes nothing
    _same(_run(function_cg, case, reuse=True), ref)
    _same(_run(function_cg, case, check_every=1), ref)


def _damping_matvec(case):
    """The case's matvec with the damping added by the product itself (as the GGN's does)."""
    sizes = case["sizes"]
    dtype = case.get("dtype", torch.float64)
    _, matvec = _system(sizes, case["conds"], dtype)

    def damped(p, active, lam):
        ap = matvec(p, active)
        for ap_k, p_k, a, lam_k in zip(ap.split(sizes), p.split(sizes), active, lam):
            if a and lam_k:
                torch.add(ap_k, p_k, alpha=lam_k, out=ap_k)
        return ap

    return damped


@pytest.mark.parametrize("name", list(CASES))
def test_a_reused_workspace_and_a_damping_matvec_keep_the_bits(name):
    case = CASES[name]
    ref = _run(reference_block_cg, case)
    ws = Workspace()
    other = dict(case, kw=dict(case["kw"], max_iters=3))
    first = _run(function_cg, other, workspace=ws)  # leaves stale values behind
    first.x.fill_(float("nan"))
    for _, v in first.iterates:
        v.fill_(float("nan"))
    got = _run(function_cg, case, workspace=ws)
    _same(got, ref)
    assert got.x is first.x  # the same storage, run after run
    held = len(ws)
    _same(_run(function_cg, case, workspace=ws), ref)
    assert len(ws) == held

    def fused(matvec, b, layout, damping, **kw):
        return block_cg(DampingFunction(_damping_matvec(case), layout), b, damping, **kw)

    _same(_run(fused, case), ref)


def test_workspace_reuses_storage_per_name_shape_and_dtype():
    ws = Workspace()
    a = torch.zeros(5)
    t = ws.get("v", a)
    assert t.shape == (5,) and t.dtype == a.dtype
    assert ws.get("v", a) is t
    assert ws.get("w", a) is not t
    assert ws.get("v", a, (2, 3)).shape == (2, 3)  # a new shape: new storage
    assert ws.get("v", torch.zeros(2, 3)).data_ptr() == ws.get("v", a, (2, 3)).data_ptr()
    assert ws.get("v", a.double(), (2, 3)).dtype == torch.float64
    assert len(ws) == 2 and ws.get("w", a).shape == (5,)  # one tensor per name, replaced
    before = ws.get("w", a)
    assert ws.get("w", a.double()) is not before and len(ws) == 2


def test_pack_into_a_buffer_is_the_pack():
    params = [torch.randn(3, 4), torch.randn(7), torch.randn(2, 2, 2)]
    layout = BlockLayout([params[:2], params[2:]])
    out = torch.full((layout.numel,), float("nan"))
    assert layout.pack(params, out=out) is out
    assert torch.equal(out, layout.pack(params))
    with pytest.raises(ValueError, match="expected"):
        layout.pack(params, out=torch.empty(layout.numel + 1))


def _per_block_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("every", [2, 3, 8])
def test_check_every_keeps_the_results_and_pays_in_products(name, every):
    case = CASES[name]
    ref = _run(reference_block_cg, case)
    got = _run(function_cg, case, check_every=every)
    _same(got, ref, counts=False)
    assert got.matvecs >= ref.matvecs
    assert all(g >= r for g, r in zip(got.block_products, ref.block_products))
    # the extra products: at most every-1 per block past its stop, none for a block that ran
    # to the last iteration
    assert all(g - r <= every - 1 for g, r in zip(got.block_products, ref.block_products))
    if max(ref.iterations) == case["kw"].get("max_iters", 80):
        assert got.matvecs == ref.matvecs  # the mask is read at the limit
    # exactly: a block stopped on the device at iteration s keeps its product until the next
    # read, at the next multiple of `every` (or at the loop's limit)
    warm = 1 if case["kw"].get("warm") else 0
    limit = max(_per_block_list(case["kw"].get("max_iters", 80)))
    read_at = [min(math.ceil((r - warm) / every) * every, limit) for r in ref.block_products]
    assert got.block_products == [warm + n for n in read_at]
    assert got.matvecs == warm + max(read_at)


def test_check_every_reads_the_mask_less_often():
    case = CASES["one_lambda"]
    reads = []
    real = torch.Tensor.tolist

    def counting(self):
        reads.append(self.numel())
        return real(self)

    torch.Tensor.tolist = counting
    try:
        ref = _run(function_cg, case)
        n_ref = len(reads)
        reads.clear()
        _run(function_cg, case, check_every=4)
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
        function_cg(matvec, torch.ones(3, dtype=torch.float64), layout, 0.0, check_every=0)


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
    ref = ctx.packed_block_products(layout, v, active)
    out = torch.full_like(v, float("nan"))  # stale values everywhere, as in a reused buffer
    got = ctx.packed_block_products(layout, v, active, out=out)
    assert got is out
    assert torch.equal(got, ref)
    for (lo, hi), a in zip(layout.block_bounds, active):
        if not a:
            assert torch.equal(got[lo:hi], torch.zeros(hi - lo))
        else:
            assert got[lo:hi].abs().sum() > 0


@pytest.mark.parametrize("width", [8, 37])
@pytest.mark.parametrize("active", [[True, True, True], [True, False, True]])
def test_a_damped_product_is_the_product_plus_the_damping(width, active):
    """Weights with L2 and biases without, sizes that end inside a vector register: the fused
    damping has the bits of adding ``lambda v`` to the written product afterwards."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(13, width), nn.Tanh(), nn.Linear(width, 29))
    model.append(nn.Tanh()).append(nn.Linear(29, 3))
    x = torch.randn(16, 13)
    y = torch.randint(0, 3, (16,))
    params = list(model.parameters())
    l2 = [0.01 if p.dim() > 1 else 0.0 for p in params]
    ctx = GGNContext.from_model(model, x, y, CrossEntropy(), params, l2)
    layout = BlockLayout([b.params for b in partition(model)], all_params=params)
    v = torch.randn(layout.numel, generator=torch.Generator().manual_seed(3))
    lam = [0.3, 0.0, 1e-3]
    ref = ctx.packed_block_products(layout, v, active, out=torch.empty_like(v))
    for (lo, hi), a, lam_b in zip(layout.block_bounds, active, lam):
        if a and lam_b:
            ref[lo:hi].add_(v[lo:hi], alpha=lam_b)
    out = torch.full_like(v, float("nan"))
    got = ctx.packed_block_products(layout, v, active, out=out, damping=lam)
    assert got is out and torch.equal(got, ref)
    assert not torch.equal(
        got, ctx.packed_block_products(layout, v, active)
    )  # the damping is there
    with pytest.raises(ValueError, match="damping needs out"):
        ctx.packed_block_products(layout, v, active, damping=lam)
    with pytest.raises(ValueError, match="one value per block"):
        ctx.packed_block_products(layout, v, active, out=out, damping=lam[:2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_finite_is_isfinite_all(dtype):
    from bdhf_bench.curvature import all_finite

    g = torch.Generator().manual_seed(0)
    for bad in (math.nan, math.inf, -math.inf, None):
        for pos in (0, 17, 99_999):
            t = torch.randn(100_000, generator=g, dtype=torch.float64).to(dtype)
            if bad is not None:
                t[pos] = bad
            assert all_finite(t) == bool(torch.isfinite(t).all()) == (bad is None)
    assert all_finite(torch.empty(0, dtype=dtype))
    big = torch.full((10,), torch.finfo(dtype).max, dtype=dtype)  # finite, but sums overflow
    assert all_finite(big) and all_finite(-big)


def _old_engine(monkeypatch):
    """The step as before: the reference loop (which damps the products itself, in a new
    vector each time), and products packed into a new vector."""
    import bdhf_bench.optim.hf as hf_module

    real = GGNContext.packed_block_products

    def packed(self, layout, flat, active, out=None, damping=None):
        return real(self, layout, flat, active)

    def reference(operator, b, damping, workspace=None, check_every=1, compiled=False, **kwargs):
        assert check_every == 1 and not compiled  # the reference reads the mask every iteration
        layout = operator.layout
        zero = [0.0] * layout.num_blocks

        def undamped(p, active):  # the patched product ignores out and damping
            return operator.matvec(p, active, zero)

        return reference_block_cg(undamped, b, layout, damping, **kwargs)

    monkeypatch.setattr(hf_module, "block_cg", reference)
    monkeypatch.setattr(GGNContext, "packed_block_products", packed)


@pytest.mark.parametrize(
    "kind, settings",
    [
        ("bdhf", {}),
        ("bdhf", {"damping_mode": "per_block", "precondition": True, "cg_max_iters": 7}),
        ("hf", {"cg_max_iters": 30}),
    ],
)
def test_optimizer_steps_are_bitwise_the_old_engines(monkeypatch, kind, settings):
    from bdhf_bench.optim import (
        BlockDiagonalHF,
        HessianFree,
        ModelClosure,
        param_groups_from_blocks,
    )

    def run():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 16), nn.Tanh())
        model.append(nn.Linear(16, 4))
        x = torch.randn(64, 12)
        y = torch.randint(0, 4, (64,))
        l2 = [1e-3 if p.dim() > 1 else 0.0 for p in model.parameters()]
        if kind == "hf":
            opt = HessianFree(model.parameters(), **settings)
        else:
            opt = BlockDiagonalHF(param_groups_from_blocks(partition(model)), **settings)
        stats = []
        for k in range(4):
            opt.step(ModelClosure(model, CrossEntropy(), x[16 * k :], y[16 * k :], l2))
            stats.append(opt.last_step)
        return [p.detach().clone() for p in model.parameters()], stats

    new_params, new_stats = run()
    _old_engine(monkeypatch)
    old_params, old_stats = run()
    assert all(torch.equal(a, b) for a, b in zip(new_params, old_params))
    assert new_stats == old_stats
    assert sum(sum(s.cg_iterations) for s in new_stats) > 8 and new_stats[-1].accepted


def test_a_nonfinite_solution_without_a_nonfinite_stop_is_rejected(monkeypatch):
    """The step's one finiteness check of CG's x (all_finite) rejects the step and stores no
    warm start, also when no block stopped as non-finite (an overflow in the last update)."""
    import bdhf_bench.optim.hf as hf_module
    from bdhf_bench.optim import BlockDiagonalHF, ModelClosure, param_groups_from_blocks

    def overflowing(*args, **kwargs):
        res = block_cg(*args, **kwargs)
        res.x[3] = math.inf
        assert "nonfinite" not in res.stop_reasons
        return res

    monkeypatch.setattr(hf_module, "block_cg", overflowing)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    opt = BlockDiagonalHF(param_groups_from_blocks(partition(model)), cg_max_iters=5)
    opt.step(ModelClosure(model, CrossEntropy(), x, y))
    assert opt.last_step.outcome == "nonfinite_curvature" and not opt.last_step.accepted
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all("cg_solution" not in opt.state[p] for p in model.parameters())
