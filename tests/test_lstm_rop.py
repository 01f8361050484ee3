"""The LSTM recurrence node of the curvature pass (``curvature.lstm_rop``) against the primitive
recurrence it replaces there: bitwise forward values, first derivatives and ``J v`` (the
double backward of the recorded ``J^T u``) equal to rounding against autograd and
``torch.func.jvp`` of the primitive operations, and no recurrent-weight gradient computed
where the backward pass does not need one."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

import bdhf_bench.curvature.lstm_rop as lstm_rop
from bdhf_bench.curvature import CrossEntropy, GGNContext, lstm_recurrence
from bdhf_bench.curvature.lstm_rop import lstm_jvp_friendly
from bdhf_bench.problems.lstm import StackedLSTM

SHAPES = [(5, 4, 3, 6), (3, 7, 7, 13)]  # (N, T, input size, hidden size)


def _inputs(n, t, inp, hidden, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, inp, generator=g, dtype=dtype, requires_grad=True)
    w_ih = torch.randn(4 * hidden, inp, generator=g, dtype=dtype).mul_(0.4).requires_grad_()
    w_hh = torch.randn(4 * hidden, hidden, generator=g, dtype=dtype).mul_(0.4).requires_grad_()
    b = torch.randn(4 * hidden, generator=g, dtype=dtype).mul_(0.2).requires_grad_()
    return x, w_ih, w_hh, b


def _layer(x, w_ih, w_hh, b):
    return lstm_recurrence(nn.functional.linear(x, w_ih, b), w_hh.t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_is_bitwise_the_primitive_recurrence(shape, dtype):
    args = _inputs(*shape, dtype)
    plain = _layer(*args)
    with lstm_jvp_friendly():
        node = _layer(*args)
    assert node.grad_fn is not None and "Recurrence" in type(node.grad_fn).__name__
    assert torch.equal(node, plain)


@pytest.mark.parametrize("shape", SHAPES)
def test_first_derivatives_are_autograds(shape):
    args = _inputs(*shape, torch.float64)
    w = torch.randn(shape[0], shape[1], shape[3], dtype=torch.float64)
    want = torch.autograd.grad((_layer(*args) * w).sum(), args)
    with lstm_jvp_friendly():
        out = _layer(*args)
    got = torch.autograd.grad((out * w).sum(), args, retain_graph=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    # one input at a time: the same values, whichever gradients the pass skips
    for k, arg in enumerate(args):
        (alone,) = torch.autograd.grad((out * w).sum(), [arg], retain_graph=True)
        torch.testing.assert_close(alone, want[k], rtol=1e-12, atol=1e-13)


def test_the_recurrent_weight_gradient_is_computed_only_when_needed(monkeypatch):
    args = _inputs(4, 5, 3, 6, torch.float64)
    asked = []
    real = lstm_rop._backward

    def spy(grad_hs, saved, weight_grad):
        asked.append(weight_grad)
        return real(grad_hs, saved, weight_grad)

    monkeypatch.setattr(lstm_rop, "_backward", spy)
    with lstm_jvp_friendly():
        loss = _layer(*args).square().sum()
    x, w_ih, w_hh, _ = args
    torch.autograd.grad(loss, [x, w_ih], retain_graph=True)
    torch.autograd.grad(loss, [w_hh], retain_graph=True)
    torch.autograd.grad(loss, [w_ih, w_hh], retain_graph=True)
    assert asked == [False, True, True]


class _LastStep(nn.Module):
    def __init__(self, inp: int, hidden: int, layers: int, classes: int) -> None:
        super().__init__()
        self.lstm = StackedLSTM(inp, hidden, layers)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc(self.lstm(x)[:, -1])


@pytest.mark.parametrize("layers", [1, 3])
def test_jacobian_vector_products_are_forward_mode_ad_of_the_primitive_model(layers):
    """``J_S v`` for every parameter and for one layer's alone (BDHF's blocks), and ``J^T w``,
    from the curvature pass against torch.func.jvp / autograd on the primitive operations."""
    torch.manual_seed(layers)
    model = _LastStep(3, 5, layers, 4).double()
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    params = dict(model.named_parameters())
    names = list(params)
    ctx = GGNContext.from_model(model, x, y, CrossEntropy())
    v = {name: torch.randn_like(p) for name, p in params.items()}
    detached = {name: p.detach() for name, p in params.items()}
    subsets = [names, [n for n in names if n.startswith("lstm.layers.0.")]]
    for subset in subsets:
        tangent = {n: v[n] if n in subset else torch.zeros_like(v[n]) for n in names}
        _, want = jvp(lambda p: functional_call(model, p, (x,)), (detached,), (tangent,))
        (got,) = ctx.jvp([names.index(n) for n in subset], [v[n] for n in subset])
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)
    w = torch.randn(6, 4, dtype=torch.float64)
    want_t = torch.autograd.grad(model(x), list(params.values()), w)
    got_t = ctx.vjp(list(range(len(names))), [w])
    for a, b in zip(got_t, want_t):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
