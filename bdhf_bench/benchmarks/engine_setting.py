"""The HF methods' setting the engine benchmarks measure: a fixed curvature quarter.

The automatic curvature fraction (the default) picks a quarter or the whole mini-batch from the
data's gradient noise, which generated batches do not represent; the benchmarks time the
engine, so they fix the quarter, the setting every figure in docs/performance.md was measured
at (the default until 2026-12-07).
"""

from __future__ import annotations

from typing import Any

from ..optim import OptimizerEntry

ENGINE_SETTING: dict[str, Any] = {"curvature_fraction": 0.25}


def engine_hyperparameters(entry: OptimizerEntry) -> dict[str, Any]:
    """``entry``'s defaults with the engine setting where the entry has those keys."""
    return entry.resolve({k: v for k, v in ENGINE_SETTING.items() if k in entry.hyperparameters})
