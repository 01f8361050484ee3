"""Exact generalized Gauss-Newton products, full and block-diagonal, from one forward pass.

A ``GGNContext`` holds the outputs of one forward pass (with its autograd graph) and serves every
GGN product of an optimizer step from it, so the network is never re-run per product (users see
these products as ``operator.GGNOperator``; ``mvp`` is the checked form on parameter-shaped
tensors):

- ``J v`` comes from the "double-backward" identity: with ``g(u) = J^T u`` built once per step
  (a backward pass that records its own graph), ``J v = d<g(u), v>/du`` is a backward pass through
  that recorded graph. It costs about one forward-mode pass and, unlike ``torch.func.jvp``, needs
  no re-run of the forward.
- ``H (J v)`` is the loss Hessian in output space (closed form or reverse-over-reverse).
- ``J^T w`` is an ordinary backward pass on the retained forward graph.

For a block b, both passes are restricted to that block: autograd only visits the nodes between
the block's parameters and the outputs, so a block product costs that block's "tail", and all
blocks together cost the sum of the tails, not B full products. Each block's ``J_b v_b`` is its own
output-space direction, which is why ``[G_11 v_1, ..., G_BB v_B]`` is not the diagonal of ``G v``.

L2 weight decay of the form ``0.5 * c * ||p||^2`` added to the loss contributes ``c v`` exactly.

Randomness in the forward pass (Dropout, a VAE's sampling) is drawn once: every product of the
step sees the same masks, so CG solves one consistent quadratic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .blocks import BlockLayout
from .conv_rop import conv_jvp_friendly
from .losses import OutputLoss, Outputs, as_output_loss, as_tuple, output_shapes_match
from .lstm_rop import lstm_jvp_friendly


class GGNContext:
    """All GGN products of one optimizer step, at one point, on one batch.

    Args:
        outputs: the model's outputs on the curvature batch, computed with autograd enabled from
            ``params`` (the one forward pass of the step).
        targets: the batch's targets, as the loss takes them.
        params: the parameters the products are w.r.t.
        loss: the loss on the outputs (an ``OutputLoss`` or a supported torch loss module).
        l2: optional L2 coefficients, one per parameter (0 for none), for a penalty
            ``0.5 * sum_p c_p ||p||^2`` that is part of the objective.
    """

    def __init__(
        self,
        outputs: Outputs,
        targets: Tensor,
        params: Sequence[Tensor],
        loss: OutputLoss,
        l2: Sequence[float] | None = None,
    ) -> None:
        self.outputs = as_tuple(outputs)
        if not all(o.requires_grad for o in self.outputs):
            raise ValueError("outputs must be computed with autograd enabled from the parameters")
        self.params = list(params)
        self.loss = as_output_loss(loss)
        self.targets = targets
        if l2 is not None and len(l2) != len(self.params):
            raise ValueError(f"l2 needs one coefficient per parameter ({len(self.params)})")
        self.l2 = [float(c) for c in l2] if l2 is not None else [0.0] * len(self.params)
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._hessian = self.loss.prepare(self.outputs, targets)
        self._dummy: tuple[Tensor, ...] | None = None
        self._jt_dummy: list[Tensor | None] | None = None

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        inputs: Any,
        targets: Tensor,
        loss: OutputLoss,
        params: Sequence[Tensor] | None = None,
        l2: Sequence[float] | None = None,
    ) -> GGNContext:
        """Run the step's one curvature forward pass and wrap it.

        BatchNorm layers use the batch's statistics (the model's train/eval mode decides, as in
        training) and their running statistics are left untouched. Convolutions and LSTM
        recurrences are recorded so that ``J v`` through them costs what it should (see
        ``conv_rop`` and ``lstm_rop``).
        """
        params = list(model.parameters()) if params is None else list(params)
        with frozen_buffers(model), conv_jvp_friendly(), lstm_jvp_friendly(), torch.enable_grad():
            outputs = model(inputs)
        return cls(outputs, targets, params, loss, l2)

    # -- the pieces --------------------------------------------------------------------------

    def loss_value(self) -> Tensor:
        """The objective on this batch at this point (loss plus L2), detached."""
        with torch.no_grad():
            value = self.loss(self.outputs, self.targets).detach()
            for p, c in zip(self.params, self.l2):
                if c:
                    value = value + 0.5 * c * p.square().sum()
        return value

    @property
    def graph_built(self) -> bool:
        """Whether the recorded ``J^T u`` exists (building it costs one backward pass)."""
        return self._jt_dummy is not None

    def _transposed_jacobian_graph(self) -> list[Tensor | None]:
        """``g(u) = J^T u`` with its graph recorded, built on first use and kept for the step."""
        if self._jt_dummy is None:
            self._dummy = tuple(torch.zeros_like(o, requires_grad=True) for o in self.outputs)
            with torch.enable_grad():
                self._jt_dummy = list(
                    torch.autograd.grad(
                        self.outputs,
                        self.params,
                        grad_outputs=self._dummy,
                        create_graph=True,
                        allow_unused=True,
                    )
                )
        return self._jt_dummy

    def jvp(self, indices: Sequence[int], v: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """``J_S v`` for the parameters ``indices`` (output-space, outputs' structure)."""
        g = self._transposed_jacobian_graph()
        pairs = [(g[i], t) for i, t in zip(indices, v) if g[i] is not None]
        if not pairs:
            return tuple(torch.zeros_like(o) for o in self.outputs)
        assert self._dummy is not None
        jv = torch.autograd.grad(
            [a for a, _ in pairs],
            self._dummy,
            grad_outputs=[t for _, t in pairs],
            retain_graph=True,
            allow_unused=True,
        )
        return tuple(torch.zeros_like(o) if j is None else j for o, j in zip(self.outputs, jv))

    def vjp(self, indices: Sequence[int], w: Sequence[Tensor]) -> list[Tensor]:
        """``J_S^T w`` for the parameters ``indices``."""
        grads = torch.autograd.grad(
            self.outputs,
            [self.params[i] for i in indices],
            grad_outputs=list(w),
            retain_graph=True,
            allow_unused=True,
        )
        return [
            torch.zeros_like(self.params[i]) if g is None else g for i, g in zip(indices, grads)
        ]

    def output_hessian(self, w: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """The loss Hessian (w.r.t. the outputs) times an output-space direction."""
        if not output_shapes_match(self.outputs, w):
            raise ValueError("output-space direction does not match the outputs' shapes")
        return self._hessian.matvec(tuple(w))

    # -- products ------------------------------------------------------------------------------

    def _restricted_product(
        self,
        indices: Sequence[int],
        v: Sequence[Tensor],
        out: Sequence[Tensor] | None = None,
        damping: float = 0.0,
    ) -> list[Tensor]:
        """``G_SS v``; with ``out`` (one tensor per index) written there, the same bits, and
        with ``damping`` (only with ``out``) ``(G_SS + damping I) v``, rounded as adding
        ``damping v`` to the written product afterwards."""
        for i, t in zip(indices, v):
            p = self.params[i]
            if t.shape != p.shape:
                raise ValueError(f"vector of shape {tuple(t.shape)} for parameter {tuple(p.shape)}")
        gv = self.vjp(indices, self.output_hessian(self.jvp(indices, v)))
        if out is None:
            return [g + self.l2[i] * t if self.l2[i] else g for i, g, t in zip(indices, gv, v)]
        for i, g, t, o in zip(indices, gv, v, out):
            if self.l2[i]:
                torch.mul(t, self.l2[i], out=o)  # g + (l2 t), rounded as above
                o.add_(g)
                if damping:
                    o.add_(t, alpha=damping)
            elif damping:
                torch.add(g, t, alpha=damping, out=o)  # the copy and the damping in one pass
            else:
                o.copy_(g)
        return list(out)

    def mvp(self, v: Sequence[Tensor]) -> list[Tensor]:
        """The full product ``G v`` (v and the result in the order of ``params``)."""
        if len(v) != len(self.params):
            raise ValueError(f"expected {len(self.params)} tensors, got {len(v)}")
        _check_finite(v)
        return self._restricted_product(range(len(self.params)), v)

    def _indices(self, block: Sequence[Tensor]) -> list[int]:
        try:
            return [self._index[id(p)] for p in block]
        except KeyError:
            raise ValueError("a block holds a tensor that is not among the parameters") from None

    def _block_products(
        self,
        blocks: Sequence[Sequence[Tensor]],
        vs: Sequence[Sequence[Tensor] | None],
    ) -> list[list[Tensor] | None]:
        out: list[list[Tensor] | None] = []
        for block, v in zip(blocks, vs):
            if v is None:
                out.append(None)
                continue
            if len(v) != len(block):
                raise ValueError(f"block of {len(block)} tensors got {len(v)} vectors")
            out.append(self._restricted_product(self._indices(block), v))
        return out

    def packed_block_products(
        self,
        layout: BlockLayout,
        flat: Tensor,
        active: Sequence[bool],
        out: Tensor | None = None,
        damping: Sequence[float] | None = None,
    ) -> Tensor:
        """Block products on a packed vector, for CG's hot loop (no checks that read values).

        The active blocks' segments of the result hold ``G_bb v_b``; inactive ones are zero.
        With ``out`` (packed like ``flat``, not overlapping it) the result is written there and
        returned: the same values as without, and no new vector per call. ``damping`` (one
        value per block, only with ``out``) makes them ``(G_bb + damping_b I) v_b``, the same
        bits as adding ``damping_b v_b`` to the written result, without that extra pass.
        """
        per_block = layout.unpack_blocks(flat)
        if damping is not None and (out is None or len(damping) != layout.num_blocks):
            raise ValueError(f"damping needs out and one value per block ({layout.num_blocks})")
        if out is not None:
            targets = layout.unpack_blocks(out)
            lam = damping if damping is not None else [0.0] * layout.num_blocks
            for block, v, o, a, lam_b in zip(layout.blocks, per_block, targets, active, lam):
                if not a:
                    for t in o:
                        t.zero_()
                    continue
                self._restricted_product(self._indices(block), v, o, lam_b)
            return out
        vs = [v if a else None for v, a in zip(per_block, active)]
        res = self._block_products(layout.blocks, vs)
        parts = [
            r if r is not None else [torch.zeros_like(p) for p in b]
            for r, b in zip(res, layout.blocks)
        ]
        return layout.pack([t for block in parts for t in block])

    def packed_product(
        self, layout: BlockLayout, flat: Tensor, out: Tensor | None = None
    ) -> Tensor:
        """The full product ``G v`` over all of ``layout``'s parameters, packed likewise (into
        ``out`` when given)."""
        indices = [self._index[id(p)] for p in layout.params]
        return layout.pack(self._restricted_product(indices, layout.unpack(flat)), out=out)


@contextlib.contextmanager
def frozen_buffers(model: nn.Module) -> Iterator[None]:
    """Run with copies of every buffer, so BatchNorm's running statistics stay untouched.

    The copies are swapped in (not restored in place afterwards): a graph recorded inside may
    hold them, and an in-place restore would invalidate it.
    """
    originals = []
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None:
                originals.append((module, name, buf))
                setattr(module, name, buf.clone())
    try:
        yield
    finally:
        for module, name, buf in originals:
            setattr(module, name, buf)


def _check_finite(v: Sequence[Tensor]) -> None:
    if not all(bool(torch.isfinite(t).all()) for t in v):
        raise ValueError("the vector has non-finite entries")
