"""Levenberg-Marquardt's starting lambda, one formula per function (as ``cg_rules``).

Scaling the objective by ``c`` scales the GGN and the gradient by ``c``; a fixed lambda does not
scale, so the same method on the same net takes other steps when a loss is summed instead of
averaged. A lambda taken from the curvature itself does scale: with ``lambda_0 = k * r`` for
the GGN's Rayleigh quotient along the gradient, ``r = g'Gg / g'g`` (Martens 2010 suggests
matching lambda to the curvature's scale; the quotient is the curvature the first CG iteration
sees), every later decision (CG's relative stopping rule, rho, Levenberg-Marquardt's factors,
Armijo's test) is invariant to ``c``, and so are the steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def rayleigh_quotients(
    curvature: Sequence[float], norms: Sequence[float], pooled: bool
) -> list[float]:
    """``g_b'G_bb g_b / g_b'g_b`` per block, or the pooled ``sum g'Gg / sum g'g`` for every
    block (one global lambda); NaN where the gradient is zero."""
    if pooled:
        den = sum(norms)
        value = sum(curvature) / den if den > 0 else math.nan
        return [value] * len(norms)
    return [c / n if n > 0 else math.nan for c, n in zip(curvature, norms)]


def curvature_damping(
    factors: Sequence[float], quotients: Sequence[float], low: float, high: float
) -> list[float]:
    """``k_b * r_b`` clamped to ``[low, high]``; a block whose quotient says nothing (zero,
    negative or not finite) keeps its factor as a fixed lambda."""
    return [
        min(max(k * r, low), high) if math.isfinite(r) and r > 0 else k
        for k, r in zip(factors, quotients)
    ]
