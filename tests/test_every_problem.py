"""Every registered problem with every optimizer: the GGN of its model and loss is a symmetric
PSD operator whose per-block products agree with the full product on block-supported vectors,
and adam, bdhf and hf each take steps on its synthetic data."""

from __future__ import annotations

import math

import pytest
import torch

from bdhf_bench.curvature import BlockLayout, GGNContext, partition
from bdhf_bench.data import train_stream
from bdhf_bench.optim import ModelClosure, get_optimizer
from bdhf_bench.problems import get_problem, problem_names, seeded_model
from bdhf_bench.runner.loop import problem_data

BATCH = 8
# Small CG budgets and a fixed step: this checks that products, CG, rho and the update run
# through every model and loss, not convergence (line search is tested on small nets).
HF_SETTINGS = {"cg_max_iters": 2, "curvature_fraction": 0.5, "step_rule": "fixed", "lr": 0.1}


def _batch(name: str):
    problem = get_problem(name)
    splits = problem_data(
        problem,
        batch_size=BATCH,
        source="synthetic",
        data_dir=None,
        device=torch.device("cpu"),
        seed=0,
    )
    x, y = next(iter(train_stream(splits, BATCH, seed=0, augment=problem.augment).epoch(0)))
    return problem, *problem.prepare_batch(x, y)


@pytest.mark.parametrize("name", problem_names())
def test_curvature_of_every_problem(name):
    problem, inputs, targets = _batch(name)
    model = seeded_model(problem, 0).train()
    torch.manual_seed(1)
    ctx = GGNContext.from_model(model, inputs, targets, problem.loss)
    params = list(model.parameters())
    blocks = [b.params for b in partition(model)]
    layout = BlockLayout(blocks, all_params=params)
    g = torch.Generator().manual_seed(2)
    v, w = (torch.randn(layout.numel, generator=g) for _ in range(2))
    gv, gw = ctx.packed_product(layout, v), ctx.packed_product(layout, w)
    scale = gv.abs().max().item() * v.abs().max().item() * layout.numel
    assert math.isfinite(scale) and scale > 0
    # symmetric and positive semi-definite
    assert abs(torch.dot(w, gv) - torch.dot(v, gw)).item() <= 1e-4 * scale
    assert torch.dot(v, gv).item() >= -1e-5 * scale
    # a vector living in one block: the full product's block part is that block's product
    k = max(range(layout.num_blocks), key=lambda b: layout.block_numels[b])
    lo, hi = layout.block_bounds[k]
    only = torch.zeros_like(v)
    only[lo:hi] = v[lo:hi]
    full = ctx.packed_product(layout, only)[lo:hi]
    active = [b == k for b in range(layout.num_blocks)]
    block = ctx.packed_block_products(layout, only, active)[lo:hi]
    torch.testing.assert_close(block, full, rtol=1e-4, atol=1e-5 * full.abs().max().item())


@pytest.mark.parametrize("name", problem_names())
@pytest.mark.parametrize("optimizer", ["adam", "bdhf", "hf"])
def test_every_optimizer_steps_on_every_problem(name, optimizer):
    problem, inputs, targets = _batch(name)
    model = seeded_model(problem, 0).train()
    hps = HF_SETTINGS if optimizer != "adam" else {}
    entry = get_optimizer(optimizer)
    opt = entry.build(model, entry.resolve(hps))
    l2 = problem.l2_coefficients(model)
    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(ModelClosure(model, problem.loss, inputs, targets, l2))
    assert math.isfinite(float(loss))
    moved = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if optimizer == "adam":
        assert moved
    else:
        stats = opt.last_step
        assert sum(opt.totals[k] for k in ("block_products", "full_products")) > 0
        assert moved == (opt.totals["accepted"] > 0)
        assert stats.outcome in ("accepted", "not_descent")
        assert len(stats.rho) >= 1 or stats.outcome == "not_descent"
