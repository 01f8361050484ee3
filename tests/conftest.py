"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# Tests run on the CPU, where their expected values were made, even on a GPU machine (the
# CLI's default device is the GPU when there is one); `bench device` is what checks a GPU.
os.environ["BDHF_BENCH_DEVICE"] = "cpu"


@pytest.fixture
def float64() -> Iterator[None]:
    """torch's default dtype float64 for the test (dense references to 1e-10), restored after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
