"""A run killed with SIGKILL and started again ends with the results of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import time

import pytest
from runner_helpers import cli_subprocess, load, result_files, without_timings

# Enough steps that a run is still going a moment after its first checkpoint; the curvature
# peers refresh every 3 steps, so a kill lands between refreshes as often as not.
# Every registered optimizer (a test below checks the list is whole).
STEPS = {
    "bdhf": 200,
    "hf": 200,
    "kfac": 400,
    "soap": 400,
    "shampoo": 400,
    "adahessian": 800,
    "sophia": 800,
    "lbfgs": 800,
    "sfadamw": 1500,
    "adam": 1500,
    "sgd": 1500,
    "momentum": 1500,
}
PERIODIC = ("kfac", "soap", "shampoo", "adahessian", "sophia")
HPS = {name: ["--hp", "update_period=3"] for name in PERIODIC}


def test_every_optimizer_has_a_kill_and_resume_case():
    from bdhf_bench.optim import optimizer_names

    assert set(STEPS) == set(optimizer_names())


def _args(optimizer: str) -> tuple[str, ...]:
    return (
        "run",
        "-p",
        "tiny_mlp",
        "-o",
        optimizer,
        *HPS.get(optimizer, []),
        "--steps",
        str(STEPS[optimizer]),
        "--eval-every",
        "5",
        "--device",
        "cpu",
        "-q",
    )


def _finish(out, optimizer) -> dict:
    proc = cli_subprocess(*_args(optimizer), "--output-dir", str(out))
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    (path,) = result_files(out)
    return load(path)


@pytest.mark.parametrize("optimizer", list(STEPS))
def test_kill_minus_nine_then_resume_matches_uninterrupted(tmp_path, optimizer):
    """SIGKILL somewhere after the first checkpoint (mid-step or mid-write), then the same
    command again: the uninterrupted run's result, for every optimizer entry; among them
    peers whose state is not torch's own: K-FAC (Kronecker factors and an inner SGD), SOAP
    and Shampoo (eigenbases, roots), schedule-free AdamW (checkpoints at its averaged point
    after an evaluation, at y between two)."""
    reference = _finish(tmp_path / "straight", optimizer)

    out = tmp_path / "killed"
    proc = cli_subprocess(*_args(optimizer), "--output-dir", str(out))
    runs = out / "_runs"
    deadline = time.monotonic() + 300
    while not any(runs.glob("*.ckpt")) if runs.exists() else True:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.1)  # somewhere after the first checkpoint, mid-step or mid-write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not result_files(out), "the run finished before it was killed; make it longer"
    assert any(runs.glob("*.ckpt"))

    resumed = _finish(out, optimizer)
    assert without_timings(resumed) == without_timings(reference)
    assert not any(runs.glob("*.ckpt")), "the checkpoint is removed once the run is finished"
