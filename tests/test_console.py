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


def test_a_tuned_suite_counts_every_run_from_the_start_and_prints_each_once(tmp_path):
    """The total is the suite's size from the first line (the final seeds of a tuning count
    before the search ends), every run is printed once, the final seed that is the search's own
    run reads "reused", and the lines name only hyperparameters off their defaults."""
    (tmp_path / "grid.toml").write_text('optimizer = "adam"\n[grid]\nlr = [0.01, 0.1]\n')
    (tmp_path / "s.toml").write_text(
        "[defaults]\nsteps = 4\neval_every = 2\nseeds = [1, 2]\n[[experiment]]\n"
        "problem = 'tiny_mlp'\noptimizers = ['adam', 'sgd']\ntune = { adam = 'grid.toml' }\n"
    )
    res = cli(
        "leaderboard", "--suite", str(tmp_path / "s.toml"), "--results", str(tmp_path / "r"),
        "--out", str(tmp_path / "report"), "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "suite s: 6 runs" in res.output
    tally = [line for line in res.output.splitlines() if "| runs: " in line]
    counts = [line.split("| runs: ")[1].split(" done")[0] for line in tally]
    assert counts == [f"{k}/6" for k in range(1, 7)]
    trained = [line.split(": ", 1)[1].split(":", 1)[0] for line in tally if "reused" not in line]
    assert len(trained) == len(set(trained)) == 5  # each trained run once
    (reused,) = [line for line in tally if line.startswith("reused: ")]
    assert reused.startswith("reused: tiny_mlp / adam") and "seed 1" in reused
    assert all("beta2=" not in line and " s, " in line and "grad-eq" in line for line in tally)
    again = cli(
        "leaderboard", "--suite", str(tmp_path / "s.toml"), "--results", str(tmp_path / "r"),
        "--out", str(tmp_path / "report"), "--device", "cpu", "--verbose",
    )  # fmt: skip
    reused = [line for line in again.output.splitlines() if line.startswith("reused: ")]
    assert len(reused) == 6 and all("beta2=" in line for line in reused if "adam" in line)


def test_a_run_that_will_take_minutes_says_so_after_its_first_steps(monkeypatch):
    """Three steps of 2 s each: 1,000 steps take about 33 minutes, said once, with how to
    shorten it; a run of 20 such steps (40 s) says nothing."""
    import io

    from bdhf_bench.runner import progress as progress_module

    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])

    def lines(total: int) -> list[str]:
        stream = io.StringIO()
        progress = progress_module.Progress("p/hf seed 1", total, stream=stream)
        progress._stop.set()  # no watcher thread under a fake clock
        for step in range(1, 8):
            clock[0] += 2.0
            progress.update(step, step / 10, None, 2.0 * step)
        return [line for line in stream.getvalue().splitlines() if "first steps' pace" in line]

    (line,) = lines(1000)
    assert line.startswith("p/hf seed 1: about 33m20s for 1000 steps at the first steps' pace")
    assert "--steps or --epochs shorten it" in line
    assert lines(20) == []


def test_tune_prints_each_run_once(tmp_path):
    (tmp_path / "g.toml").write_text('optimizer = "adam"\n[grid]\nlr = [0.01, 0.1]\n')
    res = cli(
        "tune", "-p", "tiny_mlp", "-o", "adam", "--grid", str(tmp_path / "g.toml"),
        "--final-seeds", "2", "--steps", "4", "--eval-every", "2", "--device", "cpu", "-q",
        "--output-dir", str(tmp_path / "r"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert sum("seed 43" in line for line in lines) == 1
    assert sum(line.startswith("reused: tiny_mlp / adam") for line in lines) == 1
    assert [line.split(": ")[0] for line in lines if line.startswith("final runs")] == [
        "final runs"
    ]
