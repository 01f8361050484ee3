"""A suite (or run, or tuning) checks its data and device before the first run and refuses in
one line; `bdhf-bench data` lists, checks and fetches data sets; a refused input creates
nothing. The network is always mocked."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import pytest
import torch
from runner_helpers import cli
from test_data_download import _serve
from test_data_fixtures import MNIST_NAMES, write_mnist

from bdhf_bench.data import download as dl
from bdhf_bench.data import files

SUITE = """
results = "{results}"
report = "{report}"
{device}
[[experiment]]
problem = "mnist_logreg"
optimizers = ["sgd", "adam"]
data = "real"
steps = 2
seeds = [1, 2]
"""


def _offline(url: str, timeout: float):
    raise urllib.error.URLError("[Errno 101] Network is unreachable")


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(dl, "_urlopen", _offline)


def _suite(tmp_path: Path, device: str = "") -> Path:
    path = tmp_path / "suite.toml"
    text = SUITE.format(results=tmp_path / "res", report=tmp_path / "rep", device=device)
    path.write_text(text)
    return path


def test_a_suite_without_its_data_refuses_before_the_first_run(tmp_path, offline):
    suite = _suite(tmp_path)
    (tmp_path / "data").mkdir()
    before = _tree(tmp_path)
    res = cli("leaderboard", "-s", str(suite), "--data-dir", str(tmp_path / "data"), "-q")
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert lines[0].startswith("Error: suite suite cannot start: data missing and not downloadable")
    assert "mnist (in " in lines[0] and "Network is unreachable" in lines[0]
    assert _tree(tmp_path) == before  # no results folder, no report, no data folders


def test_a_suite_for_a_gpu_refuses_on_a_machine_without_one(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    suite = _suite(tmp_path, 'device = "cuda"')
    write_mnist(tmp_path / "data", 60, 20)
    before = _tree(tmp_path)
    res = cli("leaderboard", "-s", str(suite), "--data-dir", str(tmp_path / "data"), "-q")
    assert res.exit_code == 1
    (line,) = res.output.strip().splitlines()
    assert "this machine has no CUDA GPU" in line and "--device cpu runs it here" in line
    assert "data missing" not in line  # the data is there
    assert _tree(tmp_path) == before


def test_data_present_or_downloadable_lets_a_run_start(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(dl, "_urlopen", _serve({files.probe_url("mnist"): b"x"}))
    from bdhf_bench.runner.preflight import preflight, status

    assert status("mnist", tmp_path / "data").state == "downloadable"
    from bdhf_bench.runner.suite import load_suite

    specs = load_suite(str(_suite(tmp_path))).runs
    assert preflight(specs, tmp_path / "data", torch.device("cpu")) == []
    write_mnist(tmp_path / "data", 60, 20)
    monkeypatch.setattr(dl, "_urlopen", _offline)
    assert status("mnist", tmp_path / "data").state == "present"
    assert preflight(specs, tmp_path / "data", torch.device("cpu")) == []


def test_data_command_lists_checks_and_fetches(tmp_path, monkeypatch, offline):
    data = tmp_path / "data"
    data.mkdir()
    listed = cli("data", "list", "-p", "mnist_mlp", "-p", "smnist_lstm", "-p", "tiny_mlp",
                 "--data-dir", str(data))  # fmt: skip
    assert listed.exit_code == 0
    assert listed.output.splitlines() == [
        f"mnist      missing: {data / 'MNIST' / 'raw'}",
        "tiny       generated (no files: drawn or built from a package)",
    ]
    svhn = cli("data", "list", "-p", "svhn_wrn164", "--data-dir", str(data))
    assert svhn.output.splitlines() == [
        f"svhn       missing: {data}/{{train_32x32.mat,test_32x32.mat}}"
    ]
    check = cli("data", "check", "-p", "mnist_mlp", "--data-dir", str(data))
    assert check.exit_code == 1
    assert check.output.splitlines()[-1] == "Error: missing and not downloadable now: mnist"
    fetch = cli("data", "fetch", "-p", "mnist_mlp", "--data-dir", str(data))
    assert fetch.exit_code == 1
    (line,) = fetch.output.strip().splitlines()
    assert line.startswith("Error: cannot fetch mnist: data files not found in")
    assert "Network is unreachable" in line
    # Online (a fake mirror serving MNIST-format files): fetched, then present.
    source = tmp_path / "server"
    write_mnist(source, 60, 20, gz=True)
    blobs = {n: (source / f"{n}.gz").read_bytes() for n in MNIST_NAMES.values()}
    md5s = tuple(hashlib.md5(blobs[n]).hexdigest() for n in files._MNIST_NAMES)
    monkeypatch.setitem(files._MNIST_SOURCES, "mnist", ("MNIST", ("http://mirror/",), md5s))
    monkeypatch.setattr(
        dl, "_urlopen", _serve({f"http://mirror/{n}.gz": b for n, b in blobs.items()})
    )
    fetched = cli("data", "fetch", "-p", "mnist_mlp", "--data-dir", str(data))
    assert fetched.exit_code == 0, fetched.output
    assert fetched.output.splitlines() == [f"mnist      present: {data / 'MNIST' / 'raw'}"]
    assert cli("data", "check", "-p", "mnist_mlp", "--data-dir", str(data)).exit_code == 0


@pytest.mark.parametrize("command", [["run"], ["tune", "-o", "adam", "--steps", "1"]])
def test_a_missing_data_dir_creates_nothing(tmp_path, offline, command):
    out = tmp_path / "out"
    res = cli(*command, "-p", "mnist_logreg", "--data-dir", str(tmp_path / "nowhere" / "data"),
              "--output-dir", str(out), "-q")  # fmt: skip
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert "data folder" in line and "does not exist" in line
    assert _tree(tmp_path) == []


def test_missing_data_refuses_before_the_output_folder_exists(tmp_path, offline):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    res = cli("run", "-p", "mnist_logreg", "--data-dir", str(data), "--output-dir", str(out), "-q")
    assert res.exit_code == 1
    (line,) = res.output.strip().splitlines()
    assert line.startswith("Error: run cannot start: data missing and not downloadable now: mnist")
    assert _tree(tmp_path) == ["data"]
