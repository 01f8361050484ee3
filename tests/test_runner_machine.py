"""Threads are set and recorded; progress and time-based checkpoints never wait for the loss
read-back; a slow step reports itself; the suite ETA comes from measured per-run times."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
import torch
from runner_helpers import cli, load, result_files

from bdhf_bench.optim import get_optimizer
from bdhf_bench.runner import (
    Budget,
    Execution,
    ResultStore,
    RunOutcome,
    RunSpec,
    Trainer,
    executors,
)
from bdhf_bench.runner import progress as progress_module
from bdhf_bench.runner.executors import LocalExecutor


def _cpu_model_from_proc() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    pytest.skip("no model name in /proc/cpuinfo")


def _spec(lr: float = 1e-3, steps: int = 2, optimizer: str = "adam") -> RunSpec:
    hps = get_optimizer(optimizer).resolve({"lr": lr} if optimizer == "adam" else {})
    return RunSpec("tiny_mlp", optimizer, hps, 42, 50, Budget(steps=steps))


def test_run_sets_and_records_threads_and_the_cpu(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what torch would use on its own; --threads 1 must win
    try:
        res = cli("run", "-p", "tiny_mlp", "-o", "adam", "--steps", "2", "--threads", "1",
                  "--output-dir", str(tmp_path), "-q")  # fmt: skip
        assert torch.get_num_threads() == 2  # restored after the run
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    env = load(result_files(tmp_path)[0])["environment"]
    assert env["threads"] == 1
    assert env["cpu"] == _cpu_model_from_proc() == env["device_name"]


def test_local_workers_default_to_one_thread_each(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)  # a big machine: 4 threads per worker before
    lines: list[str] = []
    executor = LocalExecutor(2, Execution(torch.device("cpu"), progress=False), echo=lines.append)
    outcomes = executor.run([_spec(1e-3), _spec(1e-2), _spec(1e-1)], ResultStore(tmp_path))
    assert [o.status for o in outcomes] == ["finished"] * 3
    assert [load(o.path)["environment"]["threads"] for o in outcomes] == [1, 1, 1]
    assert [load(o.path)["environment"]["runs_at_once"] for o in outcomes] == [2, 2, 2]
    # the pool starts the third run when one finishes: 2 running, then 1, then none
    running = [int(re.search(r"(\d+) running", line).group(1)) for line in lines]
    assert running == [2, 1, 0]


def test_progress_and_checkpoints_do_not_wait_for_the_loss_read_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    store = ResultStore(tmp_path)
    saved: list[int] = []
    real_save = store.save_checkpoint

    def save(spec, state):
        saved.append(state["state"]["step"])
        real_save(spec, state)

    monkeypatch.setattr(store, "save_checkpoint", save)
    # 10 steps, the loss read back every 25: before, a line and a checkpoint came only at the
    # read-back at step 10.
    execution = Execution(torch.device("cpu"), progress=True, checkpoint_every=0.0)
    Trainer(_spec(steps=10), store, execution).run()
    lines = capsys.readouterr().err.splitlines()
    steps = [int(m.group(1)) for line in lines if (m := re.search(r": step (\d+)/10 ", line))]
    assert steps[:9] == list(range(1, 10))
    assert saved[:9] == list(range(1, 10))


def test_a_slow_step_reports_itself_while_it_runs():
    stream = io.StringIO()  # a log, not a terminal
    progress = progress_module.Progress("p/o seed 1", 4, stream=stream, interval=0.1,
                                        slow_after=0.2)  # fmt: skip
    progress.begin_step(3)
    time.sleep(0.7)
    progress.end()
    time.sleep(0.2)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and all(
        line.startswith("p/o seed 1: step 3/4 running for 0m0") for line in lines
    )
    # A fast step says nothing.
    quiet = io.StringIO()
    fast = progress_module.Progress("q", 4, stream=quiet, interval=0.1, slow_after=0.5)
    fast.begin_step(1)
    time.sleep(0.3)
    fast.end()
    fast.close()
    assert quiet.getvalue() == ""


def test_the_eta_uses_measured_per_run_times(tmp_path, monkeypatch):
    # A skipped Adam run, a trained one of 10 s, then three HF runs of 100 s each. After the
    # first HF run two are left: 200 s (from the elapsed time over every finished run it was
    # 110/3*2 = 73 s; from the mean over all trained runs, 2 * 55 = 110 s).
    cost = {1e-3: 0.0, 2e-3: 10.0}
    clock = [0.0]

    def fake_run(spec, store, execution):
        skipped = spec.hyperparameters.get("lr") == 1e-3 and spec.optimizer == "adam"
        clock[0] += cost[spec.hyperparameters["lr"]] if spec.optimizer == "adam" else 100.0
        return RunOutcome(spec, "skipped" if skipped else "finished")

    monkeypatch.setattr(executors, "run_one", fake_run)
    lines: list[str] = []
    executor = LocalExecutor(1, echo=lines.append)
    executor.clock = lambda: clock[0]
    specs = [_spec(1e-3, optimizer="adam"), _spec(2e-3, optimizer="adam")]
    specs += [_spec(optimizer="hf") for _ in range(3)]
    executor.run(specs, ResultStore(tmp_path))
    etas = [re.search(r"ETA (\d+)m(\d+)s", line) for line in lines]
    assert etas[0] is None  # nothing measured yet (a skipped run took no time)
    # Before any HF run is measured, the mean of the trained runs stands in for it.
    assert [int(m.group(1)) * 60 + int(m.group(2)) for m in etas[1:]] == [30, 200, 100, 0]


def _claimed(_: int) -> tuple[int, int | None]:
    """In a pool worker: its pid and the GPU it claimed (a short pause keeps both busy)."""
    import os

    time.sleep(0.05)
    return os.getpid(), executors._WORKER_GPU


def test_each_pool_worker_holds_one_gpu_for_its_life():
    """Two workers, two GPU slots: every run a worker takes goes to that worker's GPU, and the
    two workers never share one (GPUs are per process, not per submission)."""
    import concurrent.futures as cf
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    slots = ctx.Queue()
    for gpu in (0, 1):
        slots.put(gpu)
    with cf.ProcessPoolExecutor(
        2, mp_context=ctx, initializer=executors._claim_gpu, initargs=(slots,)
    ) as pool:
        seen = list(pool.map(_claimed, range(12)))
    by_pid: dict[int, set] = {}
    for pid, gpu in seen:
        by_pid.setdefault(pid, set()).add(gpu)
    assert all(len(gpus) == 1 for gpus in by_pid.values())
    held = [next(iter(g)) for g in by_pid.values()]
    assert sorted(held) == [0, 1]


def test_a_worker_runs_on_its_own_gpu_only_for_cuda_runs(monkeypatch):
    monkeypatch.setattr(executors, "_WORKER_GPU", 1)
    cuda = executors._worker_execution(Execution(torch.device("cuda")))
    assert cuda.device == torch.device("cuda", 1)
    assert executors._worker_execution(Execution(torch.device("cpu"))).device.type == "cpu"
    monkeypatch.setattr(executors, "_WORKER_GPU", None)
    assert executors._worker_execution(Execution(torch.device("cuda"))).device == torch.device(
        "cuda"
    )


def test_cg_check_every_changes_the_products_counted_not_the_run(tmp_path):
    """``--cg-check-every 3``: the same losses at every evaluation as reading CG's mask every
    iteration, more curvature products counted, and the setting recorded with the run."""
    runs = {}
    for k in (1, 3):
        out = tmp_path / str(k)
        res = cli("run", "-p", "tiny_mlp", "-o", "bdhf", "--steps", "6", "--eval-every", "3",
                  "--cg-check-every", str(k), "--output-dir", str(out), "-q")  # fmt: skip
        assert res.exit_code == 0, res.output
        runs[k] = load(result_files(out)[0])
    every, third = runs[1], runs[3]
    assert third["environment"]["cg_check_every"] == 3
    assert every["environment"]["cg_check_every"] == 1
    assert third["train_losses"] == every["train_losses"]
    assert third["minibatch_train_losses"] == every["minibatch_train_losses"]
    last = [r["evaluations"][-1]["curvature_products"] for r in (every, third)]
    assert last[1] > last[0]
    bad = cli("run", "-p", "tiny_mlp", "-o", "bdhf", "--cg-check-every", "0", "-q")
    assert bad.exit_code == 2 and "--cg-check-every" in bad.output


def test_cg_compile_trains_the_same_run_to_rounding(tmp_path):
    """``--cg-compile``: CG's compiled iteration gives the eager run's losses to rounding (its
    reductions sum in another order), and the setting is recorded with the run."""
    runs = {}
    for flag in ([], ["--cg-compile"]):
        out = tmp_path / str(len(flag))
        res = cli("run", "-p", "tiny_mlp", "-o", "bdhf", "--steps", "6", "--eval-every", "3",
                  *flag, "--output-dir", str(out), "-q")  # fmt: skip
        assert res.exit_code == 0, res.output
        runs[bool(flag)] = load(result_files(out)[0])
    eager, compiled = runs[False], runs[True]
    assert compiled["environment"]["cg_compiled"] and not eager["environment"]["cg_compiled"]
    for key in ("train_losses", "minibatch_train_losses", "test_accuracies"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-3)
    assert compiled["minibatch_train_losses"] != eager["minibatch_train_losses"]  # not bitwise
    for key in ("curvature_products", "forward_passes", "backward_passes"):
        assert compiled["evaluations"][-1][key] == eager["evaluations"][-1][key]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_tune_passes_cg_check_every_to_every_run(tmp_path, workers):
    grid = tmp_path / "grid.toml"
    grid.write_text("[grid]\ndamping = [0.1, 1.0]\n")
    res = cli("tune", "-p", "tiny_mlp", "-o", "bdhf", "--grid", str(grid), "--steps", "2",
              "--final-seeds", "2", "--workers", workers, "--cg-check-every", "4",
              "--cg-compile", "--output-dir", str(tmp_path / "out"), "-q")  # fmt: skip
    assert res.exit_code == 0, res.output
    envs = [load(p)["environment"] for p in result_files(tmp_path / "out")]
    assert len(envs) == 3 and {e["cg_check_every"] for e in envs} == {4}
    assert {e["cg_compiled"] for e in envs} == {True}


def test_a_regenerated_report_does_not_make_the_code_revision_dirty(tmp_path):
    """The main job rewrites reports/ (tracked); the results it and later runs record keep a
    clean revision, while a change to the code marks it dirty."""
    import subprocess

    from bdhf_bench.runner.environment import changed_tracked_files, revision_of

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for path in ("bdhf_bench/x.py", "reports/leaderboard.md", "docs/a.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("one\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = revision_of(tmp_path)
    assert head is not None and len(head) == 40
    (tmp_path / "reports/leaderboard.md").write_text("two\n")
    (tmp_path / "docs/a.md").write_text("two\n")
    assert revision_of(tmp_path) == head
    assert changed_tracked_files(tmp_path / "reports") == ["reports/leaderboard.md"]
    assert changed_tracked_files(tmp_path / "bdhf_bench") == []
    (tmp_path / "bdhf_bench/x.py").write_text("two\n")
    assert revision_of(tmp_path) == f"{head}+dirty"
