"""Fixtures shared by the test modules."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Tests run on the CPU, where their expected values were made, even on a GPU machine (the
# CLI's default device is the GPU when there is one); `bench device` is what checks a GPU.
os.environ["BDHF_BENCH_DEVICE"] = "cpu"

# Under pytest-xdist (`-n 2`) each worker is one of the machine's cores: one torch thread, and
# the same for the processes it starts (two workers on two threads each would thrash).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def float64() -> Iterator[None]:
    """torch's default dtype float64 for the test (dense references to 1e-10), restored after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# -- the suite writes only to temporary folders ----------------------------------------------------

_REPO = Path(__file__).resolve().parents[1]
_NOT_OURS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "mutants"}


def _repo_files() -> dict[str, int]:
    """Every file in the checkout (what git ignores too) with its modification time."""
    found = {}
    for folder, dirs, files in os.walk(_REPO):
        dirs[:] = [d for d in dirs if d not in _NOT_OURS and not d.endswith(".egg-info")]
        for name in files:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                found[os.path.relpath(path, _REPO)] = os.stat(path).st_mtime_ns
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = _repo_files()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None or getattr(session.config, "workerinput", None) is not None:
        return
    after = _repo_files()
    changed = sorted(p for p, t in after.items() if before.get(p) != t)
    if changed:
        shown = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        session.config.get_terminal_writer().line(
            f"the tests wrote into the checkout (tests must write only to temporary folders): "
            f"{shown}",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_BEFORE = pytest.StashKey[dict]()
