"""K-FAC's preconditioned gradient against dense references built without curvlinops.

The reference takes the exact GGN from autograd Jacobians and autograd loss Hessians
(``dense_reference``). On a batch of identical examples K-FAC is exact (every expectation of a
Kronecker product is the product of the expectations), so each layer's weight block of the
dense GGN is ``A (x) G`` and its bias block ``G``: the damped inverse of that block diagonal is
what ``KFAC.precondition`` must give, with the loss's own scale (mean or per-example sum).
"""

from __future__ import annotations

import pytest
import torch
from dense_reference import block_slices, dense_ggn, flat
from torch import nn

from bdhf_bench.curvature import BCEWithLogits, CrossEntropy
from bdhf_bench.optim import KFAC, ModelClosure, get_optimizer
from bdhf_bench.optim.kfac import torch_loss


def _net(out: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, out))


def _identical_batch(n: int, out: int, loss):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, generator=g).repeat(n, 1)
    if isinstance(loss, CrossEntropy):
        y = torch.tensor([1]).repeat(n)
    else:
        # binary: curvlinops' type-2 factors refuse soft targets (the Hessian ignores them)
        y = torch.randint(0, 2, (1, out), generator=g).to(x.dtype).repeat(n, 1)
    return x, y


def _blocks(model: nn.Module) -> list[list[torch.Tensor]]:
    return [[p] for p in model.parameters()]


def _dense_reference(model, x, y, loss, damping):
    params = list(model.parameters())
    ggn = dense_ggn(model, x, lambda out: loss(out, y), params)
    g = flat(torch.autograd.grad(loss(model(x), y), params))
    out = torch.zeros_like(g)
    for idx in block_slices(params, _blocks(model)):
        block = ggn[idx][:, idx]
        eye = torch.eye(len(idx), dtype=block.dtype)
        out[idx] = torch.linalg.solve(block + damping * eye, g[idx])
    return g, out


@pytest.mark.parametrize(
    ("loss", "out"),
    [(CrossEntropy("mean"), 3), (BCEWithLogits("batch_mean"), 6), (BCEWithLogits("mean"), 6)],
    ids=["ce-mean", "bce-per-example-sum", "bce-mean"],
)
def test_exact_damping_inverts_the_block_diagonal_ggn(float64, loss, out):
    model = _net(out)
    x, y = _identical_batch(3, out, loss)
    damping = 0.05
    opt = KFAC(model, damping=damping, fisher_type="type-2", heuristic_damping=False)
    closure = ModelClosure(model, loss, x, y)
    closure()
    opt._refresh(closure)
    _, expected = _dense_reference(model, x, y, loss, damping)
    got = flat(opt.precondition([p.grad for p in model.parameters()]))
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)


def test_heuristic_damping_is_martens_and_grosses_factored_damping(float64):
    """(A + pi sqrt(l) I)^-1 (x) (G + sqrt(l)/pi I)^-1, pi^2 = (tr A / dim A) / (tr G / dim G),
    on the loss's own scale; the bias shares its layer's damped G factor, (G + sqrt(l)/pi I)^-1
    (curvlinops inverts per layer; exact damping, above, gives it (G + l I)^-1)."""
    loss = BCEWithLogits("batch_mean")
    model = _net(6)
    x, y = _identical_batch(4, 6, loss)
    damping = 0.3
    opt = KFAC(model, damping=damping, fisher_type="type-2", heuristic_damping=True)
    closure = ModelClosure(model, loss, x, y)
    closure()
    opt._refresh(closure)
    got = opt.precondition([p.grad for p in model.parameters()])

    params = list(model.parameters())
    ggn = dense_ggn(model, x, lambda o: loss(o, y), params)
    idx = block_slices(params, _blocks(model))
    inputs = [x[:1], torch.tanh(model[0](x[:1]))]
    for layer, (w_idx, b_idx) in enumerate(zip(idx[0::2], idx[1::2])):
        a = inputs[layer].T @ inputs[layer]  # one example: A = a a^T
        gf = ggn[b_idx][:, b_idx]  # the bias block is G
        torch.testing.assert_close(ggn[w_idx][:, w_idx], torch.kron(gf, a), rtol=1e-8, atol=1e-10)
        pi = ((a.trace() / a.shape[0]) / (gf.trace() / gf.shape[0])).sqrt()
        s = damping**0.5
        a_inv = torch.linalg.inv(a + pi * s * torch.eye(a.shape[0]))
        g_inv = torch.linalg.inv(gf + s / pi * torch.eye(gf.shape[0]))
        gw, gb = params[2 * layer].grad, params[2 * layer + 1].grad
        torch.testing.assert_close(got[2 * layer], g_inv @ gw @ a_inv, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(got[2 * layer + 1], g_inv @ gb, rtol=1e-8, atol=1e-10)


def test_layers_without_factors_take_the_plain_gradient():
    """A parameter outside Linear/Conv2d (a free scale) is stepped by SGD on its gradient."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 3)
            self.scale = nn.Parameter(torch.tensor(1.5))

        def forward(self, x):
            return self.body(x) * self.scale

    torch.manual_seed(0)
    model, reference = Scaled(), Scaled()
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    opt = KFAC(model, lr=0.1, momentum=0.0, kl_clip=0.0)
    assert [id(p) for p in opt.preconditioned()] == [id(p) for p in model.body.parameters()]
    opt.step(ModelClosure(model, CrossEntropy(), x, y))
    ModelClosure(reference, CrossEntropy(), x, y)()
    expected = reference.scale.detach() - 0.1 * reference.scale.grad
    torch.testing.assert_close(model.scale.detach(), expected)
    assert not torch.equal(
        model.body.weight, reference.body.weight - 0.1 * reference.body.weight.grad
    )


def test_kfac_refuses_a_loss_without_factors():
    from bdhf_bench.curvature import ConvexOutputLoss

    with pytest.raises(ValueError, match="no Kronecker factors"):
        torch_loss(ConvexOutputLoss(lambda z, t: (z - t).pow(4).mean()), 8)


def test_kfac_entry_refreshes_every_update_period_steps():
    """Factors change at steps 0, 3, 6 of a period-3 run and stay put in between."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    kfac = get_optimizer("kfac")
    opt = kfac.build(model, kfac.resolve({"update_period": 3}))
    g = torch.Generator().manual_seed(1)
    seen = []
    for _ in range(7):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.step(ModelClosure(model, CrossEntropy(), x, y))
        seen.append(opt.state_dict()["kfac"]["refreshes"])
    assert seen == [1, 1, 1, 2, 2, 2, 3]
