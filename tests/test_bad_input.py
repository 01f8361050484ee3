"""Bad input found by trying every command's options and files as a new user would: each ends in
one line saying what is wrong (and what is valid) and exit code 2 (1 for a data set that is missing
while offline), never a traceback, and leaves no result file."""

from __future__ import annotations

import gzip
import io
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from runner_helpers import cli, result_files
from test_data_fixtures import write_cifar10, write_mnist, write_svhn

from bdhf_bench.data import download
from bdhf_bench.data.idx import write_idx
from bdhf_bench.runner import MAX_SEED
from bdhf_bench.runner.suite import SuiteError, load_suite

TINY = ("-p", "tiny_mlp", "-o", "sgd", "--steps", "2", "--device", "cpu", "-q")


def _refused(res, message: str, out: Path, code: int = 2) -> str:
    """The error line of a refused command, checked: exit code, one error line with
    ``message``, no result file."""
    assert res.exit_code == code, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and message in lines[-1], res.output
    assert not any(line.startswith("Traceback") for line in lines)
    assert not out.exists() or not result_files(out)
    return lines[-1]


# -- run's options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], f"-1 is not in the range 0<=x<={MAX_SEED}"),
        (["--seed", "99999999999999999999999"], f"is not in the range 0<=x<={MAX_SEED}"),
        (["--hp", "lr=1e-3", "--hp", "lr=1e-2"], "--hp lr given twice ('1e-3' and '1e-2')"),
        (["--time-budget", "nan"], "'nan' is not a finite number"),
        (["--time-budget", "inf"], "'inf' is not a finite number"),
        (["--weight-decay", "nan"], "'nan' is not a finite number"),
        (["--weight-decay", "inf"], "'inf' is not a finite number"),
        (["--batch-size", "100000"], "batch size 100000 is larger than the training split"),
    ],
)
def test_bad_run_options(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "results"
    res = cli("run", *TINY, *args, "--output-dir", str(out))
    _refused(res, message, out)


def test_tune_seeds_past_the_largest_are_refused_before_any_run(tmp_path: Path) -> None:
    out = tmp_path / "results"
    res = cli("tune", *TINY, "--tuning-seed", str(MAX_SEED), "--final-seeds", "2",
              "--output-dir", str(out))  # fmt: skip
    _refused(res, f"passes the largest seed, {MAX_SEED}", out)


def test_a_hyperparameter_both_fixed_and_searched_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "results"
    res = cli("tune", *TINY, "--hp", "lr=0.1", "--output-dir", str(out))  # sgd's grid: lr
    _refused(res, "hyperparameter lr is both searched (in the grid) and fixed", out)


# -- data files ---------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No network; the URLs anything tried to download are recorded."""
    tried: list[str] = []

    def urlopen(url: str, timeout: float):
        tried.append(url)
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(download, "_urlopen", urlopen)
    return tried


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _mnist(data: Path, **kwargs) -> Path:
    raw = data / "MNIST" / "raw"
    write_mnist(raw, 120, 30, **kwargs)
    return raw


def _corrupt_plain_idx(data: Path) -> Path:
    path = _mnist(data, gz=False) / "train-images-idx3-ubyte"
    _truncate(path, 1000)
    return path


def _corrupt_gz(data: Path) -> Path:
    path = _mnist(data, gz=True) / "t10k-images-idx3-ubyte.gz"
    _truncate(path, 200)
    return path


def _garbage_gz(data: Path) -> Path:
    path = _mnist(data, gz=True) / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all")
    return path


def _labels_not_images(data: Path) -> Path:
    """Two well-formed files that do not belong together: 120 images, 30 labels."""
    raw = _mnist(data, gz=False)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(30, dtype=np.uint8))
    return raw / "train-images-idx3-ubyte"  # the message names the pair


def _labels_out_of_range(data: Path) -> Path:
    raw = _mnist(data, gz=False)
    path = raw / "t10k-labels-idx1-ubyte"
    content = bytearray(path.read_bytes())
    content[8] = 200
    path.write_bytes(bytes(content))
    return data


def _download_archive_with_another_md5(data: Path) -> Path:
    """A half-downloaded .gz beside the files that are there: it must not be fetched over."""
    raw = _mnist(data, gz=False)
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").unlink()  # missing: what would start a download
    path = raw / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0" * 100)[:30])
    return path


def _cifar_garbage(data: Path) -> Path:
    write_cifar10(data, per_batch=10, n_test=10)
    path = data / "cifar-10-batches-py" / "data_batch_3"
    _truncate(path, 500)
    return path


def _svhn_garbage(data: Path) -> Path:
    write_svhn(data, 20, 10)
    path = data / "test_32x32.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file, but nothing after it")
    return path


@pytest.mark.parametrize(
    ("problem", "damage", "message"),
    [
        ("mnist_logreg", _corrupt_plain_idx, "is truncated or corrupt (IDX header says"),
        ("mnist_logreg", _corrupt_gz, "is truncated or corrupt"),
        ("mnist_logreg", _garbage_gz, "is truncated or corrupt"),
        ("mnist_logreg", _labels_not_images, "do not match"),
        ("mnist_logreg", _labels_out_of_range, "labels 0..200, outside 0..9 (corrupt)"),
        ("cifar10_3c3d", _cifar_garbage, "is truncated or corrupt"),
        ("svhn_wrn164", _svhn_garbage, "is truncated or corrupt"),
    ],
)
def test_damaged_data_files_are_named_and_never_downloaded_over(
    tmp_path: Path, offline: list[str], problem: str, damage, message: str
) -> None:
    data = tmp_path / "data"
    named = damage(data)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    out = tmp_path / "results"
    res = cli("run", "-p", problem, "-o", "sgd", "--steps", "1", "--device", "cpu", "-q",
              "--data-dir", str(data), "--output-dir", str(out))  # fmt: skip
    line = _refused(res, message, out)
    assert str(named) in line
    assert offline == []  # nothing was downloaded, or even tried
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_a_damaged_download_is_not_downloaded_over_when_online(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []

    def urlopen(url: str, timeout: float):  # online: every URL answers (with nothing)
        opened.append(url)
        return io.BytesIO(b"")

    monkeypatch.setattr(download, "_urlopen", urlopen)
    data = tmp_path / "data"
    named = _download_archive_with_another_md5(data)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    out = tmp_path / "results"
    res = cli("run", "-p", "mnist_logreg", "-o", "sgd", "--steps", "1", "--device", "cpu", "-q",
              "--data-dir", str(data), "--output-dir", str(out))  # fmt: skip
    line = _refused(res, "delete it to download it again", out)
    assert str(named) in line and "is truncated or corrupt (md5" in line
    assert len(opened) == 1  # the preflight's question "can it be downloaded?", no download
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_a_missing_data_set_offline_exits_1(tmp_path: Path, offline: list[str]) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "results"
    res = cli("run", "-p", "mnist_logreg", "-o", "sgd", "--steps", "1", "-q",
              "--data-dir", str(tmp_path / "empty"), "--output-dir", str(out))  # fmt: skip
    _refused(res, "Network is unreachable", out, code=1)
    assert offline  # it tried, and said why it failed


# -- files in the results folder ----------------------------------------------------------------


def test_a_corrupt_checkpoint_is_named(tmp_path: Path) -> None:
    out = tmp_path / "results"
    spec_args = ("run", *TINY, "--output-dir", str(out))
    from bdhf_bench.optim import get_optimizer
    from bdhf_bench.runner import Budget, ResultStore, RunSpec

    spec = RunSpec("tiny_mlp", "sgd", get_optimizer("sgd").resolve({}), 42, 50, Budget(steps=2))
    store = ResultStore(out)
    store.checkpoint_path(spec).write_bytes(b"PK\x03\x04 not a checkpoint")
    line = _refused(cli(*spec_args), "is truncated or corrupt", out)
    assert "delete it to start the run again" in line and str(store.checkpoint_path(spec)) in line


def test_a_changed_result_file_is_named(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert cli("run", *TINY, "--output-dir", str(out)).exit_code == 0
    (path,) = result_files(out)
    path.write_text('["not", "a", "result"]')
    res = cli("run", *TINY, "--output-dir", str(out))
    assert res.exit_code == 2 and "is not a JSON object" in res.output.strip().splitlines()[-1]
    assert str(path) in res.output


def test_a_spec_file_with_a_bad_seed_is_refused(tmp_path: Path) -> None:
    from bdhf_bench.optim import get_optimizer
    from bdhf_bench.runner import Budget, RunSpec
    from bdhf_bench.runner.slurm import write_spec_file

    spec = RunSpec("tiny_mlp", "sgd", get_optimizer("sgd").resolve({}), 42, 50, Budget(steps=2))
    path = tmp_path / "job.specs.json"
    write_spec_file(path, [spec])
    data = json.loads(path.read_text())
    data["specs"][0]["spec"]["seed"] = -3
    path.write_text(json.dumps(data))
    out = tmp_path / "results"
    res = cli("run-spec", "--specs", str(path), "--index", "0", "--output-dir", str(out), "-q")
    _refused(res, f"entry 0: seed must be in 0..{MAX_SEED}, got -3", out)


# -- grid and suite files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[grid]", "needs a non-empty [grid] table"),
        ("[grid]\nlr = []", "grid.lr must be a non-empty list"),
        ("[grid]\nlr = [0.1, 0.1]", "grid.lr lists 0.1 twice"),
        ("[grid]\nlr = ['fast']", "lr='fast' is not valid: must be a float"),
        ("[grid]\nlr = [true]", "lr=True is not valid"),
        ("fixed = 3\n[grid]\nlr = [0.1]", "[fixed] must be a table"),
        ("[grid]\nlr = [0.1]\n[fixed]\nlr = 0.2", "lr is in both [grid] and [fixed]"),
        ("[grid]\nlr = [[0.1]]", "is not valid"),
    ],
)
def test_malformed_grid_files(tmp_path: Path, content: str, message: str) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(content)
    out = tmp_path / "results"
    res = cli("tune", *TINY, "--grid", str(grid), "--output-dir", str(out))
    _refused(res, message, out)


def test_a_binary_grid_file(tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_bytes(b"\xff\xfe\x00garbage")
    out = tmp_path / "results"
    res = cli("tune", *TINY, "--grid", str(grid), "--output-dir", str(out))
    _refused(res, "is not UTF-8 text (TOML)", out)


EXP = "[[experiment]]\nproblem = 'tiny_mlp'\noptimizers = ['sgd']\nsteps = 2\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (EXP + "seeds = '42'", "seeds must be a non-empty list of integers, got '42'"),
        (EXP + "seeds = []", "seeds must be a non-empty list of integers"),
        (EXP + "seeds = [42, 42]", "seeds lists 42 twice"),
        (EXP + "seeds = [-1]", f"seed must be in 0..{MAX_SEED}, got -1"),
        (EXP + "seeds = [4.5]", "seeds must be a non-empty list of integers"),
        (EXP + "batch_size = 'big'", "batch_size must be an integer, got 'big'"),
        (EXP + "batch_size = 12.5", "batch_size must be an integer, got 12.5"),
        (EXP + "eval_every = '5'", "eval_every must be an integer"),
        (EXP + "epochs = true", "epochs must be an integer, got True"),
        (EXP + "time_budget = '1h'", "time_budget must be a number"),
        (EXP + "weight_decay = 'x'", "weight_decay must be a number"),
        (EXP + "weight_decay = -1.0", "weight decay must be a finite number >= 0"),
        (EXP + "data = 'fake'", "data must be one of ('real', 'synthetic')"),
        (EXP + "hyperparameters = { sgd = 3 }", "hyperparameters must be a table of optimizer"),
        (EXP + "tune = { sgd = 3 }", "tune must be a table of optimizer = grid file"),
        (EXP + "tune = { sgd = 'nowhere.toml' }", "cannot read grid file"),
        (EXP + "sweep = [1]", "sweep must be a table of non-empty lists"),
        (EXP + "sweep = { lr = [] }", "sweep must be a table of non-empty lists"),
        (EXP.replace("['sgd']", "['sgd', 'sgd']"), "optimizers lists sgd twice"),
        (EXP.replace("optimizers = ['sgd']", "optimizers = 'sgd'"), "optimizers must be a non"),
        (EXP.replace("optimizers = ['sgd']\n", ""), "missing key 'optimizers'"),
        (EXP.replace("problem = 'tiny_mlp'\n", ""), "missing key 'problem'"),
        ("results = 5\n" + EXP, "results must be a string, got 5"),
        ("defaults = 3\n" + EXP, "[defaults] must be a table"),
        ("[[experiment]]", "missing key 'problem'"),
        ("reslts = 'x'\n" + EXP, "unknown key(s) ['reslts']; valid:"),
        ("experiment = []", "needs at least one [[experiment]]"),
    ],
)
def test_malformed_suites(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_malformed_suite_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "suite.toml"
    path.write_text(EXP + "seeds = '42'")
    out = tmp_path / "results"
    res = cli("leaderboard", "--suite", str(path), "--results", str(out))
    _refused(res, "seeds must be a non-empty list of integers", out)


# -- result files the report reads --------------------------------------------------------------


def _drop(key: str):
    return lambda doc: doc.pop(key)


def _set(key: str, value):
    return lambda doc: doc.__setitem__(key, value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_drop("test_losses"), "missing key test_losses"),
        (_drop("training_params"), "missing key training_params"),
        (_set("test_losses", "low"), "test_losses is not a list of 2 values (one per evaluation)"),
        (
            _set("valid_losses", [0.5]),
            "valid_losses is not a list of 2 values (one per evaluation)",
        ),
        (_set("train_losses", [0.5, "x"]), "train_losses[1] is not a number ('x')"),
        (_set("test_accuracies", [0.5, True]), "test_accuracies[1] is not a number (True)"),
        (_set("batch_size", -1), "batch_size -1 is below 1"),
        (_set("random_seed", -1), "random_seed -1 is below 0"),
        (_set("num_epochs", 1.5), "num_epochs is not an integer (1.5)"),
        (_set("weight_decay", -0.1), "weight_decay -0.1 is below 0"),
        (_set("optimizer_hyperparams", [1]), "optimizer_hyperparams is not a JSON object"),
        (_set("steps", "two"), "steps is not a number ('two')"),
    ],
)
def test_result_files_with_missing_or_wrong_keys_are_skipped_with_the_reason(
    tmp_path: Path, change, reason: str
) -> None:
    from bdhf_bench.report import load_results

    out = tmp_path / "results"
    assert cli("run", *TINY, "--eval-every", "2", "--seed", "1", "--seed", "2",
               "--output-dir", str(out)).exit_code == 0  # fmt: skip
    good, bad = result_files(out)
    doc = json.loads(bad.read_text())
    change(doc)
    bad.write_text(json.dumps(doc))
    loaded = load_results([out])
    assert [(s.path, s.reason) for s in loaded.skipped] == [(str(bad), reason)]
    assert loaded.runs["path"].tolist() == [str(good)]
