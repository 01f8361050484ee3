"""A finished run is reused only for the same data, device kind and dtype; --rerun redoes it;
budgets never share a setting folder."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
from runner_helpers import cli, load, result_files
from test_data_fixtures import write_mnist

from bdhf_bench.data import data_identity
from bdhf_bench.data.idx import read_idx, write_idx
from bdhf_bench.runner import context as context_module
from bdhf_bench.runner import store as store_module


def _mnist_run(data_dir, out, *extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the subset's "splits scaled down" warning
        return cli(
            "run",
            "-p",
            "mnist_logreg",
            "-o",
            "sgd",
            "--batch-size",
            "20",
            "--steps",
            "2",
            "--data-dir",
            str(data_dir),
            "--output-dir",
            str(out),
            "-q",
            *extra,
        )


def test_the_same_command_on_other_data_does_not_reuse_the_result(tmp_path, monkeypatch):
    stamps = (f"2026-01-01-00-00-0{i}" for i in range(10))  # each result its own file name
    monkeypatch.setattr(
        store_module, "time", types.SimpleNamespace(strftime=lambda f: next(stamps))
    )
    big, small, out = tmp_path / "big", tmp_path / "small", tmp_path / "out"
    write_mnist(big, 120, 40)
    write_mnist(small, 80, 40)  # the same first 80 digits: a subset, as in the issue
    first = _mnist_run(big, out)
    assert first.exit_code == 0 and first.output.startswith("finished:"), first.output
    (path,) = result_files(out)
    assert load(path)["data"]["fingerprint"]["examples"] == {"train_file": 120, "test": 40}

    other = _mnist_run(small, out)
    assert other.exit_code == 1, other.output
    lines = other.output.strip().splitlines()
    assert len(lines) == 1 and "--rerun replaces it" in lines[0], other.output
    assert "(120/40 examples" in lines[0] and "(80/40 examples" in lines[0]
    assert result_files(out) == [path]  # the refused command wrote nothing

    redo = _mnist_run(small, out, "--rerun")
    assert redo.output.startswith("finished:"), redo.output
    (new,) = result_files(out)  # replaced, not written beside it as a second "seed"
    assert new != path
    assert load(new)["data"]["fingerprint"]["examples"] == {"train_file": 80, "test": 40}
    again = _mnist_run(small, out)
    assert again.output.startswith("reused:") and result_files(out) == [new]


def test_rerun_redoes_a_finished_run_once(tmp_path):
    args = ("run", "-p", "tiny_mlp", "-o", "adam", "--steps", "3", "--output-dir", str(tmp_path))
    assert cli(*args, "-q").output.startswith("finished:")
    (old,) = result_files(tmp_path)
    written = old.stat().st_mtime_ns
    redo = cli(*args, "-q", "--rerun", "--seed", "42", "--seed", "42")
    # The second seed 42 finished within this command: reused, not trained a third time.
    assert redo.output.splitlines()[0].startswith("finished:")
    assert redo.output.splitlines()[1].startswith("reused:")
    (new,) = result_files(tmp_path)
    assert load(new)["steps"] == 3 and new.stat().st_mtime_ns > written


def test_another_dtype_or_device_kind_is_not_reused(tmp_path, monkeypatch):
    args = ("run", "-p", "tiny_mlp", "-o", "adam", "--steps", "2", "--output-dir", str(tmp_path))
    assert cli(*args, "-q").exit_code == 0
    (path,) = result_files(tmp_path)
    r = load(path)
    assert r["environment"]["dtype"] == "float32" and r["environment"]["device"] == "cpu"
    monkeypatch.setattr(context_module, "dtype_name", lambda: "float64")
    res = cli(*args, "-q")
    assert res.exit_code == 1 and "on cpu in float32, not on" in res.output
    assert "in float64" in res.output


def test_the_fingerprint_follows_the_content_not_the_file_format(tmp_path):
    def fingerprint(folder, **kw):
        args = {"source": "real", "data_dir": folder, "seed": 0, "synthetic_sizes": (600, 100)}
        return data_identity("mnist", **{**args, **kw})["sha256"]

    gz, plain, changed = tmp_path / "gz", tmp_path / "plain", tmp_path / "changed"
    write_mnist(gz, 60, 20, gz=True)
    write_mnist(plain, 60, 20, gz=False)
    write_mnist(changed, 60, 20, gz=False)
    images = changed / "t10k-images-idx3-ubyte"
    pixels = read_idx(images)
    pixels[5, 10, 10] ^= 1  # one pixel of one test digit
    write_idx(images, pixels)
    assert fingerprint(gz) == fingerprint(plain) != fingerprint(changed)
    # Generated data: its generator's arguments.
    synth = {"source": "synthetic", "data_dir": tmp_path, "synthetic_sizes": (600, 100)}
    a = data_identity("cifar10", seed=1, **synth)
    assert a == data_identity("cifar10", seed=1, **synth)
    assert a["sha256"] != data_identity("cifar10", seed=2, **synth)["sha256"]
    assert a["examples"] == {"train_file": 600, "test": 100}
    assert np.all([len(a["sha256"]) == 20])


@pytest.mark.parametrize(
    ("budget", "folder"),
    [
        (("--epochs", "1"), "num_epochs__1__batch_size__50"),
        (("--steps", "20"), "num_epochs__1__batch_size__50__budget_steps__20"),
        (("--steps", "19"), "num_epochs__1__batch_size__50__budget_steps__19"),
        (
            ("--time-budget", "600", "--epochs", "1"),
            "num_epochs__1__batch_size__50__budget_epochs__1__budget_seconds__6.e+02",
        ),
        (
            ("--epochs", "2", "--eval-every", "40"),
            "num_epochs__1__batch_size__50__budget_epochs__2__eval_every__40",
        ),
    ],
)
def test_each_budget_has_its_own_setting_folder(tmp_path, budget, folder):
    # tiny_mlp: 20 steps per epoch, so every budget here ends after one evaluation interval
    # (num_epochs 1): without the budget in the name they would all share one folder.
    res = cli("run", "-p", "tiny_mlp", "-o", "adam", *budget, "--output-dir", str(tmp_path), "-q")
    assert res.exit_code == 0, res.output
    (path,) = result_files(tmp_path)
    assert path.parent.name == folder
    r = load(path)
    assert r["num_epochs"] == 1
    assert r["budget"]["steps"] == (int(budget[1]) if budget[0] == "--steps" else None)
