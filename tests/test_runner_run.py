"""`bdhf-bench run` end to end: result files, keys and values, skipping finished runs."""

from __future__ import annotations

import pytest
from results_contract import DEEPOBS_KEYS, EVAL_KEYS, OUR_KEYS
from runner_helpers import cli, cli_subprocess, load, result_files


def test_run_writes_a_deepobs_result_with_our_keys(tmp_path):
    out = tmp_path / "results"
    args = (
        "run",
        "-p",
        "tiny_mlp",
        "-o",
        "adam",
        "--hp",
        "lr=0.01",
        "--epochs",
        "2",
        "--output-dir",
        str(out),
        "--quiet",
        "--seed",
        "3",
    )
    res = cli(*args)
    assert res.exit_code == 0, res.output
    (path,) = result_files(out)
    assert path.parent.name == (
        "num_epochs__2__batch_size__50__lr__1.e-02"  # only what differs from Adam's defaults
    )
    assert path.parts[-4:-2] == ("tiny_mlp", "adam")
    r = load(path)
    assert set(r) >= DEEPOBS_KEYS | OUR_KEYS
    assert all(set(e) == EVAL_KEYS for e in r["evaluations"])
    assert r["status"] == "finished" and r["random_seed"] == 3 and r["num_epochs"] == 2
    for key in ("train_losses", "valid_losses", "test_losses", "test_accuracies"):
        assert len(r[key]) == 3
    steps_per_epoch = 1000 // 50
    assert r["steps"] == 2 * steps_per_epoch == len(r["minibatch_train_losses"])
    evals = r["evaluations"]
    assert [e["step"] for e in evals] == [0, 20, 40]
    assert [e["epoch"] for e in evals] == [0.0, 1.0, 2.0]
    # First-order: one gradient per step, exactly.
    assert [e["gradient_equivalents"] for e in evals] == pytest.approx([0, 20, 40])
    assert [e["forward_passes"] for e in evals] == [0, 20, 40]
    assert all(e["curvature_products"] == 0 for e in evals)
    assert evals[-1]["test_accuracy"] == r["test_accuracies"][-1] > 0.8
    assert 0 < evals[1]["train_seconds"] <= evals[2]["train_seconds"] == r["train_seconds"]
    assert r["data"]["sizes"] == {"train": 1000, "train_eval": 200, "valid": 200, "test": 200}
    assert r["target"]["reached"]["step"] in (20, 40)
    assert set(r["environment"]) >= {"torch", "device", "bdhf_bench", "git_revision"}
    assert r["optimizer_hyperparams"]["lr"] == 0.01
    # The same command again: the finished run is skipped, nothing new is written.
    again = cli(*args)
    assert again.output.startswith("reused:")
    assert result_files(out) == [path]


def test_hf_optimizers_count_their_passes(tmp_path):
    out = tmp_path / "results"
    for name in ("bdhf", "hf"):
        res = cli(
            "run",
            "-p",
            "tiny_mlp",
            "-o",
            name,
            "--steps",
            "6",
            "--eval-every",
            "3",
            "--output-dir",
            str(out),
            "-q",
        )
        assert res.exit_code == 0, res.output
    for path in result_files(out):
        r = load(path)
        evals = r["evaluations"]
        assert [e["step"] for e in evals] == [0, 3, 6] and r["num_epochs"] == 2
        assert evals[-1]["curvature_products"] > 6
        # Each step: a gradient, plus curvature work that costs more than nothing.
        assert evals[-1]["gradient_equivalents"] > 6
        assert evals[-1]["forward_passes"] > 6 and evals[-1]["backward_passes"] > 6
        assert r["cost_model"]["full_product"] > 0
        assert len(r["cost_model"]["block_products"]) == (2 if r["optimizer_name"] == "bdhf" else 1)
        assert evals[-1]["optimizer"]["accepted"] + evals[-1]["optimizer"]["rejected"] == 6


def test_run_as_a_subprocess(tmp_path):
    proc = cli_subprocess(
        "run",
        "--problem",
        "tiny_mlp",
        "--optimizer",
        "sgd",
        "--steps",
        "5",
        "--output-dir",
        str(tmp_path),
        "--device",
        "cpu",
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "finished: tiny_mlp / sgd" in stdout
    (path,) = result_files(tmp_path)
    assert load(path)["steps"] == 5
