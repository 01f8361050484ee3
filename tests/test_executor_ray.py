"""`--executor ray` on a real local Ray cluster (2 CPUs, shared by the tests of this module):
the same result files as the local executor, a killed worker's run resumed and finished once,
failed and busy runs, and the one-line message when Ray is missing."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from runner_helpers import cli, load, result_files, without_timings

from bdhf_bench.cli import main
from bdhf_bench.optim import get_optimizer
from bdhf_bench.runner import Budget, Execution, ResultStore, RunSpec
from bdhf_bench.runner.executors import LocalExecutor
from bdhf_bench.runner.ray_executor import RayClusterError, RayExecutor, _probe

ray = pytest.importorskip("ray", reason="Ray is a dev dependency; pip install -e '.[dev]'")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local cluster for the module (Ray takes seconds to start); executors join it."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    yield
    ray.shutdown()


def _by_run(root: Path) -> dict[tuple[str, int], dict]:
    """Result files keyed by (setting folder, seed), timings and environment left out."""
    out = {}
    for path in result_files(root):
        result = load(path)
        key = (str(path.parent.relative_to(root)), result["random_seed"])
        assert key not in out, f"two result files for {key}"
        out[key] = without_timings(result)
    return out


def _tune(tmp_path: Path, out: Path, *extra: str):
    grid = tmp_path / "grid.toml"
    grid.write_text("[grid]\nlr = [1e-3, 1e-2, 1e-1]\n")
    args = ("tune", "-p", "tiny_mlp", "-o", "adam", "--grid", str(grid), "--steps", "6")
    args += ("--eval-every", "3", "--final-seeds", "2", "--device", "cpu", "-q")
    return cli(*args, "--output-dir", str(out), *extra)


def test_ray_tune_writes_the_same_result_files_as_local(tmp_path):
    ray_res = _tune(tmp_path, tmp_path / "ray", "--executor", "ray")
    assert ray_res.exit_code == 0, ray_res.output
    assert "Ray cluster: 2 run(s) at once, 1 CPU each" in ray_res.output
    # the search and the final seeds go through one queue, as in a suite: 3 + 2 runs
    assert "runs: 5/5 done, 0 running, 0 failed" in ray_res.output
    local_res = _tune(tmp_path, tmp_path / "local")
    assert local_res.exit_code == 0, local_res.output
    from_ray, from_local = _by_run(tmp_path / "ray"), _by_run(tmp_path / "local")
    assert len(from_ray) == 4  # 3 search runs, and seed 43 of the winner
    shared = {load(path)["environment"]["runs_at_once"] for path in result_files(tmp_path / "ray")}
    assert shared == {None}  # Ray places tasks; who shared a node is not known
    assert from_ray == from_local
    records = {p.name for p in (tmp_path / "ray" / "_runs").glob("*.json")}
    assert records == {p.name for p in (tmp_path / "local" / "_runs").glob("*.json")}
    # Run again on Ray: everything is skipped, nothing is written twice.
    again = _tune(tmp_path, tmp_path / "ray", "--executor", "ray")
    assert again.exit_code == 0, again.output
    assert "finished:" not in again.output and again.output.count("reused:") >= 4
    assert _by_run(tmp_path / "ray") == from_ray


def _spec(lr: float, steps: int, eval_every: int = 4) -> RunSpec:
    hps = get_optimizer("adam").resolve({"lr": lr})
    return RunSpec("tiny_mlp", "adam", hps, 42, 50, Budget(steps=steps), eval_every=eval_every)


def _kill_first_checkpointed_worker(store: ResultStore, killed: list[str], stop: threading.Event):
    """SIGKILL the Ray worker training the first run that has a checkpoint (its pid is in the
    run's lock file, written by the worker that took the lock); note the run's id."""
    runs = store.root / "_runs"
    while not stop.is_set():
        for ckpt in runs.glob("*.ckpt"):
            try:
                pid = json.loads(ckpt.with_suffix(".lock").read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if pid == os.getpid():
                continue
            time.sleep(0.05)  # somewhere after the checkpoint, mid-step or mid-write
            os.kill(pid, signal.SIGKILL)
            killed.append(ckpt.stem)
            return
        time.sleep(0.01)


def test_a_killed_worker_is_retried_from_its_checkpoint_and_every_run_finishes_once(tmp_path):
    specs = [_spec(lr, steps=1500, eval_every=100) for lr in (1e-3, 3e-3, 1e-2)]
    store = ResultStore(tmp_path / "ray")
    lines: list[str] = []
    executor = RayExecutor(Execution(torch.device("cpu"), progress=False), echo=lines.append)
    killed: list[str] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_checkpointed_worker, args=(store, killed, stop))
    killer.start()
    try:
        outcomes = executor.run(specs, store)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed"
    assert executor.crashes == 1, lines
    assert any(line.startswith("worker died running") and "retry 1/2" in line for line in lines)
    assert [o.status for o in outcomes] == ["finished"] * 3
    assert [o.spec for o in outcomes] == specs
    files = result_files(store.root)
    assert len(files) == 3 and {o.path for o in outcomes} == set(files)
    assert len({p.parent for p in files}) == 3
    assert not list((store.root / "_runs").glob("*.ckpt"))
    # The killed run, resumed from its checkpoint, ends where an uninterrupted one does.
    (out,) = [o for o in outcomes if o.spec.run_id == killed[0]]
    local = LocalExecutor(1, Execution(torch.device("cpu"), progress=False))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a 1-CPU Ray task; many threads crawl on a busy machine
    try:
        (straight,) = local.run([out.spec], ResultStore(tmp_path / "local"))
    finally:
        torch.set_num_threads(threads)
    assert without_timings(load(out.path)) == without_timings(load(straight.path))


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path):
    hps = {**get_optimizer("adam").defaults(), "lr": -1.0}  # refused by torch's Adam
    bad = RunSpec("tiny_mlp", "adam", hps, 42, 50, Budget(steps=2))
    specs = [_spec(1e-3, steps=2), bad, _spec(1e-2, steps=2)]
    lines: list[str] = []
    executor = RayExecutor(Execution(torch.device("cpu"), progress=False), echo=lines.append)
    outcomes = executor.run(specs, ResultStore(tmp_path))
    assert [o.status for o in outcomes] == ["finished", "failed", "finished"]
    assert "RunInputError: adam on tiny_mlp: Invalid learning rate: -1.0" in outcomes[1].error
    assert any(line.startswith("failed: tiny_mlp / adam (lr=-1.0)") for line in lines)
    assert "runs: 2/3 done, 0 running, 1 failed" in lines[-1]
    assert executor.crashes == 0


def test_a_run_held_by_another_process_is_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr("bdhf_bench.runner.ray_executor.WAIT_POLL", 0.2)
    spec = _spec(1e-3, steps=2)
    store = ResultStore(tmp_path)
    lock = store.try_lock(spec)  # as if another bdhf-bench held the run
    assert lock is not None
    threading.Timer(1.5, lock.release).start()
    executor = RayExecutor(Execution(torch.device("cpu"), progress=False))
    started = time.monotonic()
    (out,) = executor.run([spec], store)
    assert out.status == "finished" and time.monotonic() - started >= 1.5
    assert len(result_files(tmp_path)) == 1


def test_without_ray_the_executor_option_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    args = ["tune", "-p", "tiny_mlp", "-o", "adam", "--steps", "1", "--executor", "ray"]
    res = CliRunner().invoke(main, [*args, "--output-dir", str(tmp_path)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1
    assert "Ray" in lines[0] and "pip install 'bdhf-bench[ray]'" in lines[0]
    assert not result_files(tmp_path)


def test_ray_only_options_are_checked(tmp_path):
    base = ["tune", "-p", "tiny_mlp", "-o", "adam", "--output-dir", str(tmp_path)]
    res = CliRunner().invoke(main, [*base, "--address", "auto"])
    assert res.exit_code == 2 and "--address is for --executor ray" in res.output
    res = CliRunner().invoke(main, [*base, "--executor", "ray", "--workers", "2"])
    assert res.exit_code == 2 and "--workers is for --executor local" in res.output


def test_an_unreachable_cluster_address_fails_at_once():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RayClusterError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        _probe(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 5


def test_ray_runs_what_a_follow_up_adds(tmp_path):
    from test_executor_follow_up import check_follow_ups

    check_follow_ups(RayExecutor(Execution(torch.device("cpu"), progress=False)), tmp_path)
