"""What a run's numbers depend on besides its spec: the data it reads (a fingerprint of the
arrays), the device kind and the dtype. A finished run counts as this run only when its
recorded context is this one; the spec alone would take a result on an 8,004-digit MNIST for
one on 4,000 digits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data import DEFAULT_SYNTHETIC_SIZES, data_identity
from ..problems import get_problem
from .environment import device_name
from .spec import RunSpec

DEFAULT_DATA_DIR = Path("data_deepobs")
"""DeepOBS's data folder name, relative to the working directory."""


def synthetic_sizes(batch_size: int) -> tuple[int, int]:
    """(training file, test) examples of generated data: at least four training batches and
    one test batch, whatever the batch size."""
    return (
        max(DEFAULT_SYNTHETIC_SIZES[0], 5 * batch_size),
        max(DEFAULT_SYNTHETIC_SIZES[1], batch_size),
    )


def dtype_name() -> str:
    """The floating-point type models are built in ("float32")."""
    return str(torch.get_default_dtype()).removeprefix("torch.")


def run_context(spec: RunSpec, device: torch.device, data_dir: Path | None) -> dict[str, Any]:
    """``{"data": {...fingerprint}, "device": "cpu" | "cuda (GPU model)", "dtype": ...}``.

    A GPU run's device names the GPU's model: runs on an H100 and an A100 are not the same run
    (their seconds differ, and so can their rounding).
    """
    problem = get_problem(spec.problem)
    data = data_identity(
        problem.dataset,
        source=spec.data,
        data_dir=data_dir if data_dir is not None else DEFAULT_DATA_DIR,
        seed=spec.seed,
        synthetic_sizes=synthetic_sizes(spec.batch_size),
    )
    kind = f"cuda ({device_name(device)})" if device.type == "cuda" else device.type
    return {"data": data, "device": kind, "dtype": dtype_name()}


def describe(context: dict[str, Any] | None) -> str:
    """A context in a few words, for the message that refuses a mismatch."""
    if not context:
        return "unrecorded data (an older bdhf-bench)"
    data = context.get("data", {})
    sizes = "/".join(str(n) for n in data.get("examples", {}).values())
    return (
        f"{data.get('source')} {data.get('dataset')} ({sizes} examples, "
        f"sha256 {data.get('sha256')}) on {context.get('device')} in {context.get('dtype')}"
    )
