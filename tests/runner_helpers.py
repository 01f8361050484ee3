"""Shared helpers for the runner tests: run the CLI in-process or as a subprocess, read results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from bdhf_bench.cli import main

TIMINGS = ("train_seconds",)


def cli(*args: str):
    """Run bdhf-bench in-process; returns Click's result."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def cli_subprocess(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bdhf_bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def result_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("random_seed__*.json") if "_runs" not in p.parts)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def without_timings(result: dict) -> dict:
    """A result without what legitimately differs between two runs of the same spec."""
    out = {k: v for k, v in result.items() if k not in (*TIMINGS, "environment")}
    out["evaluations"] = [
        {k: v for k, v in e.items() if k not in TIMINGS} for e in result["evaluations"]
    ]
    if out.get("target") and out["target"].get("reached"):
        out["target"] = {
            **out["target"],
            "reached": {k: v for k, v in out["target"]["reached"].items() if k not in TIMINGS},
        }
    return out


class Interrupted(Exception):
    """Raised inside a run to stop it as a kill would, after its last checkpoint."""


def run_spec(spec, root: Path, **execution) -> dict:
    """Train ``spec`` into the results folder ``root`` on the CPU; its result dict."""
    import torch

    from bdhf_bench.runner import Execution, ResultStore, run_one

    ex = Execution(device=torch.device("cpu"), progress=False, **execution)
    outcome = run_one(spec, ResultStore(root), ex)
    assert outcome.status in ("finished", "diverged"), outcome.error
    return outcome.load()


def interrupt_then_resume(monkeypatch, spec, root: Path, after: int, **execution) -> dict:
    """Run ``spec``, stop it after ``after`` steps (an exception where a kill would land), run
    it again from its checkpoint; the resumed run's result."""
    import pytest

    from bdhf_bench.runner import loop

    real_count = loop.Trainer._count
    calls = {"n": 0}

    def count_then_stop(self, closure):
        real_count(self, closure)
        calls["n"] += 1
        if calls["n"] == after:
            raise Interrupted

    monkeypatch.setattr(loop.Trainer, "_count", count_then_stop)
    with pytest.raises(Interrupted):
        run_spec(spec, root, **execution)
    monkeypatch.setattr(loop.Trainer, "_count", real_count)
    assert list(root.rglob("*.ckpt")), "no checkpoint to resume from"
    return run_spec(spec, root, **execution)
