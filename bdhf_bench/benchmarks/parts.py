"""Exclusive seconds per part of an HF step: the GGN products, CG's vector work, the
evaluations (gradient, curvature forward, rho / backtracking / line-search passes) and the rest.

The timer patches the functions that mark each part (``GGNContext.packed_block_products`` and
``packed_product``, the optimizer's ``block_cg``, ``ModelClosure``'s passes) while it is
active; time spent in a nested part counts for that part only, so CG's vector work is
``block_cg`` without the products it calls. The device is synchronised around every part.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

import bdhf_bench.optim.hf as hf_module

from ..curvature.ggn import GGNContext
from ..optim import ModelClosure
from .timing import synchronize

PARTS = ("products", "CG vectors", "evaluations", "rest")


class PartTimer:
    """Exclusive seconds per part: time in a nested part is taken out of its parent's."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._stack: list[list[Any]] = []

    def wrap(self, part: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            synchronize(self.device)
            frame = [part, time.perf_counter(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                synchronize(self.device)
                self._stack.pop()
                total = time.perf_counter() - frame[1]
                self.seconds[part] += total - frame[2]
                if self._stack:
                    self._stack[-1][2] += total

        return wrapper

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        patches = [
            (GGNContext, "packed_block_products", "products"),
            (GGNContext, "packed_product", "products"),
            (hf_module, "block_cg", "CG vectors"),
            (ModelClosure, "__call__", "evaluations"),
            (ModelClosure, "evaluate", "evaluations"),
            (ModelClosure, "curvature", "evaluations"),
        ]
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
        try:
            for (owner, name, part), (_, _, fn) in zip(patches, originals):
                setattr(owner, name, self.wrap(part, fn))
            yield
        finally:
            for owner, name, fn in originals:
                setattr(owner, name, fn)
