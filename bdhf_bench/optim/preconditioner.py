"""Martens' diagonal preconditioner: the squared per-example gradients.

HF's optional preconditioner is ``(D + lambda + l2)^0.75`` with ``D`` the diagonal of the
empirical Fisher: for a mean-reduced loss the mean of the squared per-example gradients, as in
Martens' code (for a sum-reduced loss their sum, so that D scales like the curvature). The
per-example gradients come from ``torch.func`` (vmap over ``grad``), in chunks to bound memory,
on the curvature sub-batch. Models whose examples interact in the forward pass (BatchNorm in
training mode) have no per-example gradients, so they cannot use it.

With cross-entropy and ``ignore_index`` each prediction has its weight in the loss (0 where
ignored): D is the weighted sum of the squared per-example gradients, so a mean over the kept
predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ..curvature import BlockLayout, CrossEntropy
from .closure import ModelClosure, rows

CHUNK = 32


def _reduction_share(reduction: str, n: int) -> float:
    """How one example's loss, computed as a batch of one, enters the batch loss."""
    return 1.0 if reduction == "sum" else 1.0 / n


def squared_gradient_diagonal(closure: ModelClosure, layout: BlockLayout) -> Tensor:
    """The squared-gradient diagonal on the curvature sub-batch, packed in ``layout``'s order."""
    model = closure.model
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()):
        raise ValueError(
            "precondition=True needs per-example gradients, which BatchNorm in training mode "
            "does not have; use precondition=False"
        )
    share = closure.curvature_share
    n = max(1, round(share * closure.batch_size))
    inputs, targets = rows(closure.inputs, 0, n), rows(closure.targets, 0, n)
    names = [name for name, _ in model.named_parameters()]
    by_id = {id(p): name for name, p in model.named_parameters()}
    wanted = [by_id[id(p)] for p in layout.params]
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    loss = closure.loss
    weights = (
        loss.prediction_weights(targets, layout.params[0].dtype)
        if isinstance(loss, CrossEntropy)
        else None
    )
    if weights is None:
        scale: Tensor | float = _reduction_share(loss.reduction, n)
        # one weight per example: its share of the reduction
        weights = torch.full((n,), scale, dtype=layout.params[0].dtype, device=closure.device)

        def weighted_loss(out: Tensor, y: Tensor, w: Tensor) -> Tensor:
            return loss(out, y) * w[0]
    else:
        scale = weights.max()  # every kept prediction has the same weight

        def weighted_loss(out: Tensor, y: Tensor, w: Tensor) -> Tensor:
            per = F.cross_entropy(out, y, reduction="none", ignore_index=loss.ignore_index)
            return (per * w).sum()

    def example_loss(ps: dict[str, Tensor], x: object, y: Tensor, w: Tensor) -> Tensor:
        x1 = _add_batch_dim(x)
        out = functional_call(model, ({**params, **ps}, buffers), (x1,))
        return weighted_loss(out, y.unsqueeze(0), w.unsqueeze(0))

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0, 0), randomness="different")
    sums = {k: torch.zeros_like(params[k]) for k in wanted}
    ps = {k: params[k] for k in names if k in wanted}
    for start in range(0, n, CHUNK):
        stop = start + CHUNK
        g = per_example(
            ps, rows(inputs, start, stop), rows(targets, start, stop), weights[start:stop]
        )
        for k in wanted:
            sums[k] += g[k].square().sum(dim=0)
    closure.counts.forward += share
    closure.counts.backward += share
    return layout.pack([sums[k] / scale for k in wanted])


def _add_batch_dim(x: object) -> object:
    if isinstance(x, Tensor):
        return x.unsqueeze(0)
    if isinstance(x, (tuple, list)):
        return type(x)(_add_batch_dim(v) for v in x)
    raise ValueError("the preconditioner supports tensor inputs (or tuples of them)")
