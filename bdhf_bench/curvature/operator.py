"""Curvature as typed linear operators on packed parameter vectors (curvlinops' shape).

``GGNOperator(ctx, layout)`` is the generalized Gauss-Newton matrix of one optimizer step (a
``GGNContext``) on the packed vectors of ``layout``: ``G @ v`` is the full product,
``G.block_diagonal() @ v`` each block's own diagonal block times its segment, and
``to_dense()`` the matrix itself, for tests.

CG takes a ``BlockOperator``: a ``layout`` and ``matvec(v, active, damping)``, the damped
products ``(A_bb + damping_b I) v_b`` of the blocks still running (the other segments may hold
anything), which the operator may write into the same buffer at every call. The GGN's block
diagonal adds the damping as it writes each product; ``FunctionOperator`` wraps a plain
function ``f(v, active) -> A v`` (a dense matrix in a test, a plugged-in curvature) and adds it
after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from .blocks import BlockLayout
from .ggn import GGNContext


class BlockOperator(Protocol):
    """What block CG multiplies by: a symmetric block-diagonal operator on ``layout``."""

    layout: BlockLayout

    def matvec(self, v: Tensor, active: Sequence[bool], damping: Sequence[float]) -> Tensor:
        """``(A_bb + damping_b I) v_b`` in the active blocks' segments (the others: anything);
        no check that reads values (it is CG's hot loop)."""
        ...


class GGNOperator:
    """The GGN of one step on ``layout``'s packed vectors, or its block diagonal.

    Args:
        ctx: the step's products (one forward pass on the curvature batch).
        layout: the parameters and their blocks; vectors are packed like ``layout.pack``.
        block_diagonal: the block-diagonal restriction ``diag(G_11, ..., G_BB)`` (what BDHF
            solves with; with one block, G itself) instead of G.
        out: a packed buffer every product is written into (no new vector per product); the
            result is then valid until the next product.
    """

    def __init__(
        self,
        ctx: GGNContext,
        layout: BlockLayout,
        *,
        block_diagonal: bool = False,
        out: Tensor | None = None,
    ) -> None:
        self.ctx, self.layout = ctx, layout
        self.is_block_diagonal = block_diagonal
        self.out = out

    @property
    def shape(self) -> tuple[int, int]:
        return (self.layout.numel, self.layout.numel)

    def block_diagonal(self) -> GGNOperator:
        """``diag(G_11, ..., G_BB)`` over ``layout``'s blocks, sharing this one's buffer."""
        return GGNOperator(self.ctx, self.layout, block_diagonal=True, out=self.out)

    def __matmul__(self, v: Tensor) -> Tensor:
        """The product with a packed vector (its shape is checked, its values are not)."""
        if v.shape != (self.layout.numel,):
            raise ValueError(f"vector of shape {tuple(v.shape)}, expected ({self.layout.numel},)")
        if self.is_block_diagonal:
            everyone = [True] * self.layout.num_blocks
            return self.ctx.packed_block_products(self.layout, v, everyone, out=self.out)
        return self.ctx.packed_product(self.layout, v, out=self.out)

    def matvec(self, v: Tensor, active: Sequence[bool], damping: Sequence[float]) -> Tensor:
        """CG's product: the active blocks' ``(G_bb + damping_b I) v_b``, the damping added as
        each product is written (the same bits as adding it after, one pass fewer); inactive
        segments are zero. Needs ``out`` and the block diagonal (or a single block)."""
        if not (self.is_block_diagonal or self.layout.num_blocks == 1):
            raise ValueError("CG solves with the block diagonal: use G.block_diagonal()")
        if self.out is None:
            raise ValueError("CG's products are written into a buffer: give the operator out=")
        return self.ctx.packed_block_products(self.layout, v, active, out=self.out, damping=damping)

    def to_dense(self) -> Tensor:
        """The matrix, one product per column (for tests on small models)."""
        numel = self.layout.numel
        like = self.layout.params[0]
        eye = torch.eye(numel, dtype=like.dtype, device=like.device)
        return torch.stack([(self @ eye[j]).clone() for j in range(numel)], dim=1)


class FunctionOperator:
    """A block operator from ``matvec(v, active) -> A v`` (undamped; inactive segments may
    hold anything); the damping is added to the product afterwards, per running block."""

    def __init__(self, matvec: Callable[[Tensor, Sequence[bool]], Tensor], layout: BlockLayout):
        self.function, self.layout = matvec, layout

    def matvec(self, v: Tensor, active: Sequence[bool], damping: Sequence[float]) -> Tensor:
        av = self.function(v, active)
        if len(set(damping)) == 1:
            # one kernel; inactive segments are ignored, so damping them too is harmless
            if damping[0]:
                av.add_(v, alpha=damping[0])
            return av
        sizes = self.layout.block_numels
        for k, (av_k, v_k) in enumerate(zip(av.split(sizes), v.split(sizes))):
            if active[k] and damping[k]:
                av_k.add_(v_k, alpha=damping[k])
        return av
