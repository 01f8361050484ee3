"""The automatic curvature fraction (``curvature_fraction="auto"``): the noise estimates against
closed forms and per-example gradients, the half-batch gradient against autograd, and the
fraction HF picks on batches whose noise is known (none, or all noise)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bdhf_bench.curvature import MSE, ConvexOutputLoss, CrossEntropy, partition
from bdhf_bench.optim import (
    BlockDiagonalHF,
    HessianFree,
    ModelClosure,
    get_optimizer,
    param_groups_from_blocks,
)
from bdhf_bench.optim.noise_rules import (
    AUTO_FRACTIONS,
    NOISE_DECAY,
    NOISE_MULTIPLE,
    auto_fraction,
    batch_over_noise,
    half_means,
    moving_average,
    noise_estimate,
    signal_estimate,
)
from bdhf_bench.optim.protocol import HessianFreeDriver


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("n", "first"), [(10, 5), (11, 5), (12, 3)])
def test_half_means_are_the_halves_mean_gradients(reduction, n, first):
    u = torch.randn(n, 7, dtype=torch.float64)  # per-example gradients
    whole = u.sum(0) if reduction == "sum" else u.mean(0)
    part = u[:first].sum(0) if reduction == "sum" else u[:first].mean(0)
    a, b = half_means(whole, part, first, n, reduction)
    torch.testing.assert_close(a, u[:first].mean(0))
    torch.testing.assert_close(b, u[first:].mean(0))


def test_the_estimates_are_unbiased_for_the_signal_and_the_noise():
    """Per-example gradients drawn around G with covariance diag(s^2): over many draws the
    mean estimates are |G|^2 and tr(Sigma), for unequal halves too."""
    g = torch.Generator().manual_seed(0)
    true_g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    scale = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    draws, n, first = 20000, 12, 4
    u = true_g + scale * torch.randn(draws, n, 3, generator=g, dtype=torch.float64)
    a, b = u[:, :first].mean(1), u[:, first:].mean(1)
    signal = sum(float(signal_estimate(x, y)) for x, y in zip(a, b)) / draws
    noise = sum(float(noise_estimate(x, y, first, n - first)) for x, y in zip(a, b)) / draws
    assert signal == pytest.approx(float(true_g @ true_g), rel=0.03)
    assert noise == pytest.approx(float(scale.square().sum()), rel=0.03)


def test_the_fraction_switches_at_the_noise_multiple():
    # B / B_noise = B |G|^2 / tr(Sigma)
    assert batch_over_noise(100, 2.0, 50.0) == 4.0
    assert auto_fraction(NOISE_MULTIPLE) == AUTO_FRACTIONS[1] == 1.0
    assert auto_fraction(math.nextafter(NOISE_MULTIPLE, 0.0)) == AUTO_FRACTIONS[0] == 0.25
    assert batch_over_noise(100, -1.0, 5.0) == 0.0  # the halves disagree: all noise
    assert batch_over_noise(100, 1.0, 0.0) == math.inf  # no noise
    assert moving_average(7.0, 3.0, 0) == 3.0
    assert moving_average(7.0, 3.0, 5) == pytest.approx(NOISE_DECAY * 7 + (1 - NOISE_DECAY) * 3)


def _net(seed: int = 0, dropout: bool = False, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(4, 6)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(6))
    layers.append(nn.Tanh())
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(6, 3))
    return nn.Sequential(*layers)


def test_prefix_gradient_is_the_first_examples_loss_gradient_and_is_counted():
    model = _net()
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    l2 = [0.1] * len(list(model.parameters()))
    closure = ModelClosure(model, CrossEntropy(), x, y, l2)
    with pytest.raises(RuntimeError, match="has not been called"):
        closure.prefix_gradient(4)
    closure()
    before = closure.counts.as_dict()
    got = closure.prefix_gradient(4)
    want = torch.autograd.grad(nn.functional.cross_entropy(model(x[:4]), y[:4]), closure.params)
    for a, b in zip(got, want):  # no L2 in it
        torch.testing.assert_close(a, b)
    after = closure.counts.as_dict()
    assert after["forward"] - before["forward"] == pytest.approx(0.4)
    assert after["backward"] - before["backward"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"m must be in \[1, 10\]"):
        closure.prefix_gradient(11)


def test_prefix_gradient_replays_the_gradient_pass_random_numbers_and_keeps_batchnorm():
    model = _net(dropout=True, batchnorm=True).train()
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    l2 = [0.05] * len(list(model.parameters()))
    closure = ModelClosure(model, CrossEntropy(), x, y, l2)
    closure()
    whole = [p.grad - 0.05 * p.detach() for p in closure.params]
    stats = [b.clone() for b in model.buffers()]
    got = closure.prefix_gradient(10)  # the whole batch: the same masks give the same gradient
    for a, b in zip(got, whole):
        torch.testing.assert_close(a, b)
    for a, b in zip(model.buffers(), stats):
        assert torch.equal(a, b)


def _auto_hf(model: nn.Module) -> HessianFree:
    return HessianFree(model.parameters(), cg_max_iters=5)


def test_a_batch_without_noise_takes_the_whole_batch():
    """Every example the same: the halves' gradients agree exactly, tr(Sigma) = 0."""
    model = nn.Linear(3, 2)
    opt = _auto_hf(model)
    x, y = torch.ones(8, 3), torch.full((8, 2), 2.0)
    opt.step(ModelClosure(model, MSE(), x, y))
    assert opt.last_step.curvature_share == 1.0
    assert opt.last_step.batch_over_noise == math.inf
    summary = HessianFreeDriver(opt).summary()
    assert summary["curvature_share"] == 1.0
    assert summary["batch_over_noise"] is None  # inf is not plain JSON


def test_a_batch_of_pure_noise_takes_a_quarter():
    """The second half mirrors the first (targets negated at a zero model): the halves'
    gradients are opposite, |G|^2's estimate is negative, all is noise."""
    model = nn.Linear(3, 1, bias=False)
    nn.init.zeros_(model.weight)
    opt = _auto_hf(model)
    x = torch.randn(4, 3)
    y = torch.randn(4, 1)
    opt.step(ModelClosure(model, MSE(), torch.cat([x, x]), torch.cat([y, -y])))
    assert opt.last_step.curvature_share == 0.25
    assert opt.last_step.batch_over_noise == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_moving_averages_hold_the_halves_estimates(reduction):
    """After one step ``optimizer.noise`` holds the estimates from the two halves' own
    gradients (computed here directly, without the whole batch's gradient or its L2)."""
    model = _net(seed=1)
    l2 = [0.3] * len(list(model.parameters()))
    x, y = torch.randn(9, 4), torch.randint(0, 3, (9,))
    loss = CrossEntropy(reduction)
    halves = []
    for part in (slice(0, 4), slice(4, 9)):
        value = loss(model(x[part]), y[part])
        grads = torch.autograd.grad(value, list(model.parameters()))
        flat = torch.cat([g.reshape(-1) for g in grads])
        halves.append(flat / (part.stop - part.start) if reduction == "sum" else flat)
    a, b = halves
    want_signal = float(a @ b)
    want_noise = float((a - b).square().sum()) / (1 / 4 + 1 / 5)
    opt = HessianFree(model.parameters(), cg_max_iters=3)
    opt.step(ModelClosure(model, loss, x, y, l2))
    assert opt.noise["steps"] == 1
    assert opt.noise["signal"] == pytest.approx(want_signal, rel=1e-5)
    assert opt.noise["noise"] == pytest.approx(want_noise, rel=1e-5)
    ratio = 9 * want_signal / want_noise
    assert opt.last_step.batch_over_noise == pytest.approx(ratio, rel=1e-5)
    assert opt.last_step.curvature_share == (1.0 if ratio >= 4 else 3 / 9)


def test_the_moving_averages_survive_a_checkpoint_and_an_old_one_starts_them():
    model = _net(seed=2)
    opt = HessianFree(model.parameters(), cg_max_iters=3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    opt.step(ModelClosure(model, CrossEntropy(), x, y))
    state = opt.state_dict()
    twin = HessianFree(model.parameters(), cg_max_iters=3)
    twin.load_state_dict(state)
    assert twin.noise == opt.noise and opt.noise["steps"] == 1
    del state["hf"]["noise"]  # a checkpoint from before "auto"
    twin.load_state_dict(state)
    assert twin.noise == {"signal": 0.0, "noise": 0.0, "steps": 0}


def test_a_fixed_fraction_measures_nothing():
    model = _net(seed=3)
    opt = HessianFree(model.parameters(), cg_max_iters=3, curvature_fraction=0.5)
    closure = ModelClosure(model, CrossEntropy(), torch.randn(8, 4), torch.randint(0, 3, (8,)))
    opt.step(closure)
    assert opt.noise["steps"] == 0 and math.isnan(opt.last_step.batch_over_noise)
    assert opt.last_step.curvature_share == 0.5


def test_the_entries_take_auto_and_a_number():
    for name in ("hf", "bdhf"):
        entry = get_optimizer(name)
        assert entry.defaults()["curvature_fraction"] == "auto"
        assert entry.resolve({"curvature_fraction": " auto "})["curvature_fraction"] == "auto"
        assert entry.resolve({"curvature_fraction": "1"})["curvature_fraction"] == 1.0
        with pytest.raises(ValueError, match=r"must be 'auto' or a float in \(0, 1\]"):
            entry.resolve({"curvature_fraction": "half"})


def _scaled_run(cls, scale: float, reduction: str) -> tuple[list[float], torch.Tensor]:
    """10 steps on a noisy regression whose batch starts above 4 B_noise and falls below it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    if cls is HessianFree:
        opt = HessianFree(model.parameters(), backtrack=False)
    else:
        opt = BlockDiagonalHF(param_groups_from_blocks(partition(model, "module")))
    teacher = torch.randn(5, 3, generator=torch.Generator().manual_seed(7))
    loss = ConvexOutputLoss(
        lambda z, t: scale * F.mse_loss(z, t, reduction=reduction), reduction=reduction
    )
    g = torch.Generator().manual_seed(1)
    shares, path = [], []
    for _ in range(10):
        x = torch.randn(64, 5, generator=g)
        y = 3 * torch.tanh(x @ teacher) + 2 * torch.randn(64, 3, generator=g)
        opt.step(ModelClosure(model, loss, x, y))
        shares.append(opt.last_step.curvature_share)
        path.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return shares, torch.stack(path)


@pytest.mark.parametrize("cls", [HessianFree, BlockDiagonalHF], ids=["hf", "bdhf"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_the_automatic_fraction_decides_the_same_at_any_loss_scale(float64, cls, reduction, scale):
    """The noise estimates scale as the loss squared, so their ratio, and every step's
    fraction, does not: the fractions agree over all 10 steps, on both sides of the threshold,
    and the first 7 steps agree to rounding. From the 8th the runs part by more than rounding
    (lambda is small there; BDHF's runs at a fixed whole batch part there by 3e-4 too, HF's
    by 4e-6 at its first quarter-batch step), so those steps are compared by their fractions."""
    ref_shares, ref = _scaled_run(cls, 1.0, reduction)
    shares, got = _scaled_run(cls, scale, reduction)
    assert shares == ref_shares
    assert shares[0] == 1.0 and shares[-1] == 0.25  # both sides of the threshold
    torch.testing.assert_close(got[:7], ref[:7], rtol=1e-7, atol=1e-9)
