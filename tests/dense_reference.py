"""Dense GGN matrices built from autograd Jacobians and autograd loss Hessians: the oracle.

Nothing here uses bdhf_bench's closed-form loss Hessians or its products: J comes from
``torch.autograd.functional.jacobian`` of the model as a function of its parameters, H from
``torch.autograd.functional.hessian`` of the loss as a function of the (flattened) outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call


def flat_outputs(outputs: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, list[torch.Size]]:
    outs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
    return torch.cat([o.reshape(-1) for o in outs]), [o.shape for o in outs]


def unflatten_outputs(flat: Tensor, shapes: list[torch.Size]) -> tuple[Tensor, ...]:
    parts, i = [], 0
    for s in shapes:
        n = int(torch.Size(s).numel())
        parts.append(flat[i : i + n].view(s))
        i += n
    return tuple(parts)


def dense_factors(
    model: nn.Module,
    inputs: Tensor,
    loss_of_outputs: Callable[..., Tensor],
    params: Sequence[Tensor] | None = None,
    seed: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(J, H): the Jacobian of the flattened outputs w.r.t. ``params`` and the loss Hessian in
    output space, dense, so that G = J^T H J (or G v = J^T (H (J v)) when G is too big to form).

    ``seed`` reseeds the global RNG right before the one forward pass (for Dropout models).
    Buffers are restored afterwards so the model is left as it was.
    """
    named = dict(model.named_parameters())
    params = list(model.parameters()) if params is None else list(params)
    names = [next(n for n, q in named.items() if q is p) for p in params]
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    shapes_box: list[list[torch.Size]] = []

    def f(*ps: Tensor) -> Tensor:
        if seed is not None:
            torch.manual_seed(seed)
        out = functional_call(model, ({**named, **dict(zip(names, ps))}, buffers_copy()), (inputs,))
        flat, shapes = flat_outputs(out)
        shapes_box[:] = [shapes]
        return flat

    def buffers_copy() -> dict[str, Tensor]:
        return {n: b.clone() for n, b in buffers.items()}

    jac = torch.autograd.functional.jacobian(f, tuple(p.detach() for p in params))
    with torch.no_grad():
        z = f(*(p.detach() for p in params))
    shapes = shapes_box[0]
    j = torch.cat([jp.reshape(z.numel(), -1) for jp in jac], dim=1)

    def loss_flat(zf: Tensor) -> Tensor:
        return loss_of_outputs(*unflatten_outputs(zf, shapes))

    h = torch.autograd.functional.hessian(loss_flat, z)
    return j, h


def dense_ggn(
    model: nn.Module,
    inputs: Tensor,
    loss_of_outputs: Callable[..., Tensor],
    params: Sequence[Tensor] | None = None,
    seed: int | None = None,
) -> Tensor:
    """G = J^T H J for ``loss_of_outputs(*outputs)`` (targets already bound), dense."""
    j, h = dense_factors(model, inputs, loss_of_outputs, params, seed)
    return j.T @ h @ j


def block_slices(params: Sequence[Tensor], blocks: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Index tensors into the dense (param-order) matrix for each block's parameters."""
    offsets, i = {}, 0
    for p in params:
        offsets[id(p)] = (i, i + p.numel())
        i += p.numel()
    out = []
    for block in blocks:
        idx = [torch.arange(*offsets[id(p)]) for p in block]
        out.append(torch.cat(idx))
    return out


def flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])
