"""An LSTM recurrence whose curvature products are written out, not replayed op by op.

An LSTM layer is a matmul over all time steps for the input projection (``pre``), then, per
step, a small matmul and a dozen elementwise gate operations. Through autograd, ``J v`` (the
double backward of ``J^T u``, see ``ggn``) replays the recorded backward of every one of those
operations, and ``J^T w`` replays the forward's: on a small curvature batch the products cost
dispatch, not arithmetic (smnist_lstm: about 34k aten calls per HF step). Here the recurrence is
one autograd node whose backward is backpropagation through time written with a few fused
tensor operations per step, and whose backward's own derivative w.r.t. the output gradient is
the recurrence's tangent (R-op) pass, likewise. Both reuse the local derivatives the forward
pass saved (of the cell and hidden state w.r.t. each gate's input, and of h w.r.t. c).

``lstm_recurrence(pre, w_hh_t)`` computes the recurrence with primitive operations (every
derivative of every order, on every device), except inside ``lstm_jvp_friendly()``, the
curvature forward pass's context, where it is that node. Its forward values are bitwise the
primitive ones; its derivatives agree to rounding. As in ``conv_rop``, the recorded ``J^T u``
may only be differentiated w.r.t. ``u`` (pre and the weights enter that second derivative as
constants), which is all ``GGNContext`` does.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import get_gradient_edge

_FRIENDLY = contextvars.ContextVar("lstm_jvp_friendly", default=False)


def lstm_recurrence(pre: Tensor, w_hh_t: Tensor) -> Tensor:
    """Hidden states (N, T, H) of an LSTM recurrence with zero initial state.

    ``pre``: (N, T, 4H) input projections with both biases, gates in ``nn.LSTM``'s order
    (input, forget, cell, output); ``w_hh_t``: the recurrent weight transposed, (H, 4H).
    """
    if _FRIENDLY.get() and torch.is_grad_enabled():
        return _Recurrence.apply(pre, w_hh_t)
    return _forward(pre, w_hh_t, None)


@contextlib.contextmanager
def lstm_jvp_friendly() -> Iterator[None]:
    """Run the curvature forward pass with LSTM recurrences as single, cheap-to-differentiate
    nodes."""
    token = _FRIENDLY.set(True)
    try:
        yield
    finally:
        _FRIENDLY.reset(token)


class _Saved:
    """What the forward pass keeps per time step for the backward and tangent passes."""

    __slots__ = ("forget", "h_prev", "local", "out_slope", "w_hh_t")

    def __init__(self, w_hh_t: Tensor) -> None:
        self.w_hh_t = w_hh_t
        self.h_prev: list[Tensor] = []
        self.forget: list[Tensor] = []  # d c / d c_prev
        self.out_slope: list[Tensor] = []  # d h / d c = o (1 - tanh(c)^2)
        # (N, 4H): d c / d gates for the i, f and g gates' inputs and d h / d gates for o's,
        # what the passes multiply (dc, dc, dc, dh) by
        self.local: list[Tensor] = []

    def keep(self, h_prev: Tensor, c_prev: Tensor, gates: tuple[Tensor, ...], tanh_c: Tensor):
        """One step's local derivatives, from its inputs and activated gates (i, f, g, o)."""
        i, f, g, o = gates
        hidden = g.shape[1]
        act = torch.cat([i, f, g, o], dim=1)
        slope = act - act * act  # sigmoid' = s - s^2, and the g gate's tanh' = 1 - g^2
        slope[:, 2 * hidden : 3 * hidden] = 1 - g * g
        self.h_prev.append(h_prev)
        self.local.append(torch.cat([g, c_prev, i, tanh_c], dim=1).mul_(slope))
        self.forget.append(f)
        self.out_slope.append(o * (1 - tanh_c * tanh_c))


def _forward(pre: Tensor, w_hh_t: Tensor, saved: _Saved | None) -> Tensor:
    """The recurrence with primitive operations (every derivative of every order, on every
    device), keeping each step's local derivatives in ``saved`` when given."""
    n, hidden = pre.shape[0], w_hh_t.shape[0]
    h = pre.new_zeros(n, hidden)
    c = pre.new_zeros(n, hidden)
    hs = []
    # unbind, not pre[:, t]: each slice's backward would write a full-size zero tensor,
    # O(T^2) work over a sequence; unbind's backward is one stack.
    for pre_t in pre.unbind(1):
        gates = torch.addmm(pre_t, h, w_hh_t)
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        h_prev, c_prev = h, c
        c = f * c + i * g
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        hs.append(h)
        if saved is not None:
            saved.keep(h_prev, c_prev, (i, f, g, o), tanh_c)
    return torch.stack(hs, dim=1)


def _backward(grad_hs: Tensor, saved: _Saved, weight_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Backpropagation through time: (d pre, d w_hh_t) from d hs (d w_hh_t only if asked)."""
    hidden = saved.w_hh_t.shape[0]
    w_hh = saved.w_hh_t.t()
    grads = grad_hs.unbind(1)
    steps = len(grads)
    d_pre: list[Tensor] = list(grads)  # placeholders, each replaced below
    dh = grads[-1]
    dc: Tensor | None = None
    for t in reversed(range(steps)):
        dc = dh * saved.out_slope[t] if dc is None else torch.addcmul(dc, dh, saved.out_slope[t])
        d_gates = torch.cat([dc, dc, dc, dh], dim=1).mul_(saved.local[t])
        d_pre[t] = d_gates
        if t:
            dc = dc * saved.forget[t]
            dh = torch.addmm(grads[t - 1], d_gates, w_hh)
    stacked = torch.stack(d_pre, dim=1)
    if not weight_grad:
        return stacked, None
    h_prev = torch.stack(saved.h_prev, dim=1).reshape(-1, hidden)
    return stacked, h_prev.t() @ stacked.reshape(-1, 4 * hidden)


def _tangent(d_pre: Tensor | None, d_w_hh_t: Tensor | None, saved: _Saved) -> Tensor:
    """The hidden states' tangent (N, T, H) for tangents of pre and of w_hh_t (None: zero)."""
    steps, hidden = len(saved.local), saved.w_hh_t.shape[0]
    n = saved.local[0].shape[0]
    if d_pre is None and d_w_hh_t is None:
        return saved.local[0].new_zeros(n, steps, hidden)
    pres = d_pre.unbind(1) if d_pre is not None else [None] * steps
    dh: Tensor | None = None
    dc: Tensor | None = None
    out = []
    for t in range(steps):
        d_gates = pres[t]
        if d_w_hh_t is not None and t > 0:  # h_prev is zero at t = 0
            h_prev = saved.h_prev[t]
            d_gates = (
                h_prev @ d_w_hh_t if d_gates is None else torch.addmm(d_gates, h_prev, d_w_hh_t)
            )
        if dh is not None:
            d_gates = (
                dh @ saved.w_hh_t if d_gates is None else torch.addmm(d_gates, dh, saved.w_hh_t)
            )
        if d_gates is None:  # no tangent reaches the first step
            d_gates = saved.local[t].new_zeros(n, 4 * hidden)
        terms = d_gates * saved.local[t]
        dc_t = terms[:, : 3 * hidden].unflatten(1, (3, hidden)).sum(1)
        dc = dc_t if dc is None else torch.addcmul(dc_t, saved.forget[t], dc)
        dh = torch.addcmul(terms[:, 3 * hidden :], saved.out_slope[t], dc)
        out.append(dh)
    return torch.stack(out, dim=1)


def _will_be_used(node: Any) -> bool:
    """Whether the running backward pass needs this input's gradient (True when unknown)."""
    if node is None or not hasattr(torch._C, "_will_engine_execute_node"):
        return True
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except RuntimeError:  # outside a backward pass, or a node it cannot tell about
        return True


class _TransposedJacobian(torch.autograd.Function):
    """(d pre, d w_hh_t) = J^T d hs; differentiable w.r.t. d hs only (by the tangent pass)."""

    @staticmethod
    def forward(ctx, grad_hs, saved):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        ctx.saved = saved
        return _backward(grad_hs, saved, weight_grad=True)

    @staticmethod
    def backward(ctx, gg_pre, gg_w):  # type: ignore[override]
        return _tangent(gg_pre, gg_w, ctx.saved), None


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, w_hh_t):  # type: ignore[override]
        saved = _Saved(w_hh_t.detach())
        hs = _forward(pre.detach(), saved.w_hh_t, saved)
        ctx.saved = saved
        ctx.w_node = get_gradient_edge(w_hh_t).node if w_hh_t.requires_grad else None
        return hs

    @staticmethod
    def backward(ctx, grad_hs):  # type: ignore[override]
        if torch.is_grad_enabled():  # recording J^T u, to be differentiated w.r.t. u
            return _TransposedJacobian.apply(grad_hs, ctx.saved)
        weight_grad = ctx.needs_input_grad[1] and _will_be_used(ctx.w_node)
        return _backward(grad_hs, ctx.saved, weight_grad)
