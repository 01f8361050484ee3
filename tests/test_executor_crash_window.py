"""A process killed while it writes a finished run's files never leaves the run twice: the
retry (on another Ray worker, a resubmitted SLURM task, or the next command) writes one file."""

from __future__ import annotations

import types

import pytest
import torch
from runner_helpers import result_files

from bdhf_bench.optim import get_optimizer
from bdhf_bench.runner import Budget, Execution, ResultStore, RunSpec, run_one
from bdhf_bench.runner import store as store_module


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def test_killed_between_the_finished_record_and_the_result_file(tmp_path, monkeypatch):
    spec = RunSpec("tiny_mlp", "adam", get_optimizer("adam").resolve({}), 42, 50, Budget(steps=3))
    store = ResultStore(tmp_path)
    execution = Execution(torch.device("cpu"), progress=False)
    real_write_json = store_module.write_json
    stamps = iter(["2026-01-01-00-00-00", "2026-01-01-00-00-01"])  # the retry is a second later
    clock = types.SimpleNamespace(strftime=lambda fmt: next(stamps))
    monkeypatch.setattr(store_module, "time", clock)

    def dies_after_the_first_file(path, data):
        real_write_json(path, data)
        monkeypatch.setattr(store_module, "write_json", dies)

    def dies(path, data):
        raise Killed

    monkeypatch.setattr(store_module, "write_json", dies_after_the_first_file)
    with pytest.raises(Killed):
        run_one(spec, store, execution)
    monkeypatch.setattr(store_module, "write_json", real_write_json)
    assert store.finished(spec) is None  # whatever was written first, the run is not finished
    out = run_one(spec, store, execution)
    assert out.status == "finished"
    assert result_files(tmp_path) == [out.path]
    assert store.finished(spec) == out.path
