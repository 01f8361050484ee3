"""Convolutions whose double backward does only what a Jacobian-vector product needs.

``GGNContext`` gets ``J v`` by differentiating the recorded backward pass ``J^T u`` w.r.t. ``u``.
For a convolution that second differentiation needs one thing: ``ggO = conv(ggI, W) +
conv(I, ggW) + ggb``. PyTorch's ``_convolution_double_backward`` ignores its output mask and also
computes the derivatives w.r.t. the input and the weight whenever ``ggW`` or ``ggI`` is defined:
two extra convolutions per layer, which makes ``J v`` through a CNN cost twice what it should.

``conv_jvp_friendly()`` is a ``TorchFunctionMode`` for the curvature forward pass: it routes
``conv{1,2,3}d`` and ``conv_transpose{1,2,3}d`` through an autograd Function whose backward is
PyTorch's own ``convolution_backward`` (same cost as usual) and whose double backward w.r.t. the
output gradient is exactly the line above. The input and weight enter that double backward as
constants: the recorded ``J^T u`` may only be differentiated w.r.t. ``u``, which is all
``GGNContext`` does. Forward values and first derivatives are bitwise PyTorch's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

_aten = torch.ops.aten

# func -> (spatial dims, transposed)
_CONVS = {
    F.conv1d: (1, False),
    F.conv2d: (2, False),
    F.conv3d: (3, False),
    F.conv_transpose1d: (1, True),
    F.conv_transpose2d: (2, True),
    F.conv_transpose3d: (3, True),
}


def _tuple(x: Any, n: int) -> list[int]:
    if isinstance(x, int):
        return [x] * n
    return list(x)


class _ConvParams:
    __slots__ = ("dilation", "groups", "output_padding", "padding", "stride", "transposed")

    def __init__(self, dims: int, transposed: bool, args: tuple, kwargs: dict) -> None:
        # F.convNd(input, weight, bias, stride, padding, dilation, groups)
        # F.conv_transposeNd(input, weight, bias, stride, padding, output_padding, groups, dilation)
        names = (
            ("stride", "padding", "output_padding", "groups", "dilation")
            if transposed
            else ("stride", "padding", "dilation", "groups")
        )
        defaults = {"stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1}
        values = dict(defaults)
        values.update(dict(zip(names, args)))
        values.update({k: v for k, v in kwargs.items() if k in defaults})
        self.transposed = transposed
        self.stride = _tuple(values["stride"], dims)
        self.padding = _tuple(values["padding"], dims)
        self.dilation = _tuple(values["dilation"], dims)
        self.output_padding = _tuple(values["output_padding"], dims)
        self.groups = int(values["groups"])

    def conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return _aten.convolution(
            x,
            w,
            b,
            self.stride,
            self.padding,
            self.dilation,
            self.transposed,
            self.output_padding,
            self.groups,
        )


class _ConvTransposedJacobian(torch.autograd.Function):
    """(gI, gW, gb) = J^T gO for one convolution; differentiable w.r.t. gO only."""

    @staticmethod
    def forward(ctx, grad_out, inp, weight, bias_shape, params, mask):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(inp, weight)
        ctx.params = params
        ctx.out_shape = grad_out.shape
        gi, gw, gb = _aten.convolution_backward(
            grad_out,
            inp,
            weight,
            bias_shape,
            params.stride,
            params.padding,
            params.dilation,
            params.transposed,
            params.output_padding,
            params.groups,
            mask,
        )
        return gi, gw, gb

    @staticmethod
    def backward(ctx, ggi, ggw, ggb):  # type: ignore[override]
        inp, weight = ctx.saved_tensors
        params: _ConvParams = ctx.params
        ggo = None
        if ggi is not None:
            ggo = params.conv(ggi, weight, None)
        if ggw is not None:
            term = params.conv(inp, ggw, None)
            ggo = term if ggo is None else ggo + term
        if ggb is not None:
            shape = [1, -1] + [1] * (inp.dim() - 2)
            term = ggb.view(shape)
            ggo = term.expand(ctx.out_shape).clone() if ggo is None else ggo + term
        return ggo, None, None, None, None, None


class _Convolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp, weight, bias, params):  # type: ignore[override]
        ctx.save_for_backward(inp, weight)
        ctx.params = params
        ctx.bias_shape = None if bias is None else list(bias.shape)
        return params.conv(inp, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        inp, weight = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        gi, gw, gb = _ConvTransposedJacobian.apply(
            grad_out, inp.detach(), weight.detach(), ctx.bias_shape, ctx.params, mask
        )
        return gi, gw, gb, None


class _JvpFriendlyConvolutions(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        spec = _CONVS.get(func)
        if spec is not None:
            dims, transposed = spec
            inp = args[0]
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            rest = args[3:]
            padding = rest[1] if len(rest) > 1 else kwargs.get("padding", 0)
            batched = inp.dim() == dims + 2
            if not isinstance(padding, str) and batched:
                params = _ConvParams(dims, transposed, rest, kwargs)
                return _Convolution.apply(inp, weight, bias, params)
        return func(*args, **kwargs)


@contextlib.contextmanager
def conv_jvp_friendly() -> Iterator[None]:
    """Run the curvature forward pass with convolutions whose double backward is minimal."""
    with _JvpFriendlyConvolutions():
        yield
