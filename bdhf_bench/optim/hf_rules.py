"""The HF step's decisions, one formula per function (as ``cg_rules`` and ``damping_rules``):
the step scale, the quadratic model's predicted reduction, the reduction ratio rho,
Levenberg-Marquardt's update of lambda and Armijo's test. Pure: numbers (or, elementwise,
tensors) in, numbers out, each tested alone against its closed form."""

from __future__ import annotations

import math
from typing import TypeVar

from torch import Tensor

Number = TypeVar("Number", float, Tensor)


def step_scale(gd: float, dgd: float) -> float:
    """alpha = min(1, -g.d / d'Gd): the minimiser of the undamped model along ``d``, never
    longer than the direction itself; 1 where the curvature along ``d`` is not positive."""
    return min(1.0, -gd / dgd) if dgd > 0 else 1.0


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
