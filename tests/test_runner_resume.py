"""A run killed with SIGKILL and started again ends with the results of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import time

from runner_helpers import cli_subprocess, load, result_files, without_timings

ARGS = (
    "run",
    "-p",
    "tiny_mlp",
    "-o",
    "bdhf",
    "--steps",
    "200",
    "--eval-every",
    "5",
    "--device",
    "cpu",
    "-q",
)


def _finish(out) -> dict:
    proc = cli_subprocess(*ARGS, "--output-dir", str(out))
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    (path,) = result_files(out)
    return load(path)


def test_kill_minus_nine_then_resume_matches_uninterrupted(tmp_path):
    reference = _finish(tmp_path / "straight")

    out = tmp_path / "killed"
    proc = cli_subprocess(*ARGS, "--output-dir", str(out))
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

    resumed = _finish(out)
    assert without_timings(resumed) == without_timings(reference)
    assert not any(runs.glob("*.ckpt")), "the checkpoint is removed once the run is finished"
