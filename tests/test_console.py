"""What the console says: Ctrl-C keeps a checkpoint and says so, the rerun says it resumes."""

from __future__ import annotations

import os
import signal

from runner_helpers import cli, load, result_files, without_timings

from bdhf_bench.runner import loop

RUN = ("run", "-p", "tiny_mlp", "-o", "bdhf", "--steps", "12", "--eval-every", "4")
RUN += ("--device", "cpu", "--seed", "1", "--hp", "cg_max_iters=5")


def test_ctrl_c_keeps_the_finished_step_and_the_rerun_resumes_bitwise(tmp_path, monkeypatch):
    whole = cli(*RUN, "-q", "--output-dir", str(tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output
    real_count = loop.Trainer._count
    calls = {"n": 0}

    def ctrl_c_in_step_five(self, closure):
        real_count(self, closure)
        calls["n"] += 1
        if calls["n"] == 5:  # the step is done; the signal lands before its bookkeeping ends
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop.Trainer, "_count", ctrl_c_in_step_five)
    out = tmp_path / "cut"
    cut = cli(*RUN, "--output-dir", str(out))
    assert cut.exit_code == 130
    lines = [line for line in cut.output.splitlines() if line.startswith("interrupted")]
    assert lines == [
        "interrupted at step 5 of tiny_mlp / bdhf "
        f"({lines[0].split('(', 1)[1].split(')', 1)[0]}) seed 1, checkpoint kept; "
        "rerun the same command to resume"
    ]
    assert not result_files(out) and list(out.rglob("*.ckpt"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    monkeypatch.setattr(loop.Trainer, "_count", real_count)
    again = cli(*RUN, "--output-dir", str(out))
    assert again.exit_code == 0, again.output
    assert "resuming from step 5 (checkpoint)" in again.output
    (resumed,) = result_files(out)
    (reference,) = result_files(tmp_path / "whole")
    assert without_timings(load(resumed)) == without_timings(load(reference))
