"""Where a run ran: library versions, device, and the bdhf-bench revision."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import torch

from .. import __version__

CODE_PATHS = ("bdhf_bench", "runners", "pyproject.toml")
"""What a run's numbers depend on in the checkout: a change elsewhere (a regenerated report,
the docs) does not make the revision that produced a result "dirty"."""


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The checkout's commit (with ``+dirty`` when its code has changes), or None outside git."""
    return revision_of(Path(__file__).resolve().parents[2])


def revision_of(root: Path) -> str | None:
    """``root``'s commit, ``+dirty`` when a tracked file under ``CODE_PATHS`` has changed."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                *CODE_PATHS,
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}+dirty" if dirty else rev


def changed_tracked_files(folder: Path) -> list[str]:
    """Files git tracks under ``folder`` that now differ from the commit (none outside git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 7B13"), from /proc/cpuinfo where there is one."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: torch.device) -> str:
    """The GPU's model ("NVIDIA H100 80GB HBM3") or, on a CPU, the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside the block (None: unchanged)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def environment(device: torch.device) -> dict[str, str | int | None]:
    """Where a run ran; ``threads`` is torch's thread count at the call (during training)."""
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        **float32_precision(),
        "bdhf_bench": __version__,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


DEVICE_VARIABLE = "BDHF_BENCH_DEVICE"
"""Environment variable that overrides the default device (the test suite sets it to "cpu", so
a GPU machine runs the tests where their expected values were made)."""


def default_device() -> torch.device:
    """``$BDHF_BENCH_DEVICE`` when set, else the GPU when there is one, else the CPU."""
    chosen = os.environ.get(DEVICE_VARIABLE)
    if chosen:
        return torch.device(chosen)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def float32_precision() -> dict[str, bool]:
    """Whether float32 matrix products and convolutions may round to TF32 on a GPU."""
    return {
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def exact_float32(device: torch.device) -> None:
    """On a GPU, float32 products and convolutions in float32, not TF32.

    cuDNN convolutions round to TF32 by default on Ampere and later GPUs (torch's default),
    which changes every CNN's curvature products and rho against the CPU's by about 1e-3; the
    runs and ``bench device`` turn it off, and each result records the setting it ran with
    (``environment.tf32_matmul`` and ``tf32_cudnn``). A no-op on other devices.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
