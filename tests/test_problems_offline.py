"""The problems on packaged data (MNIST-1D, digits): architectures as published, GGN products
against J^T H J from autograd on a real batch (float64), one step of each optimizer on real data."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from dense_reference import dense_factors, flat

from bdhf_bench.curvature import BlockLayout, GGNContext, partition
from bdhf_bench.data import load_splits
from bdhf_bench.optim import ModelClosure, get_optimizer
from bdhf_bench.problems import get_problem, seeded_model

PROBLEMS = ["mnist1d_mlp", "mnist1d_cnn", "mnist1d_lstm", "digits_autoencoder"]
DATASET = {name: "digits" if name.startswith("digits") else "mnist1d" for name in PROBLEMS}


@pytest.fixture(scope="module")
def real_splits() -> dict:
    return {d: load_splits(d, seed=42) for d in ("mnist1d", "digits")}


def _batch(real_splits, name: str, n: int):
    problem = get_problem(name)
    x, y = real_splits[DATASET[name]].train
    return problem, *problem.prepare_batch(x[:n], y[:n])


def test_architectures_have_the_published_sizes() -> None:
    def count(name: str) -> int:
        return sum(p.numel() for p in seeded_model(get_problem(name), 0).parameters())

    # MNIST-1D paper: MLP 40-100-100-10 (4,100 + 10,100 + 1,010), CNN 150 + 1,900 + 1,900 + 1,260
    assert count("mnist1d_mlp") == 15210
    assert count("mnist1d_cnn") == 5210
    # three LSTM layers of 32 (4*32*(in + 32 + 2) each) and a 32 -> 10 read-out
    assert count("mnist1d_lstm") == 4 * 32 * 35 + 2 * 4 * 32 * 66 + 330
    # 64-128-64-32-8 and its mirror
    widths = [64, 128, 64, 32, 8, 32, 64, 128, 64]
    assert count("digits_autoencoder") == sum(a * b + b for a, b in itertools.pairwise(widths))


def test_mlp_is_residual_and_cnn_reads_five_positions() -> None:
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(0))
    mlp = seeded_model(get_problem("mnist1d_mlp"), 0)
    h = torch.relu(x @ mlp.linear1.weight.T + mlp.linear1.bias)
    h = h + torch.relu(h @ mlp.linear2.weight.T + mlp.linear2.bias)
    torch.testing.assert_close(mlp(x), h @ mlp.linear3.weight.T + mlp.linear3.bias)
    cnn = seeded_model(get_problem("mnist1d_cnn"), 0)
    assert cnn[:-1](x).shape == (4, 25 * 5)  # 40 -> 19 -> 10 -> 5 points of 25 channels


def test_batches_become_sequences_and_reconstruction_targets() -> None:
    x, y = torch.rand(4, 40), torch.arange(4)
    seq, labels = get_problem("mnist1d_lstm").prepare_batch(x, y)
    assert torch.equal(seq[:, :, 0], x) and seq.shape == (4, 40, 1) and torch.equal(labels, y)
    pixels = torch.rand(4, 64)
    inputs, targets = get_problem("digits_autoencoder").prepare_batch(pixels, y)
    assert torch.equal(inputs, pixels) and torch.equal(targets, pixels)


@pytest.mark.parametrize("name", PROBLEMS)
def test_ggn_products_match_dense_jacobians_and_loss_hessian(real_splits, name: str) -> None:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        problem, inputs, targets = _batch(real_splits, name, 3)
        inputs = inputs.double()
        targets = targets.double() if targets.is_floating_point() else targets
        model = seeded_model(problem, 0).double()
        params = list(model.parameters())
        j, h = dense_factors(model, inputs, lambda *o: problem.loss(o[0], targets))
        ctx = GGNContext.from_model(model, inputs, targets, problem.loss)
        layout = BlockLayout([b.params for b in partition(model)], all_params=params)
        assert layout.num_blocks == len(list(partition(model))) > 1
        v = torch.randn(layout.numel, generator=torch.Generator().manual_seed(1))
        # the layout is in blocks' order; the dense factors in the parameters' order
        v_params = flat(_in_param_order(layout, v, params))

        def reference(u):
            return j.T @ (h @ (j @ u))

        full = flat(_in_param_order(layout, ctx.packed_product(layout, v), params))
        ref = reference(v_params)
        torch.testing.assert_close(full, ref, rtol=1e-6, atol=1e-8 * ref.abs().max().item())
        # each block's product is the dense G's diagonal block applied to that block's part
        for k in range(layout.num_blocks):
            lo, hi = layout.block_bounds[k]
            only = torch.zeros_like(v)
            only[lo:hi] = v[lo:hi]
            got = ctx.packed_block_products(
                layout, only, [b == k for b in range(layout.num_blocks)]
            )
            expect = reference(flat(_in_param_order(layout, only, params)))
            mask = flat(_in_param_order(layout, (only != 0).double(), params)) != 0
            got_params = flat(_in_param_order(layout, got, params))
            torch.testing.assert_close(
                got_params[mask], expect[mask], rtol=1e-6, atol=1e-8 * ref.abs().max().item()
            )
            assert not got_params[~mask].any()
    finally:
        torch.set_default_dtype(old)


def _in_param_order(layout: BlockLayout, vector: torch.Tensor, params) -> list[torch.Tensor]:
    """A layout vector as one tensor per parameter, in ``params`` order."""
    by_id = {
        id(p): t
        for block, tensors in zip(layout.blocks, layout.unpack_blocks(vector))
        for p, t in zip(block, tensors)
    }
    return [by_id[id(p)] for p in params]


@pytest.mark.parametrize("name", PROBLEMS)
def test_adam_steps_like_torch_adam_on_real_data(real_splits, name: str) -> None:
    problem, inputs, targets = _batch(real_splits, name, 32)
    model, twin = seeded_model(problem, 0), seeded_model(problem, 0)
    adam = get_optimizer("adam")
    opt = adam.build(model, adam.resolve({"lr": 1e-2}))
    l2 = problem.l2_coefficients(model)
    loss = opt.step(ModelClosure(model, problem.loss, inputs, targets, l2))
    reference = torch.optim.Adam(twin.parameters(), lr=1e-2)
    reference.zero_grad()
    expect = problem.loss(twin(inputs), targets)
    expect.backward()
    reference.step()
    assert float(loss.detach()) == pytest.approx(float(expect.detach()), rel=1e-6)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("optimizer", ["bdhf", "hf"])
def test_hf_steps_lower_the_real_batch_loss(real_splits, name: str, optimizer: str) -> None:
    problem, inputs, targets = _batch(real_splits, name, 64)
    model = seeded_model(problem, 0)
    entry = get_optimizer(optimizer)
    opt = entry.build(model, entry.resolve({"cg_max_iters": 5}))
    l2 = problem.l2_coefficients(model)
    with torch.no_grad():
        before = float(problem.loss(model(inputs), targets))
    loss = opt.step(ModelClosure(model, problem.loss, inputs, targets, l2))
    assert float(loss.detach()) == pytest.approx(before, rel=1e-5)
    with torch.no_grad():
        after = float(problem.loss(model(inputs), targets))
    assert opt.last_step.outcome == "accepted" and math.isfinite(after)
    assert after < before
    assert opt.totals["block_products"] + opt.totals["full_products"] > 0
