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
