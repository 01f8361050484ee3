"""CG's per-block scalar arithmetic: step lengths, directions, the quadratic model and the
stopping rules, on the blocks' (num_blocks,) float64 scalars.

Shared by the eager loop (``cg.block_cg``) and its compiled iteration (``cg_fused``), so the two
take the same decisions by the same formulas. Every function is elementwise over blocks and
reads nothing back to the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

STOP_REASONS = (
    "running",
    "max_iters",
    "progress",
    "nonpositive_curvature",
    "converged",
    "nonfinite",
)
RUNNING, MAX_ITERS, PROGRESS, CURVATURE, CONVERGED, NONFINITE = range(6)


def step_length(pap: Tensor, ry: Tensor, active: Tensor, reason: Tensor):
    """``alpha = r.y / p.Ap`` for the running blocks with positive finite curvature, and the
    stop reasons of those without: returns ``(reason, step, alpha)``, where ``step`` marks
    the blocks that take this iteration's step (alpha 0 elsewhere)."""
    finite = torch.isfinite(pap)
    curved = finite & (pap > 0)
    reason = torch.where(active & ~finite, NONFINITE, reason)
    reason = torch.where(active & finite & ~curved, CURVATURE, reason)
    step = active & curved
    alpha = torch.where(step, ry / torch.where(curved, pap, 1.0), 0.0)
    return reason, step, alpha


def direction_scale(step: Tensor, ry: Tensor, ry_new: Tensor) -> Tensor:
    """``beta = r_new.y_new / r.y`` for the blocks that stepped (0 elsewhere)."""
    return torch.where(step & (ry > 0), ry_new / torch.where(ry > 0, ry, 1.0), 0.0)


def advance_model(step: Tensor, alpha: Tensor, ry: Tensor, ry_new: Tensor, phi: Tensor):
    """CG's exact recurrence for the quadratic model, ``phi_{i+1} = phi_i - alpha_i r_i.y_i / 2``,
    and the new ``r.y``, for the blocks that stepped: returns ``(phi, ry)``."""
    return torch.where(step, phi - 0.5 * alpha * ry, phi), torch.where(step, ry_new, ry)


def too_slow(phi: Tensor, prev: Tensor, gap_tol: Tensor | float) -> Tensor:
    """Martens' relative-progress rule: ``phi < 0`` and ``(phi - prev) / phi < k * tol`` (with
    ``prev`` the model k iterations back and ``gap_tol`` = k * tol)."""
    return (phi < 0) & ((phi - prev) / torch.where(phi < 0, phi, -1.0) < gap_tol)
