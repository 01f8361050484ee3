"""Preconditioned conjugate gradient on every block's damped system at once.

Each block b solves ``(G_bb + lambda_b I) d_b = -g_b`` with its own alpha, beta and stopping,
but all blocks advance in lock-step: one call of the block product per iteration serves every
block still running. The blocks live in one packed vector (``BlockLayout``), so each iteration
is a fixed handful of vector kernels whatever the number of blocks; per-block scalars are
segment reductions, kept in float64.

Stopping (Martens 2010 and his released code), per block:
- relative progress: with phi_i the quadratic model at iterate i and k = max(10, ceil(0.1 i)),
  stop when i > k, phi_i < 0 and (phi_i - phi_{i-k}) / phi_i < k * tol;
- ``p^T A p <= 0`` (or non-finite): stop before taking that step;
- a vanished residual (converged: ``r^T M^-1 r`` below ``residual_tol^2`` times its start value;
  an addition to Martens' rules, which would otherwise keep a tiny, solved block running until
  i > 10), or ``max_iters``.

Iterates are kept at i = ceil(5 * 1.3^j) (and at the end) for CG-backtracking.

The loop reads one small boolean vector per iteration back to the host (which blocks still run):
it decides whether to continue and which block products to compute at all. Each block's vector
work runs on views of the packed vectors with its own 0-d device scalars (no gathers, no masks
over the whole vector); inner products are BLAS reductions in the vectors' precision, and the
scalars they produce (alpha, beta, phi) are combined in float64. phi follows CG's exact
recurrence ``phi_{i+1} = phi_i - alpha_i r_i^T y_i / 2`` rather than being recomputed from
x and r, which saves two passes over the vectors per iteration.

The operator returns the damped product ``(A_bb + lambda_b I) p_b`` itself (the GGN adds
``lambda p`` as it writes its result: one pass fewer per iteration, the same bits). The
vectors live in a ``Workspace`` that a caller may keep between runs, so a run writes into
memory that is already mapped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .cg_fused import fused_iteration
from .cg_rules import (
    CONVERGED,
    MAX_ITERS,
    PROGRESS,
    RUNNING,
    STOP_REASONS,
    advance_model,
    direction_scale,
    step_length,
    too_slow,
)
from .workspace import Workspace

if TYPE_CHECKING:
    from .operator import BlockOperator


def all_finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite: one pass (``aminmax`` propagates NaN) and one host
    read, where ``isfinite(t).all()`` makes four passes and a temporary of t's size."""
    if t.numel() == 0:
        return True
    return all(math.isfinite(v) for v in torch.stack(torch.aminmax(t)).tolist())


def backtracking_schedule(max_iters: int, first: float = 5.0, ratio: float = 1.3) -> list[int]:
    """The iterations i = ceil(5 * 1.3^j) at which CG keeps an iterate (up to max_iters)."""
    out: list[int] = []
    nxt = first
    while math.ceil(nxt) <= max_iters:
        i = math.ceil(nxt)
        if not out or out[-1] != i:
            out.append(i)
        nxt *= ratio
    return out


@dataclass
class CGResult:
    """What a block CG run produced."""

    x: Tensor
    """The final iterate (packed)."""
    iterations: list[int]
    """CG iterations (updates) each block took."""
    stop_reasons: list[str]
    """Why each block stopped (one of STOP_REASONS)."""
    phi: Tensor
    """The damped quadratic model value of each block at ``x`` (float64)."""
    matvecs: int
    """Calls of the block product (each computes the products of the blocks then running)."""
    block_products: list[int]
    """Products computed per block."""
    iterates: list[tuple[int, Tensor]] = field(default_factory=list)
    """(iteration, packed iterate) at the backtracking schedule and at the end, oldest first."""


def _per_block(name: str, value: float | Sequence[float], nb: int) -> list:
    """One value per block, from a single value or a sequence of them."""
    if isinstance(value, (int, float)):
        return [value] * nb
    values = list(value)
    if len(values) != nb:
        raise ValueError(f"{name} needs one value or one per block ({nb}), got {len(values)}")
    return values


@dataclass(frozen=True)
class _StopLimits:
    """The stopping rules' numbers, one per block, and their forms in the loop: a uniform
    limit stays a Python scalar (no extra kernels), per-block ones are device vectors."""

    max_its: list[int]
    min_its: list[int]
    tols: list[float]
    residual_tol: float

    @classmethod
    def check(cls, nb: int, max_iters: Any, min_iters: Any, tol: Any, residual_tol: float):
        """The limits for ``nb`` blocks, refused with a ValueError when out of range."""
        max_its = _per_block("max_iters", max_iters, nb)
        min_its = _per_block("min_iters", min_iters, nb)
        tols = _per_block("tol", tol, nb)
        if min(max_its) < 1 or min(min_its) < 0:
            raise ValueError(
                f"max_iters must be >= 1 and min_iters >= 0 (got {max_its}, {min_its})"
            )
        if not min(tols) > 0:
            raise ValueError(f"tol must be positive, got {tols}")
        return cls(max_its, min_its, tols, residual_tol)

    @property
    def limit(self) -> int:
        """The most iterations any block may take."""
        return max(self.max_its)

    def on(self, dev: torch.device) -> tuple[Tensor | None, Tensor | None, float | Tensor]:
        """(max_iters, min_iters, tol) as the loop reads them: None or a Python float where
        every block has the same one, else a device vector (made once per run)."""
        max_t = None if len(set(self.max_its)) == 1 else torch.tensor(self.max_its, device=dev)
        min_t = None if len(set(self.min_its)) == 1 else torch.tensor(self.min_its, device=dev)
        if len(set(self.tols)) == 1:
            return max_t, min_t, self.tols[0]
        return max_t, min_t, torch.tensor(self.tols, dtype=torch.float64, device=dev)


class _BlockCG:
    """One block CG run: its vectors (views of a workspace), per-block scalars on the device,
    and counters. ``run`` is the loop; ``_eager_step`` and ``_fused_step`` are one iteration's
    vector work and bookkeeping, the same rules (``cg_rules``) in two forms."""

    def __init__(
        self,
        operator: BlockOperator,
        damping: list[float],
        b: Tensor,
        limits: _StopLimits,
        preconditioner: Tensor | None,
        workspace: Workspace,
        check_every: int,
        compiled: bool,
    ) -> None:
        layout = operator.layout
        self.operator, self.damping, self.b, self.limits = operator, damping, b, limits
        self.preconditioner, self.ws = preconditioner, workspace
        self.check_every, self.compiled = check_every, compiled
        self.nb, self.dev, self.dtype = layout.num_blocks, b.device, b.dtype
        self.sizes = layout.block_numels
        self.dots = layout.block_dot
        self.max_t, self.min_t, self.tol_t = limits.on(self.dev)
        self.tracked = check_every > 1 or compiled
        self.block_products = [0] * self.nb
        self.matvecs = 0
        self.iterates: list[tuple[int, Tensor]] = []

    def _start(self, x0: Tensor | None) -> None:
        """x, r = A x - b, y = M^-1 r, p = -y and the model value phi at x."""
        b, nb, dev, ws = self.b, self.nb, self.dev, self.ws
        everyone = [True] * nb
        x, r, p = (ws.get(name, b) for name in ("cg.x", "cg.r", "cg.p"))
        if x0 is None:
            x.zero_()
            torch.neg(b, out=r)
            phi = torch.zeros(nb, dtype=torch.float64, device=dev)
        else:
            if x0.shape != b.shape:
                raise ValueError("x0 must have the shape of b")
            x.copy_(x0)
            torch.sub(self.operator.matvec(x, everyone, self.damping), b, out=r)
            self.matvecs += 1
            self.block_products = [1] * nb
            phi = 0.5 * self.dots(torch.sub(r, b, out=p), x, everyone)  # p is free until set
        # y = M^-1 r; without a preconditioner y is r itself.
        m = self.preconditioner
        y = r if m is None else torch.div(r, m, out=ws.get("cg.y", b))
        torch.neg(y, out=p)
        self.x, self.r, self.y, self.p = x, r, y, p
        self.ry = self.dots(r, y, everyone)
        self.solved_at = self.ry * self.limits.residual_tol**2
        self.phi, self.phis = phi, [phi]
        self.iters = torch.zeros(nb, dtype=torch.long, device=dev)
        zero = torch.zeros(nb, dtype=torch.long, device=dev)
        self.reason = torch.where(self.ry <= 0, CONVERGED, zero)
        self.active = self.reason == RUNNING
        self.stopped_at = torch.zeros(nb, dtype=torch.long, device=dev) if self.tracked else None
        self.segments = [list(v.split(self.sizes)) for v in (x, r, y, p)]

    def _fused_inputs(self) -> None:
        """The fused iteration's per-block limits and per-iteration clock, on the device."""
        limits, dev = self.limits, self.dev
        self.fused_limits = (
            torch.tensor(limits.tols, dtype=torch.float64, device=dev),
            torch.tensor(limits.min_its, device=dev),
            torch.tensor(limits.max_its, device=dev),
            self.solved_at,
        )
        gaps = [max(10, math.ceil(0.1 * j)) for j in range(1, limits.limit + 1)]
        self.clock = torch.tensor(
            [(j, k, j > k) for j, k in enumerate(gaps, start=1)], dtype=torch.long, device=dev
        )
        m = self.preconditioner
        self.precond = None if m is None else (m, self.y)
        self.fused_segments = tuple(self.sizes)  # a constant of the traced graph
        # before the progress window opens the rule is off and prev is never read; a tensor of
        # its own (not phi itself) keeps the inputs unaliased, so one graph serves every i
        self.no_prev = torch.zeros(self.nb, dtype=torch.float64, device=dev)

    def _fused_step(self, i: int, ap: Tensor) -> None:
        k_gap = max(10, math.ceil(0.1 * i))
        prev = self.phis[i - k_gap] if i > k_gap else self.no_prev
        state = (self.ry, self.phi, self.reason, self.iters, self.stopped_at)
        state, self.active = fused_iteration(
            self.x, self.r, self.p, ap, self.precond, state, prev, self.clock[i - 1],
            self.fused_limits, self.fused_segments,
        )  # fmt: skip
        self.ry, self.phi, self.reason, self.iters, self.stopped_at = state
        self.phis.append(self.phi)

    def _eager_step(self, i: int, ap: Tensor, host_active: list[bool]) -> None:
        reason, step, alpha = step_length(
            self.dots(self.p, ap, host_active), self.ry, self.active, self.reason
        )
        xs, rs, ys, ps = self.segments
        # The running blocks' vector updates, each a C++ loop over their segments (views);
        # per element the same kernels as one addcmul_ per block, so the same bits.
        # x += alpha p and r += alpha A p in one call.
        on = [k for k, a in enumerate(host_active) if a]
        alpha_v = alpha.to(self.dtype).unbind()
        alpha_on = [alpha_v[k] for k in on]
        ap_views = ap.split(self.sizes)
        torch._foreach_addcmul_(
            [xs[k] for k in on] + [rs[k] for k in on],
            [ps[k] for k in on] + [ap_views[k] for k in on],
            alpha_on + alpha_on,
        )
        m = self.preconditioner
        if m is not None:
            if len(on) == self.nb:
                torch.div(self.r, m, out=self.y)
            else:
                m_views = m.split(self.sizes)
                for k in on:
                    torch.div(rs[k], m_views[k], out=ys[k])
        ry_new = self.dots(self.r, self.y, host_active)
        beta_v = direction_scale(step, self.ry, ry_new).to(self.dtype).unbind()
        # p = beta p - y as two passes: a fused one (addcmul, add with alpha) rounds once, not
        # twice, and would change CG's bits
        p_on = [ps[k] for k in on]
        torch._foreach_mul_(p_on, [beta_v[k] for k in on])
        torch._foreach_sub_(p_on, [ys[k] for k in on])
        self.phi, self.ry = advance_model(step, alpha, self.ry, ry_new, self.phi)
        self.iters = self.iters + step.long()
        self.phis.append(self.phi)
        self.reason = self._stop(i, step, ry_new, reason)
        if self.tracked:
            self.stopped_at = torch.where(
                self.active & (self.reason != RUNNING), i, self.stopped_at
            )
        self.active = self.reason == RUNNING

    def _stop(self, i: int, step: Tensor, ry_new: Tensor, reason: Tensor) -> Tensor:
        """The stop reasons after iteration ``i``: too slow progress, a solved residual, the
        iteration limit (see the module docstring)."""
        limits, min_t, max_t = self.limits, self.min_t, self.max_t
        k_gap = max(10, math.ceil(0.1 * i))
        if i > k_gap and (min_t is not None or i >= limits.min_its[0]):
            slow = too_slow(self.phi, self.phis[i - k_gap], k_gap * self.tol_t)
            if min_t is not None:
                slow = slow & (min_t <= i)
            reason = torch.where(step & slow, PROGRESS, reason)
        solved = ry_new <= self.solved_at
        reason = torch.where(step & solved & (reason == RUNNING), CONVERGED, reason)
        if max_t is not None:
            return torch.where((reason == RUNNING) & (max_t <= i), MAX_ITERS, reason)
        if i >= limits.limit:
            return torch.where(reason == RUNNING, MAX_ITERS, reason)
        return reason

    def _keep(self, j: int) -> None:
        kept = self.ws.get(f"cg.iterate{len(self.iterates)}", self.x).copy_(self.x)
        self.iterates.append((j, kept))

    def run(self, x0: Tensor | None, keep_iterates: bool) -> CGResult:
        """Iterate until every block has stopped; the result (x and iterates in the workspace)."""
        self._start(x0)
        if self.compiled:
            self._fused_inputs()
        limit = self.limits.limit
        schedule = set(backtracking_schedule(limit)) if keep_iterates else set()
        host_active = self.active.tolist()
        i = 0
        while any(host_active):
            i += 1
            ap = self.operator.matvec(self.p, host_active, self.damping)
            self.matvecs += 1
            for k, a in enumerate(host_active):
                self.block_products[k] += int(a)
            if self.compiled:
                self._fused_step(i, ap)
            else:
                self._eager_step(i, ap, host_active)
            if i in schedule:
                self._keep(i)
            if not self.tracked or i % self.check_every == 0 or i >= limit:
                host_active = self.active.tolist()
        if self.tracked and i > 0:
            # the iteration at which the last block stopped: where check_every=1 would have ended
            i = int(self.stopped_at.max())
            self.iterates = [(j, v) for j, v in self.iterates if j <= i]
        if keep_iterates and (not self.iterates or self.iterates[-1][0] != i):
            self._keep(i)
        return CGResult(
            x=self.x,
            iterations=self.iters.tolist(),
            stop_reasons=[STOP_REASONS[k] for k in self.reason.tolist()],
            phi=self.phi,
            matvecs=self.matvecs,
            block_products=self.block_products,
            iterates=self.iterates,
        )


def block_cg(
    operator: BlockOperator,
    b: Tensor,
    damping: Tensor | float,
    *,
    x0: Tensor | None = None,
    max_iters: int | Sequence[int] = 250,
    min_iters: int | Sequence[int] = 1,
    tol: float | Sequence[float] = 5e-4,
    preconditioner: Tensor | None = None,
    keep_iterates: bool = False,
    residual_tol: float = 1e-10,
    check_every: int = 1,
    workspace: Workspace | None = None,
    compiled: bool = False,
) -> CGResult:
    """Solve ``(A_bb + damping_b I) x_b = b_b`` for every block b.

    Args:
        operator: A, block-diagonal on ``operator.layout`` (``GGNOperator(...).block_diagonal()``,
            or ``FunctionOperator`` around a function); its ``matvec(p, active, damping)``
            returns the damped products of the running blocks and may return the same buffer
            at every call (CG reads it only until the next call).
        b: the right-hand side (packed), e.g. minus the gradient.
        damping: lambda, one value or one per block.
        x0: the starting point (warm start); zero when None.
        max_iters, min_iters, tol: the stopping rules (see the module docstring), one value for
            every block or one per block.
        preconditioner: a positive diagonal M (packed); CG then runs on M^-1 A.
        keep_iterates: keep iterates for CG-backtracking.
        residual_tol: the relative (preconditioned) residual at which a block counts as solved.
        check_every: read which blocks still run back to the host every this many iterations
            (1: every iteration). Between reads a block that stopped on the device still gets
            its product computed (counted in ``matvecs`` and ``block_products``) but takes no
            step, so x, phi, the iterations, the stop reasons and the kept iterates are those
            of ``check_every=1``; only a block stopped by a non-finite product may then end
            with non-finite entries in its segment of x (such a result is rejected anyway).
        workspace: where x, r, the direction and the kept iterates live; one kept by the caller
            between runs saves allocating (and faulting in) them each time. The result's ``x``
            and iterates are then workspace tensors, valid until the workspace's next use.
            None: a fresh one (new tensors).
        compiled: run each iteration's vector work and bookkeeping as one compiled function
            (``cg_fused``): a few fused kernels where the eager loop launches some forty, for
            GPUs. The same decisions by the same rules (``cg_rules``), but its reductions
            round in their own order, so x and phi match the eager loop to rounding, not
            bitwise; the first call per layout compiles (seconds to tens of seconds). Under
            a Python dispatch mode (FLOP counting, debug modes), which torch.compile does not
            trace, the iteration runs eager.
    """
    if compiled and _get_current_dispatch_mode() is not None:
        compiled = False
    layout = operator.layout
    if b.shape != (layout.numel,):
        raise ValueError(f"right-hand side of shape {tuple(b.shape)}, expected ({layout.numel},)")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    limits = _StopLimits.check(layout.num_blocks, max_iters, min_iters, tol, residual_tol)
    if preconditioner is not None and preconditioner.shape != b.shape:
        raise ValueError("the preconditioner must have the shape of b")
    lam = torch.as_tensor(damping, dtype=torch.float64).expand(layout.num_blocks).tolist()
    ws = workspace if workspace is not None else Workspace()
    cg = _BlockCG(operator, lam, b, limits, preconditioner, ws, check_every, compiled)
    return cg.run(x0, keep_iterates)
