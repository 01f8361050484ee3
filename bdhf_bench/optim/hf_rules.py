"""The HF step's decisions, one formula per function (as ``cg_rules`` and ``damping_rules``):
the step scale, BDHF's block coefficients, the quadratic model's predicted reduction, the
reduction ratio rho, Levenberg-Marquardt's update of lambda and Armijo's test. Pure: numbers
(or, elementwise, tensors) in, numbers out, each tested alone against its closed form."""

from __future__ import annotations

import math
from typing import TypeVar

import torch
from torch import Tensor

Number = TypeVar("Number", float, Tensor)


def step_scale(gd: float, dgd: float) -> float:
    """alpha = min(1, -g.d / d'Gd): the minimiser of the undamped model along ``d``, never
    longer than the direction itself; 1 where the curvature along ``d`` is not positive."""
    return min(1.0, -gd / dgd) if dgd > 0 else 1.0


def block_coefficients(gram: Tensor, gd: Tensor, norms: Tensor, damping: float) -> Tensor:
    """The coefficients ``a`` of ``s = sum_b a_b d_b`` that minimise the damped full-GGN model
    over the span of the block directions: ``(D'GD + damping D'D) a = -D'g``, with ``gram`` =
    ``D'GD`` (B x B), ``gd`` = ``D'g`` and ``norms`` = ``diag(D'D)`` (the blocks are disjoint,
    so ``D'D`` is diagonal). Where the blocks do not couple (``gram`` diagonal) and each
    ``d_b`` solves its damped block system, every coefficient is 1: the plain block step. A
    zero direction gets coefficient 0; a singular system gives NaNs (a step never raises)."""
    empty = (norms == 0).to(gram.dtype)
    system = gram + torch.diag(damping * norms + empty)
    solution, info = torch.linalg.solve_ex(system, -gd)
    return torch.where(info == 0, solution, torch.nan)


def span_reduction(coefficients: Tensor, gd: Tensor, gram: Tensor) -> Tensor:
    """The undamped model's change for ``s = sum_b a_b d_b``: ``a'D'g + a'D'GDa / 2``."""
    return coefficients @ gd + 0.5 * coefficients @ gram @ coefficients


def predicted_reduction(alpha: float, gd: Number, dgd: Number) -> Number:
    """The model's change for the step ``alpha d``: ``alpha g.d + alpha^2 d'Gd / 2``."""
    return alpha * gd + 0.5 * alpha**2 * dgd


def reduction_ratio(actual: float, predicted: float) -> float:
    """rho = actual / predicted reduction; NaN when the model predicts no change (no
    information); -inf when the objective went up, did not come out finite, or the model
    predicted an increase (Martens' code)."""
    if predicted == 0:
        return math.nan
    if math.isfinite(actual) and actual <= 0 and predicted < 0:
        return actual / predicted
    return -math.inf


def levenberg_marquardt(lam: float, rho: float, boost: float, drop: float) -> float:
    """Martens' rule: lambda x boost when rho < 1/4, x drop when rho > 3/4, else (and for a NaN
    rho, no information) unchanged."""
    if math.isnan(rho):
        return lam
    if rho < 0.25:
        return lam * boost
    if rho > 0.75:
        return lam * drop
    return lam


def armijo_accepts(f: float, f0: float, c: float, t: float, gd: float) -> bool:
    """Armijo's sufficient decrease for the step length ``t``: ``f <= f0 + c t g.d``."""
    return math.isfinite(f) and f <= f0 + c * t * gd
