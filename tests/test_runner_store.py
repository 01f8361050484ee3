"""The results store: atomic writes, crash-released locks, safe checkpoints, DeepOBS names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from bdhf_bench.optim import get_optimizer
from bdhf_bench.runner import Budget, ResultStore, RunSpec
from bdhf_bench.runner.spec import float2str, setting_folder
from bdhf_bench.runner.store import atomic_file


def _spec(**kw):
    base = dict(
        problem="tiny_mlp",
        optimizer="adam",
        hyperparameters=get_optimizer("adam").resolve({"lr": 1e-3}),
        seed=1,
        batch_size=50,
        budget=Budget(epochs=1),
    )
    return RunSpec(**{**base, **kw})


def test_run_id_is_stable_and_covers_every_field():
    a = _spec()
    assert a.run_id == _spec().run_id
    assert a.run_id == RunSpec.from_identity(a.identity()).run_id
    for change in (
        {"seed": 2},
        {"hyperparameters": {"lr": 2e-3}},
        {"data": "synthetic"},
        {"budget": Budget(steps=5)},
        {"eval_every": 3},
        {"weight_decay": 0.1},
    ):
        assert _spec(**change).run_id != a.run_id


def test_float_format_and_folder_match_deepobs():
    from deepobs.abstract_runner.abstract_runner_utils import float2str as deepobs_float2str

    for x in (1e-3, 0.95, 123.0, 2.5e-05, 1.0):
        assert float2str(x) == deepobs_float2str(x)
    spec = _spec(hyperparameters={"lr": 1e-3, "beta1": 0.9, "amsgrad": False})
    assert setting_folder(spec, 3, 0.0005) == (
        "num_epochs__3__batch_size__50__weight_decay__5.e-04"
        "__amsgrad__False__beta1__9.e-01__lr__1.e-03"
    )


def test_folder_names_leave_out_defaults_and_stay_short():
    from bdhf_bench.optim import get_optimizer

    entry = get_optimizer("bdhf")
    spec = _spec(optimizer="bdhf", hyperparameters=entry.resolve({"damping": 10.0}))
    assert setting_folder(spec, 4, None, entry.resolve({})) == (
        "num_epochs__4__batch_size__50__damping__1.e+01"
    )
    full = setting_folder(spec, 4, None)
    assert len(full) <= 200 and full.startswith("num_epochs__4__batch_size__50__backtrack")
    other = _spec(optimizer="bdhf", hyperparameters=entry.resolve({"damping": 2.0}))
    assert setting_folder(other, 4, None) != full


def test_atomic_file_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_lock_is_exclusive_and_released_when_the_holder_is_killed(tmp_path):
    store = ResultStore(tmp_path)
    spec = _spec()
    lock = store.try_lock(spec)
    assert lock is not None and store.try_lock(spec) is None
    lock.release()
    assert not store.is_locked(spec)
    # Another process takes the lock and is SIGKILLed: the kernel releases it.
    code = (
        "import sys, time; from bdhf_bench.runner import ResultStore, RunSpec;"
        "import json; from bdhf_bench.runner.spec import Budget;"
        f"spec = RunSpec.from_identity(json.loads({json.dumps(json.dumps(spec.identity()))}));"
        f"lock = ResultStore({str(tmp_path)!r}).try_lock(spec); print('locked', flush=True);"
        "time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    assert store.is_locked(spec)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while store.is_locked(spec):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_checkpoints_round_trip_with_weights_only(tmp_path):
    store = ResultStore(tmp_path)
    spec = _spec()
    state = {"model": {"w": torch.arange(3.0)}, "state": {"step": 4, "losses": [1.0, 0.5]}}
    store.save_checkpoint(spec, state)
    back = store.load_checkpoint(spec)
    assert torch.equal(back["model"]["w"], torch.arange(3.0)) and back["state"]["step"] == 4


def test_a_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    store = ResultStore(tmp_path)
    spec = _spec()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, store.checkpoint_path(spec))
    with pytest.raises(Exception, match="Weights only load failed"):
        store.load_checkpoint(spec)


def test_finished_record_points_at_the_result(tmp_path):
    store = ResultStore(tmp_path)
    spec = _spec()
    assert store.finished(spec) is None
    path = store.write_result(spec, {"status": "finished"}, "num_epochs__1", diverged=False)
    assert store.finished(spec) == path
    path.unlink()
    assert store.finished(spec) is None  # a record without its result is not finished
