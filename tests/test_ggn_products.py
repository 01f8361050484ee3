"""GGN products (full and per block) against dense J^T H J built by autograd, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from dense_reference import block_slices, dense_ggn, flat
from torch import nn

from bdhf_bench.curvature import (
    MSE,
    BCEWithLogits,
    BlockLayout,
    ConvexOutputLoss,
    CrossEntropy,
    GGNContext,
    GGNOperator,
    partition,
)
from bdhf_bench.curvature.ggn import frozen_buffers
from bdhf_bench.problems.lstm import StackedLSTM

RTOL = 1e-6


pytestmark = pytest.mark.usefixtures("float64")  # every test: tests/conftest.py


class LastStep(nn.Module):
    """An LSTM stack with a linear read-out of the last hidden state."""

    def __init__(self, lstm: nn.Module, hidden: int, classes: int, torch_lstm: bool = False):
        super().__init__()
        self.lstm = lstm
        self.head = nn.Linear(hidden, classes)
        self.torch_lstm = torch_lstm

    def forward(self, x):
        h = self.lstm(x)[0] if self.torch_lstm else self.lstm(x)
        return self.head(h[:, -1])


class TinyVAE(nn.Module):
    """Three outputs (reconstruction, mean, log-std) like DeepOBS's VAE, with Dropout."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(6, 8)
        self.drop = nn.Dropout(0.3)
        self.mean = nn.Linear(8, 2)
        self.logstd = nn.Linear(8, 2)
        self.dec = nn.Linear(2, 6)

    def forward(self, x):
        h = self.drop(F.leaky_relu(self.enc(x), 0.3))
        m, s = self.mean(h), 0.5 * self.logstd(h)
        z = m + torch.randn_like(s) * torch.exp(s)
        return torch.sigmoid(self.dec(z)), m, s


def vae_loss(images, means, log_stds, targets):
    rec = (images - targets).pow(2).sum(dim=1).mean()
    kl = -0.5 * (1 + 2 * log_stds - means.pow(2) - torch.exp(2 * log_stds)).sum(dim=1).mean()
    return rec + kl


def _case(name):
    g = torch.Generator().manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(
            nn.Linear(5, 6), nn.Sigmoid(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)
        )
        x = torch.randn(7, 5, generator=g)
        y = torch.randint(0, 3, (7,), generator=g)
        return model, x, y, CrossEntropy()
    if name == "cnn":
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(3, 2, 2, stride=2),
            nn.Flatten(),
            nn.Linear(2 * 2 * 2, 4),
        )
        x = torch.randn(5, 2, 8, 8, generator=g)
        y = torch.randint(0, 4, (5,), generator=g)
        return model, x, y, CrossEntropy("sum")
    if name == "bn_cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 3, 3, bias=False),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3 * 4 * 4, 2),
        )
        x = torch.randn(6, 1, 6, 6, generator=g)
        y = torch.randn(6, 2, generator=g)
        return model, x, y, MSE()
    if name == "deconv_bce":
        model = nn.Sequential(
            nn.Linear(3, 8),
            nn.ReLU(),
            nn.Unflatten(1, (2, 2, 2)),
            nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1),
        )
        x = torch.randn(4, 3, generator=g)
        y = (torch.rand(4, 2, 4, 4, generator=g) > 0.5).double()
        return model, x, y, BCEWithLogits("batch_mean")
    if name == "lstm":
        model = LastStep(StackedLSTM(3, 4, 2), 4, 3)
        x = torch.randn(5, 4, 3, generator=g)
        y = torch.randint(0, 3, (5,), generator=g)
        return model, x, y, CrossEntropy()
    if name == "torch_lstm":
        model = LastStep(nn.LSTM(3, 4, num_layers=2, batch_first=True), 4, 3, torch_lstm=True)
        x = torch.randn(5, 4, 3, generator=g)
        y = torch.randint(0, 3, (5,), generator=g)
        return model, x, y, CrossEntropy()
    raise KeyError(name)


def _pos(params, p):
    return next(i for i, q in enumerate(params) if q is p)


def _check(ctx, model, dense, scheme="module"):
    params = list(model.parameters())
    g = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=g) for p in params]
    full = flat(ctx.mvp(v))
    ref = dense @ flat(v)
    torch.testing.assert_close(full, ref, rtol=RTOL, atol=RTOL * ref.abs().max().item())

    blocks = [b.params for b in partition(model, scheme)]
    layout = BlockLayout(blocks, all_params=params)
    vs = [[v[_pos(params, p)] for p in b] for b in blocks]
    packed = layout.pack([t for vb in vs for t in vb])
    got = layout.unpack_blocks(GGNOperator(ctx, layout).block_diagonal() @ packed)
    for idx, gb, vb in zip(block_slices(params, blocks), got, vs):
        expect = dense[idx][:, idx] @ flat(vb)
        torch.testing.assert_close(flat(gb), expect, rtol=RTOL, atol=RTOL * ref.abs().max().item())
    return blocks


@pytest.mark.parametrize("name", ["mlp", "cnn", "bn_cnn", "deconv_bce", "lstm", "torch_lstm"])
def test_full_and_block_products_match_dense(name):
    model, x, y, loss = _case(name)
    dense = dense_ggn(model, x, lambda *o: loss(o if len(o) > 1 else o[0], y))
    ctx = GGNContext.from_model(model, x, y, loss)
    blocks = _check(ctx, model, dense)
    assert len(blocks) > 1


def test_blocks_are_not_the_diagonal_of_the_full_product():
    model, x, y, loss = _case("mlp")
    params = list(model.parameters())
    ctx = GGNContext.from_model(model, x, y, loss)
    layout = BlockLayout([b.params for b in partition(model)], all_params=params)
    v = torch.randn(layout.numel)
    full = GGNOperator(ctx, layout)
    per_block = full.block_diagonal() @ v
    diag_of_full = full @ v
    assert (per_block - diag_of_full).abs().max() > 1e-3 * diag_of_full.abs().max()


def test_batchnorm_uses_batch_statistics_and_keeps_running_stats():
    model, x, y, loss = _case("bn_cnn")
    model.train()
    bn = model[1]
    bn.running_mean.fill_(0.3)
    before = [b.clone() for b in model.buffers()]
    ctx = GGNContext.from_model(model, x, y, loss)
    ctx.mvp([torch.randn_like(p) for p in model.parameters()])
    for b, a in zip(before, model.buffers()):
        assert torch.equal(a, b)
    with frozen_buffers(model):
        model(x)
        assert not torch.equal(bn.running_mean, before[0])
    assert torch.equal(bn.running_mean, before[0])


def test_dropout_and_sampling_draw_once_per_context():
    """A VAE with Dropout and reparameterised sampling, its three-output convex loss."""
    torch.manual_seed(0)
    model = TinyVAE().train()
    x = torch.rand(6, 6)
    loss = ConvexOutputLoss(vae_loss, reduction="batch_mean")
    dense = dense_ggn(model, x, lambda *o: vae_loss(*o, x), seed=123)
    torch.manual_seed(123)
    ctx = GGNContext.from_model(model, x, x, loss)
    _check(ctx, model, dense)
    # A second product in the same context sees the same masks: products are linear in v.
    v = [torch.randn_like(p) for p in model.parameters()]
    a = flat(ctx.mvp(v))
    b = flat(ctx.mvp([2 * t for t in v]))
    torch.testing.assert_close(b, 2 * a)


def test_l2_weight_decay_adds_its_exact_curvature():
    model, x, y, loss = _case("mlp")
    params = list(model.parameters())
    coeffs = [0.1 if p.dim() > 1 else 0.0 for p in params]
    dense = dense_ggn(model, x, lambda z: loss(z, y))
    dense = dense + torch.diag(
        torch.cat([torch.full((p.numel(),), c) for p, c in zip(params, coeffs)])
    )
    ctx = GGNContext.from_model(model, x, y, loss, l2=coeffs)
    _check(ctx, model, dense)
    expect = loss(model(x), y) + sum(0.5 * c * p.square().sum() for p, c in zip(params, coeffs))
    torch.testing.assert_close(ctx.loss_value(), expect.detach())


@pytest.mark.parametrize("scheme", ["tensor", "all", {"first": ["0.*"], "rest": ["2.*", "4.*"]}])
def test_other_partitions(scheme):
    model, x, y, loss = _case("mlp")
    dense = dense_ggn(model, x, lambda z: loss(z, y))
    ctx = GGNContext.from_model(model, x, y, loss)
    blocks = _check(ctx, model, dense, scheme)
    expected = {"tensor": 6, "all": 1}.get(scheme if isinstance(scheme, str) else "", 2)
    assert len(blocks) == expected


def test_convolutions_double_backward_is_bitwise_pytorchs():
    """The conv double-backward shortcut changes cost, not values."""
    model, x, y, loss = _case("cnn")
    params = list(model.parameters())
    v = [torch.randn_like(p) for p in params]
    ours = GGNContext.from_model(model, x, y, loss).mvp(v)
    plain = GGNContext(model(x), y, params, loss).mvp(v)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["mlp", "cnn", "lstm"])
def test_the_operator_is_the_dense_ggn_and_its_block_diagonal(name):
    # curvlinops' check: the typed operator's matrix against J^T H J built by autograd, in the
    # layout's order (blocks one after another); its block diagonal zeroes the rest
    model, x, y, loss = _case(name)
    params = list(model.parameters())
    dense = dense_ggn(model, x, lambda *o: loss(o if len(o) > 1 else o[0], y))
    ctx = GGNContext.from_model(model, x, y, loss)
    blocks = [b.params for b in partition(model, "module")]
    layout = BlockLayout(blocks, all_params=params)
    order = torch.cat(block_slices(params, [layout.params]))  # dense index of each packed entry
    expect = dense[order][:, order]
    G = GGNOperator(ctx, layout)
    assert G.shape == tuple(expect.shape)
    atol = RTOL * expect.abs().max().item()
    torch.testing.assert_close(G.to_dense(), expect, rtol=RTOL, atol=atol)
    in_block = torch.zeros_like(expect, dtype=torch.bool)
    for lo, hi in layout.block_bounds:
        in_block[lo:hi, lo:hi] = True
    blocks_dense = G.block_diagonal().to_dense()
    torch.testing.assert_close(
        blocks_dense, torch.where(in_block, expect, 0.0), rtol=RTOL, atol=atol
    )

    # CG's form: the running blocks' damped products, written into the operator's buffer
    v = torch.randn(layout.numel, generator=torch.Generator().manual_seed(2))
    active = [k % 2 == 0 for k in range(layout.num_blocks)]
    lam = [0.5 + k for k in range(layout.num_blocks)]
    out = torch.full_like(v, float("nan"))
    got = GGNOperator(ctx, layout, out=out).block_diagonal().matvec(v, active, lam)
    assert got is out
    for (lo, hi), a, lam_b in zip(layout.block_bounds, active, lam):
        want = expect[lo:hi, lo:hi] @ v[lo:hi] + lam_b * v[lo:hi] if a else torch.zeros(hi - lo)
        torch.testing.assert_close(got[lo:hi], want, rtol=RTOL, atol=atol)
    with pytest.raises(ValueError, match="block diagonal"):
        GGNOperator(ctx, layout, out=out).matvec(v, active, lam)
    with pytest.raises(ValueError, match="out="):
        GGNOperator(ctx, layout).block_diagonal().matvec(v, active, lam)
    with pytest.raises(ValueError, match="vector of shape"):
        G @ v[:-1]
