"""HF optimizers as torch.optim optimizers: frozen parameters, settings read from the parameter
groups (schedulers, per-group CG limits, load_state_dict), bounded damping, ignore_index, and
one random function per step (Dropout masks, BatchNorm statistics)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from dense_reference import dense_ggn
from fixed_start import BlockDiagonalHF, HessianFree
from torch import nn

from bdhf_bench.curvature import MSE, CrossEntropy, as_output_loss, partition
from bdhf_bench.optim import ModelClosure, param_groups_from_blocks

pytestmark = pytest.mark.usefixtures("float64")  # every test: tests/conftest.py


def _regression(seed=0, n=32, d=4, k=2):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g), torch.randn(n, k, generator=g)
    torch.manual_seed(seed)
    return nn.Linear(d, k), x, y


def _lstsq(x, y):
    """The least-squares weight and bias (the exact minimiser of the MSE)."""
    xa = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
    sol = torch.linalg.lstsq(xa, y).solution
    return torch.cat([sol[:-1].T.reshape(-1), sol[-1]])


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


EXACT = {"damping": 1e-12, "curvature_fraction": 1.0, "cg_tol": 1e-14, "warm_start": 0.0}


# -- frozen parameters ---------------------------------------------------------------------------


def test_frozen_parameters_take_no_part_and_l2_stays_aligned():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    model[0].requires_grad_(False)
    frozen = [p.detach().clone() for p in model[0].parameters()]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(24, 3, generator=g), torch.randn(24, 2, generator=g)
    opt = HessianFree(model.parameters(), damping=0.5, curvature_fraction=1.0)
    opt.step(ModelClosure(model, MSE(), x, y, l2=[3.0, 7.0, 0.01, 0.02]))
    # reference: the head alone on the frozen features, with the head's own coefficients
    torch.manual_seed(0)
    ref_model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    with torch.no_grad():
        features = ref_model[1](ref_model[0](x))
    ref_head = ref_model[2]
    ref = HessianFree(ref_head.parameters(), damping=0.5, curvature_fraction=1.0)
    ref.step(ModelClosure(ref_head, MSE(), features, y, l2=[0.01, 0.02]))
    torch.testing.assert_close(_flat(model), _flat(ref_head), rtol=1e-12, atol=1e-14)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model[0].parameters()))
    assert opt.last_step.accepted and opt.layout().numel == 12


# -- settings come from the parameter groups -----------------------------------------------------


def test_an_lr_scheduler_drives_the_fixed_step():
    model, x, y = _regression()
    start, best = _flat(model), _lstsq(x, y)
    opt = HessianFree(model.parameters(), step_rule="fixed", lr=0.5, **EXACT)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(ModelClosure(model, MSE(), x, y))
    scheduler.step()
    after_one = start + 0.5 * (best - start)
    torch.testing.assert_close(_flat(model), after_one, rtol=1e-9, atol=1e-11)
    opt.step(ModelClosure(model, MSE(), x, y))
    torch.testing.assert_close(
        _flat(model), after_one + 0.25 * (best - after_one), rtol=1e-9, atol=1e-11
    )


def test_load_state_dict_restores_every_setting():
    model, x, y = _regression(seed=1)
    start, best = _flat(model), _lstsq(x, y)
    saved = HessianFree(model.parameters(), step_rule="fixed", lr=0.25, **EXACT).state_dict()
    opt = HessianFree(model.parameters(), step_rule="armijo", lr=1.0)
    opt.load_state_dict(saved)
    opt.step(ModelClosure(model, MSE(), x, y))
    torch.testing.assert_close(_flat(model), start + 0.25 * (best - start), rtol=1e-9, atol=1e-11)
    assert opt.last_step.line_search_evals == 0  # the fixed rule, as saved


class TwoRegressions(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 2)
        self.b = nn.Linear(3, 2)

    def forward(self, inputs):
        xa, xb = inputs
        return torch.cat([self.a(xa), self.b(xb)], dim=1)


def _two_regressions(seed=3, n=40):
    torch.manual_seed(0)
    model = TwoRegressions()
    g = torch.Generator().manual_seed(seed)
    xa, xb = torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g)
    return model, (xa, xb), torch.randn(n, 4, generator=g)


def _textbook_cg(a, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p = r.clone()
    for _ in range(iters):
        ap = a @ p
        alpha = (r @ r) / (p @ ap)
        x, r_new = x + alpha * p, r - alpha * ap
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
    return x


def test_a_groups_own_cg_limit_is_used():
    model, inputs, y = _two_regressions()
    groups = param_groups_from_blocks(partition(model))
    groups[0]["cg_max_iters"] = 2
    opt = BlockDiagonalHF(
        groups, step_rule="fixed", damping=0.1, curvature_fraction=1.0, cg_tol=1e-14
    )
    closure = ModelClosure(model, MSE(), inputs, y)
    before = _flat(model)
    opt.step(closure)
    s = opt.last_step
    assert s.cg_iterations[0] == 2 and s.cg_stop_reasons[0] == "max_iters"
    assert s.cg_stop_reasons[1] != "max_iters"
    # block a's direction: two textbook CG iterations on its dense damped block
    n_a = 10
    big = dense_ggn(model, inputs, lambda out: F.mse_loss(out, y))
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    expect = _textbook_cg(big[:n_a, :n_a] + 0.1 * torch.eye(n_a), -g[:n_a], 2)
    factor = s.block_coefficients[0]  # the block's factor in the combined step (the default)
    torch.testing.assert_close((_flat(model) - before)[:n_a], factor * expect, rtol=1e-9, atol=0)


def test_step_settings_must_agree_between_groups():
    model, inputs, y = _two_regressions()
    groups = param_groups_from_blocks(partition(model))
    groups[1]["lr"] = 0.5
    opt = BlockDiagonalHF(groups, step_rule="fixed")
    with pytest.raises(ValueError, match=r"lr differs between parameter groups \[0, 1\]"):
        opt.step(ModelClosure(model, MSE(), inputs, y))
    groups = param_groups_from_blocks(partition(model))
    groups[1]["cg_max_iters"] = 3
    hf = HessianFree(groups)  # one block: its CG settings too
    with pytest.raises(ValueError, match=r"cg_max_iters differs .* setting of one block"):
        hf.step(ModelClosure(model, MSE(), inputs, y))
    opt = BlockDiagonalHF(model.parameters())
    opt.param_groups[0]["damping"] = -1.0
    with pytest.raises(ValueError, match=r"invalid damping=-1\.0"):
        opt.step(ModelClosure(model, MSE(), inputs, y))


# -- bounded damping -----------------------------------------------------------------------------


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(4, 2)
        self.unused = nn.Linear(4, 2)

    def forward(self, x):
        return self.used(x)


def test_a_block_without_information_keeps_its_damping():
    torch.manual_seed(0)
    model = WithUnused()
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    groups = param_groups_from_blocks(partition(model))
    opt = BlockDiagonalHF(groups, damping=2.0, damping_mode="per_block", curvature_fraction=1.0)
    for _ in range(3):
        opt.step(ModelClosure(model, MSE(), x, y))
        assert opt.last_step.accepted
        assert math.isnan(opt.last_step.rho[1]) and opt.last_step.cg_iterations[1] == 0
    # the used block's exact quadratic gives rho = 1: 2 * (2/3)^3; the unused one stays at 2
    assert [g["damping"] for g in opt.param_groups] == pytest.approx([2.0 * (2 / 3) ** 3, 2.0])


class ScriptedRho(ModelClosure):
    """The curvature-batch objective after a step reports ``ratio`` times the true reduction
    (on an exact quadratic, rho = ratio); mini-batch evaluations can be scripted."""

    def __init__(self, *args, ratio=1.0, batch=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ratio, self.batch, self.batch_calls = ratio, batch, 0

    def curvature(self, fraction):
        ctx = super().curvature(fraction)
        self.f_c0 = float(ctx.loss_value())
        return ctx

    def evaluate(self, part="batch"):
        true = super().evaluate(part)
        if part == "curvature":
            return torch.tensor(self.f_c0 + self.ratio * (float(true) - self.f_c0))
        if self.batch is None:
            return true
        self.batch_calls += 1
        return torch.tensor(self.batch(self.batch_calls - 1))


@pytest.mark.parametrize(
    ("ratio", "damping", "bounds", "expect"),
    [
        (0.1, 1.0, (0.5, 1.2), 1.2),  # x3/2 clamped to the maximum
        (0.9, 1.0, (0.8, 2.0), 0.8),  # x2/3 clamped to the minimum
        (0.1, 1.0, (0.5, 2.0), 1.5),
    ],
)
def test_damping_is_clamped_to_its_range(ratio, damping, bounds, expect):
    model, x, y = _regression(seed=2)
    opt = BlockDiagonalHF(
        model.parameters(),
        damping=damping,
        damping_min=bounds[0],
        damping_max=bounds[1],
        curvature_fraction=1.0,
    )
    opt.step(ScriptedRho(model, MSE(), x, y, ratio=ratio))
    assert opt.last_step.rho[0] == pytest.approx(ratio, rel=1e-6)
    assert opt.param_groups[0]["damping"] == expect


def test_a_rejected_step_at_the_maximum_stays_there():
    model, x, y = _regression()
    x[0, 0] = math.nan
    opt = HessianFree(model.parameters(), damping=1e12)
    opt.step(ModelClosure(model, MSE(), x, y))
    assert opt.last_step.outcome == "nonfinite_loss" and opt.param_groups[0]["damping"] == 1e12


# -- CrossEntropyLoss(ignore_index=...) -----------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)])
def test_cross_entropy_ignore_index_equals_torch(reduction, shape):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(*shape, generator=g)
    target_shape = (shape[0], *shape[2:])
    t = torch.randint(0, 4, target_shape, generator=g)
    t.view(-1)[::3] = 7  # every third prediction ignored
    module = nn.CrossEntropyLoss(ignore_index=7, reduction=reduction)
    ours = as_output_loss(module)
    torch.testing.assert_close(ours(z, t), module(z, t), rtol=1e-13, atol=0)
    dense = torch.autograd.functional.hessian(lambda zz: module(zz.view(shape), t), z.reshape(-1))
    hess = ours.prepare(z, t)
    eye = torch.eye(z.numel())
    columns = [hess.matvec((e.view(shape),))[0].reshape(-1) for e in eye]
    torch.testing.assert_close(torch.stack(columns, dim=1), dense, rtol=1e-10, atol=1e-12)


def test_preconditioner_with_ignored_targets_is_the_mean_over_kept_examples():
    from bdhf_bench.curvature import BlockLayout
    from bdhf_bench.optim.preconditioner import squared_gradient_diagonal

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(8, 4), torch.tensor([0, 2, -100, 1, 1, -100, 2, 0])
    closure = ModelClosure(model, nn.CrossEntropyLoss(), x, y)
    closure.curvature(0.75)  # six examples, two of them ignored
    layout = BlockLayout([list(model.parameters())])
    squares = torch.zeros(layout.numel)
    for i in (0, 1, 3, 4):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        squares += torch.cat([p.grad.reshape(-1) for p in model.parameters()]).square()
    torch.testing.assert_close(squared_gradient_diagonal(closure, layout), squares / 4)


# -- one random function per step -----------------------------------------------------------------


class Noisy(nn.Module):
    """Dropout twice and BatchNorm: the gradient pass's masks must be the curvature pass's."""

    def __init__(self, batchnorm=True):
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.norm = nn.BatchNorm1d(8) if batchnorm else nn.Identity()
        self.drop1 = nn.Dropout(0.4)
        self.mid = nn.Linear(8, 8)
        self.drop2 = nn.Dropout(0.3)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.drop1(torch.tanh(self.norm(self.inp(x))))
        return self.out(self.drop2(torch.tanh(self.mid(h))))


def test_the_curvature_pass_uses_the_gradient_pass_dropout_masks():
    torch.manual_seed(0)
    model = Noisy(batchnorm=False).train()
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    closure = ModelClosure(model, CrossEntropy(), x, y)
    f0 = closure()
    ctx = closure.curvature(0.25)
    # same masks on the same four examples: the same outputs, bit for bit
    assert torch.equal(ctx.outputs[0], closure.outputs[:4])
    assert float(closure.evaluate("curvature")) == float(ctx.loss_value())
    assert float(closure.evaluate("batch")) == float(f0)
    assert float(closure.evaluate("curvature")) == float(
        CrossEntropy()(closure.outputs[:4].detach(), y[:4])
    )


def test_evaluate_under_batchnorm_and_dropout_replays_and_leaves_statistics_alone():
    torch.manual_seed(0)
    model = Noisy().train()
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    with torch.no_grad():
        pre = model.inp(x)
    closure = ModelClosure(model, CrossEntropy(), x, y)
    f0 = closure()
    # the gradient pass moved the statistics once (momentum 0.1 from zero mean, unit variance)
    mean_once = 0.1 * pre.mean(0)
    var_once = 0.9 + 0.1 * pre.var(0, unbiased=True)
    torch.testing.assert_close(model.norm.running_mean, mean_once)
    torch.testing.assert_close(model.norm.running_var, var_once)
    once = (model.norm.running_mean.clone(), model.norm.running_var.clone())
    ctx = closure.curvature(0.5)
    values = [float(closure.evaluate("batch")) for _ in range(2)]
    values += [float(closure.evaluate("curvature")) for _ in range(2)]
    assert values[:2] == [float(f0)] * 2
    # the sub-batch has its own batch statistics; its masks are the gradient pass's rows
    assert values[2:] == [float(ctx.loss_value())] * 2
    assert torch.equal(model.norm.running_mean, once[0])
    assert torch.equal(model.norm.running_var, once[1])
    assert model.norm.num_batches_tracked.item() == 1


def test_a_whole_step_moves_batchnorm_statistics_exactly_once():
    torch.manual_seed(0)
    model = Noisy().train()
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    with torch.no_grad():
        pre = model.inp(x)
    opt = HessianFree(model.parameters(), cg_max_iters=12, curvature_fraction=0.5)
    opt.step(ModelClosure(model, CrossEntropy(), x, y))
    s = opt.last_step
    assert s.accepted and s.backtrack_evals + s.line_search_evals >= 2  # extra passes ran
    torch.testing.assert_close(model.norm.running_mean, 0.1 * pre.mean(0), rtol=0, atol=1e-15)
    torch.testing.assert_close(model.norm.running_var, 0.9 + 0.1 * pre.var(0), rtol=0, atol=1e-15)
    assert model.norm.num_batches_tracked.item() == 1


# -- a step rejects, never raises, for a numerical reason ------------------------------------------


def test_infinite_curvature_along_the_direction_is_rejected(monkeypatch):
    from bdhf_bench.curvature import GGNContext

    model, x, y = _regression()
    before = _flat(model)
    monkeypatch.setattr(
        GGNContext, "packed_product", lambda self, layout, v, out=None: v * math.inf
    )
    opt = HessianFree(model.parameters(), damping=1.0)
    opt.step(ModelClosure(model, MSE(), x, y))
    assert opt.last_step.outcome == "nonfinite_curvature" and not opt.last_step.accepted
    assert torch.equal(before, _flat(model)) and opt.param_groups[0]["damping"] == 1.5


def test_a_batch_whose_targets_are_all_ignored_is_rejected():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.full((8,), -100)
    before = _flat(model)
    opt = BlockDiagonalHF(model.parameters(), damping=1.0)
    opt.step(ModelClosure(model, nn.CrossEntropyLoss(), x, y))
    assert opt.last_step.outcome == "nonfinite_loss" and torch.equal(before, _flat(model))


class Sampler(nn.Module):
    """A VAE-like reparameterisation: mean + noise * exp(log_std)."""

    def __init__(self):
        super().__init__()
        self.mean = nn.Linear(5, 3)
        self.log_std = nn.Linear(5, 3)

    def forward(self, x):
        return self.mean(x) + torch.randn_like(x[:, :3]) * torch.exp(self.log_std(x))


def test_reparameterisation_noise_is_the_gradient_pass_noise_on_the_sub_batch():
    torch.manual_seed(0)
    model = Sampler()
    x, y = torch.randn(12, 5), torch.randn(12, 3)
    closure = ModelClosure(model, MSE(), x, y)
    f0 = closure()
    ctx = closure.curvature(0.5)
    assert torch.equal(ctx.outputs[0], closure.outputs[:6])
    assert float(closure.evaluate("batch")) == float(f0)
    # the noise is replayed, the parameters are not: moving the mean moves the output exactly
    with torch.no_grad():
        model.mean.bias += 1.0
    moved = closure.evaluate("batch")
    torch.testing.assert_close(moved, F.mse_loss(closure.outputs.detach() + 1.0, y))


def test_draws_that_take_tensors_of_values_follow_those_values():
    from bdhf_bench.optim.random_tape import RandomTape

    tape, mean = RandomTape(), torch.zeros(8, 3)
    with tape.recording(8):
        noise = torch.randn(8, 3)
        shifted = torch.normal(mean, 1.0)
    with tape.replaying(4):
        noise_again = torch.randn(4, 3)
        shifted_again = torch.normal(mean[:4] + 100.0, 1.0)
    assert len(tape.draws) == 1 and torch.equal(noise_again, noise[:4])
    assert shifted_again.mean() > 90 and shifted.abs().mean() < 5


@pytest.mark.parametrize("random_layer", [False, True])
def test_later_passes_skip_the_tape_only_when_the_gradient_pass_drew_nothing(
    monkeypatch, random_layer
):
    """The tape's hook runs in every later pass of a model with Dropout (its masks must be
    replayed) and in none of a model without anything random, whose passes are unchanged."""
    from bdhf_bench.optim.random_tape import RandomTape

    torch.manual_seed(0)
    layers = [nn.Linear(6, 8), nn.Tanh()]
    layers += [nn.Dropout(0.3)] if random_layer else []
    model = nn.Sequential(*layers, nn.Linear(8, 3))
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    hooked = []
    real = RandomTape.__torch_function__

    def counting(self, func, types, args=(), kwargs=None):
        hooked.append(func)
        return real(self, func, types, args, kwargs)

    monkeypatch.setattr(RandomTape, "__torch_function__", counting)
    closure = ModelClosure(model, CrossEntropy(), x, y)
    f0 = closure()
    assert hooked  # the gradient pass always records
    hooked.clear()
    ctx = closure.curvature(0.5)
    f_batch = closure.evaluate("batch")
    assert bool(hooked) == random_layer
    # the later passes are the gradient pass's function, with or without the hook
    assert float(f_batch) == float(f0)
    assert torch.equal(ctx.outputs[0], closure.outputs[:5])
