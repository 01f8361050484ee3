"""One CG iteration after its product, for every block, as a single ``torch.compile``d function.

The eager loop (``cg.block_cg``) spends an iteration in some forty small kernels: per-block dots,
``_foreach`` updates and the (num_blocks,)-sized bookkeeping of ``cg_rules``. On a GPU each of
them is a launch, and the launches, not the arithmetic, set the pace on DeepOBS-sized problems.
Here the same arithmetic is traced once per layout into a few fused kernels: the p.Ap
reductions, then x, r (and y) with the r.y reductions, then the direction and the stopping rules.

Shapes are fixed for a layout (the segment sizes are constants of the traced graph), and the
per-iteration numbers (i, the progress window) come in as a device tensor, so a run compiles
once and then never reads the host. Every block's segment is visited every iteration, but only
the blocks that take a step change: a stopped block keeps x, r and its direction exactly.

Not bitwise the eager loop: the compiled reductions sum in their own order (BLAS dots in the
eager loop), which moves the iterates by rounding; the tests hold the two to each other within
that. On a CPU the eager loop is as fast or faster (ATen's kernels already run these passes at
memory bandwidth): this is the path for GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .cg_rules import (
    CONVERGED,
    MAX_ITERS,
    PROGRESS,
    RUNNING,
    advance_model,
    direction_scale,
    step_length,
    too_slow,
)

# One traced graph per (layout, dtype, device, preconditioned or not): a process that runs
# several problems needs more than dynamo's default of 8 per function.
_GRAPHS_PER_PROCESS = 64


def _segment_dots(a: Tensor, b: Tensor, sizes: Sequence[int]) -> Tensor:
    """Per-block inner products in the vectors' precision, then in float64."""
    parts = [(u * v).sum() for u, v in zip(a.split(sizes), b.split(sizes))]
    return torch.stack(parts).to(torch.float64)


def _iteration(
    x: Tensor,
    r: Tensor,
    p: Tensor,
    ap: Tensor,
    precond: tuple[Tensor, Tensor] | None,
    state: tuple[Tensor, Tensor, Tensor, Tensor, Tensor],
    prev_phi: Tensor,
    clock: Tensor,
    limits: tuple[Tensor, Tensor, Tensor, Tensor],
    sizes: tuple[int, ...],
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]:
    """Advance x, r, y and p in place by one CG iteration, given ``ap`` = (A + lambda I) p.

    ``precond`` = (M, y) with y = M^-1 r written in place, or None (y is r); ``state`` = (ry,
    phi, reason, iters, stopped_at) per block, returned advanced with the blocks still running;
    ``clock`` = (i, k, progress rule on) as a long tensor; ``limits`` = (tol, min_iters,
    max_iters, solved_at) per block.
    """
    ry, phi, reason, iters, stopped_at = state
    tol, min_its, max_its, solved_at = limits
    i, k_gap, progress_on = clock[0], clock[1], clock[2] != 0
    active = reason == RUNNING
    reason, step, alpha = step_length(_segment_dots(p, ap, sizes), ry, active, reason)
    a = alpha.to(x.dtype)
    # a block that takes no step keeps x and r as they are (also when its product is not finite)
    for k, (x_k, r_k, p_k, ap_k) in enumerate(
        zip(x.split(sizes), r.split(sizes), p.split(sizes), ap.split(sizes))
    ):
        x_k.copy_(torch.where(step[k], x_k + p_k * a[k], x_k))
        r_k.copy_(torch.where(step[k], r_k + ap_k * a[k], r_k))
    y = r
    if precond is not None:
        m, y = precond
        y.copy_(r / m)
    ry_new = _segment_dots(r, y, sizes)
    b = direction_scale(step, ry, ry_new).to(x.dtype)
    for k, (p_k, y_k) in enumerate(zip(p.split(sizes), y.split(sizes))):
        p_k.copy_(torch.where(step[k], p_k * b[k] - y_k, p_k))
    phi, ry = advance_model(step, alpha, ry, ry_new, phi)
    iters = iters + step.long()
    slow = too_slow(phi, prev_phi, k_gap * tol) & progress_on & (min_its <= i)
    reason = torch.where(step & slow, PROGRESS, reason)
    reason = torch.where(step & (ry_new <= solved_at) & (reason == RUNNING), CONVERGED, reason)
    reason = torch.where((reason == RUNNING) & (max_its <= i), MAX_ITERS, reason)
    stopped_at = torch.where(active & (reason != RUNNING), i, stopped_at)
    return (ry, phi, reason, iters, stopped_at), reason == RUNNING


_compiled = None


def fused_iteration(*args, **kwargs):
    """``_iteration``, compiled on first use (``fullgraph``: a graph break is an error, not a
    silent fall back to the eager kernels)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(_iteration, fullgraph=True, dynamic=False)
    config = torch._dynamo.config  # imported here, not with bdhf_bench: about a second
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    with config.patch(**{limit: _GRAPHS_PER_PROCESS}):  # cache_size_limit before torch 2.6
        return _compiled(*args, **kwargs)
