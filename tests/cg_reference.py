"""Today's block CG (before issue 14's rewrite), verbatim: the reference the rewritten loop must
reproduce bitwise with default options."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from bdhf_bench.curvature.blocks import BlockLayout
from bdhf_bench.curvature.cg import CGResult, backtracking_schedule, block_cg
from bdhf_bench.curvature.cg_rules import CONVERGED as _CONVERGED
from bdhf_bench.curvature.cg_rules import CURVATURE as _CURVATURE
from bdhf_bench.curvature.cg_rules import MAX_ITERS as _MAX_ITERS
from bdhf_bench.curvature.cg_rules import NONFINITE as _NONFINITE
from bdhf_bench.curvature.cg_rules import PROGRESS as _PROGRESS
from bdhf_bench.curvature.cg_rules import RUNNING as _RUNNING
from bdhf_bench.curvature.cg_rules import STOP_REASONS
from bdhf_bench.curvature.operator import FunctionOperator

MatVec = Callable[..., Tensor]
"""``matvec(p, active) -> A p`` on packed vectors, undamped."""


def _per_block(name: str, value: float | Sequence[float], nb: int) -> list:
    """One value per block, from a single value or a sequence of them."""
    if isinstance(value, (int, float)):
        return [value] * nb
    values = list(value)
    if len(values) != nb:
        raise ValueError(f"{name} needs one value or one per block ({nb}), got {len(values)}")
    return values


def reference_block_cg(
    matvec: MatVec,
    b: Tensor,
    layout: BlockLayout,
    damping: Tensor | float,
    *,
    x0: Tensor | None = None,
    max_iters: int | Sequence[int] = 250,
    min_iters: int | Sequence[int] = 1,
    tol: float | Sequence[float] = 5e-4,
    preconditioner: Tensor | None = None,
    keep_iterates: bool = False,
    residual_tol: float = 1e-10,
) -> CGResult:
    """Solve ``(A_bb + damping_b I) x_b = b_b`` for every block b.

    Args:
        matvec: ``matvec(p, active) -> A p`` on packed vectors, undamped; segments of blocks
            not in ``active`` may hold anything (they are ignored).
        b: the right-hand side (packed), e.g. minus the gradient.
        layout: the blocks.
        damping: lambda, one value or one per block.
        x0: the starting point (warm start); zero when None.
        max_iters, min_iters, tol: the stopping rules (see the module docstring), one value for
            every block or one per block.
        preconditioner: a positive diagonal M (packed); CG then runs on M^-1 A.
        keep_iterates: keep iterates for CG-backtracking.
        residual_tol: the relative (preconditioned) residual at which a block counts as solved.
    """
    if b.shape != (layout.numel,):
        raise ValueError(f"right-hand side of shape {tuple(b.shape)}, expected ({layout.numel},)")
    nb, dev, dtype = layout.num_blocks, b.device, b.dtype
    max_its = _per_block("max_iters", max_iters, nb)
    min_its = _per_block("min_iters", min_iters, nb)
    tols = _per_block("tol", tol, nb)
    if min(max_its) < 1 or min(min_its) < 0:
        raise ValueError(f"max_iters must be >= 1 and min_iters >= 0 (got {max_its}, {min_its})")
    if not min(tols) > 0:
        raise ValueError(f"tol must be positive, got {tols}")
    # Uniform limits stay Python scalars (no extra kernels); per-block ones are device vectors.
    limit = max(max_its)
    max_t = None if len(set(max_its)) == 1 else torch.tensor(max_its, device=dev)
    min_t = None if len(set(min_its)) == 1 else torch.tensor(min_its, device=dev)
    tol_t = tols[0] if len(set(tols)) == 1 else torch.tensor(tols, dtype=torch.float64, device=dev)
    lam = torch.as_tensor(damping, dtype=torch.float64).expand(nb).tolist()
    if preconditioner is not None and preconditioner.shape != b.shape:
        raise ValueError("the preconditioner must have the shape of b")
    sizes = layout.block_numels

    def damped(p: Tensor, active: Sequence[bool]) -> Tensor:
        ap = matvec(p, active)
        for k, (ap_k, p_k) in enumerate(zip(ap.split(sizes), p.split(sizes))):
            if active[k] and lam[k]:
                ap_k.add_(p_k, alpha=lam[k])
        return ap

    def dots(a: Tensor, b: Tensor, active: Sequence[bool]) -> Tensor:
        zero = a.new_zeros(())
        parts = [
            torch.dot(a_k, b_k) if on else zero
            for on, a_k, b_k in zip(active, a.split(sizes), b.split(sizes))
        ]
        return torch.stack(parts).to(torch.float64)

    everyone = [True] * nb
    block_products = [0] * nb
    matvecs = 0

    if x0 is None:
        x = torch.zeros_like(b)
        r = -b
        phi = torch.zeros(nb, dtype=torch.float64, device=dev)
    else:
        if x0.shape != b.shape:
            raise ValueError("x0 must have the shape of b")
        x = x0.clone()
        r = damped(x, everyone) - b
        matvecs += 1
        block_products = [1] * nb
        phi = 0.5 * dots(r - b, x, everyone)
    # y = M^-1 r; without a preconditioner y is r itself.
    y = r if preconditioner is None else r / preconditioner
    p = -y
    ry = dots(r, y, everyone)
    solved_at = ry * residual_tol**2
    phis = [phi]
    iters = torch.zeros(nb, dtype=torch.long, device=dev)
    reason = torch.where(ry <= 0, _CONVERGED, torch.zeros(nb, dtype=torch.long, device=dev))
    active = reason == _RUNNING
    host_active = active.tolist()

    schedule = set(backtracking_schedule(limit)) if keep_iterates else set()
    iterates: list[tuple[int, Tensor]] = []
    views = list(zip(x.split(sizes), r.split(sizes), y.split(sizes), p.split(sizes)))
    m_views = None if preconditioner is None else preconditioner.split(sizes)
    i = 0
    while any(host_active):
        i += 1
        ap = damped(p, host_active)
        matvecs += 1
        for k, a in enumerate(host_active):
            block_products[k] += int(a)
        pap = dots(p, ap, host_active)
        finite = torch.isfinite(pap)
        curved = finite & (pap > 0)
        reason = torch.where(active & ~finite, _NONFINITE, reason)
        reason = torch.where(active & finite & ~curved, _CURVATURE, reason)
        step = active & curved
        alpha = torch.where(step, ry / torch.where(curved, pap, 1.0), 0.0)
        alpha_v = alpha.to(dtype)
        ap_views = ap.split(sizes)
        for k, (x_k, r_k, y_k, p_k) in enumerate(views):
            if host_active[k]:
                x_k.addcmul_(p_k, alpha_v[k])
                r_k.addcmul_(ap_views[k], alpha_v[k])
                if m_views is not None:
                    torch.div(r_k, m_views[k], out=y_k)
        ry_new = dots(r, y, host_active)
        beta = torch.where(step & (ry > 0), ry_new / torch.where(ry > 0, ry, 1.0), 0.0)
        beta_v = beta.to(dtype)
        for k, (_, _, y_k, p_k) in enumerate(views):
            if host_active[k]:
                p_k.mul_(beta_v[k]).sub_(y_k)
        # CG's exact recurrence for the quadratic model: phi_{i+1} = phi_i - alpha_i r_i.y_i / 2
        phi = torch.where(step, phi - 0.5 * alpha * ry, phi)
        ry = torch.where(step, ry_new, ry)
        iters = iters + step.long()
        phis.append(phi)

        k_gap = max(10, math.ceil(0.1 * i))
        if i > k_gap and (min_t is not None or i >= min_its[0]):
            prev = phis[i - k_gap]
            slow = (phi < 0) & ((phi - prev) / torch.where(phi < 0, phi, -1.0) < k_gap * tol_t)
            if min_t is not None:
                slow = slow & (min_t <= i)
            reason = torch.where(step & slow, _PROGRESS, reason)
        solved = ry_new <= solved_at
        reason = torch.where(step & solved & (reason == _RUNNING), _CONVERGED, reason)
        if max_t is not None:
            reason = torch.where((reason == _RUNNING) & (max_t <= i), _MAX_ITERS, reason)
        elif i >= limit:
            reason = torch.where(reason == _RUNNING, _MAX_ITERS, reason)
        active = reason == _RUNNING
        if i in schedule:
            iterates.append((i, x.clone()))
        host_active = active.tolist()

    if keep_iterates and (not iterates or iterates[-1][0] != i):
        iterates.append((i, x.clone()))
    return CGResult(
        x=x,
        iterations=iters.tolist(),
        stop_reasons=[STOP_REASONS[k] for k in reason.tolist()],
        phi=phi,
        matvecs=matvecs,
        block_products=block_products,
        iterates=iterates,
    )


def function_cg(matvec: MatVec, b: Tensor, layout: BlockLayout, damping, **kwargs) -> CGResult:
    """``block_cg`` on ``FunctionOperator(matvec, layout)``: the tests' matrices as functions,
    with the reference's signature."""
    return block_cg(FunctionOperator(matvec, layout), b, damping, **kwargs)


class DampingFunction:
    """A block operator from ``matvec(p, active, damping)``, a function that adds the damping
    itself (as the GGN's products do)."""

    def __init__(self, matvec: Callable[..., Tensor], layout: BlockLayout) -> None:
        self.function, self.layout = matvec, layout

    def matvec(self, v: Tensor, active: Sequence[bool], damping: Sequence[float]) -> Tensor:
        return self.function(v, active, damping)
