"""HF and BDHF with the fixed start, for the tests that pin a step's arithmetic.

Those tests compute their references with lambda itself (from 0.1 unless they give one), as
the optimizers did before the curvature start became the default; the curvature start has its
own tests (test_damping_start.py)."""

from __future__ import annotations

from typing import Any

from bdhf_bench.optim import BlockDiagonalHF as _BlockDiagonalHF
from bdhf_bench.optim import HessianFree as _HessianFree

FIXED_START = {"damping_start": "fixed", "damping": 0.1}


def BlockDiagonalHF(params: Any, **settings: Any) -> _BlockDiagonalHF:
    return _BlockDiagonalHF(params, **{**FIXED_START, **settings})


def HessianFree(params: Any, **settings: Any) -> _HessianFree:
    return _HessianFree(params, **{**FIXED_START, **settings})
