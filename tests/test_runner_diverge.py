"""A non-finite loss ends a run as diverged, without inventing the evaluations after it."""

from __future__ import annotations

import math

from runner_helpers import cli, load, result_files


def test_divergence_stops_the_run_and_files_it_apart(tmp_path):
    res = cli(
        "run",
        "-p",
        "quadratic_deep",
        "-o",
        "sgd",
        "--hp",
        "lr=1.0",
        "--steps",
        "200",
        "--eval-every",
        "5",
        "--output-dir",
        str(tmp_path),
        "-q",
    )
    assert res.exit_code == 0, res.output
    assert res.output.startswith("diverged:")
    (path,) = result_files(tmp_path)
    assert path.relative_to(tmp_path).parts[0] == "_diverged"
    r = load(path)
    assert r["status"] == "diverged"
    at = r["diverged_at"]["step"]
    assert 0 < at < 200
    steps = [e["step"] for e in r["evaluations"]]
    assert steps == list(range(0, steps[-1] + 1, 5)) and steps[-1] <= at
    assert r["num_epochs"] == len(steps) - 1 == len(r["test_losses"]) - 1
    assert all(math.isfinite(v) for v in r["minibatch_train_losses"])
    assert len(r["minibatch_train_losses"]) <= at
    # No finished-run folder was written for it: DeepOBS's analyzer never sees it.
    assert not (tmp_path / "deepobs").exists()


def test_hf_never_corrupts_parameters_but_a_bad_start_is_reported(tmp_path):
    # HF rejects non-finite steps, so with a sane start it does not diverge.
    res = cli(
        "run",
        "-p",
        "quadratic_deep",
        "-o",
        "hf",
        "--steps",
        "5",
        "--output-dir",
        str(tmp_path),
        "-q",
    )
    assert res.exit_code == 0 and res.output.startswith("finished:")
