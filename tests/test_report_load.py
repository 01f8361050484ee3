"""Loading: tidy frames, diverged runs, and every kind of unusable file skipped with a reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_helpers import make_run, write_doc, write_run

from bdhf_bench.report import load_results
from bdhf_bench.report.load import EVAL_COLUMNS


def _messy(root: Path) -> dict[str, Path]:
    """One good run, one diverged run, and one file of each unusable kind."""
    files = {"good": write_run(root, seed=1, reached_seconds=2.0)}
    files["diverged"] = write_run(root, seed=2, diverged_after=1)
    doc = make_run(seed=3)
    doc["status"] = "finished"  # the folder wins: a file under _diverged/ is diverged
    files["diverged_by_folder"] = write_doc(root / "_diverged", doc)
    base = root / "mnist_mlp" / "adam" / "odd"
    base.mkdir(parents=True)
    cases = {
        "not_json": ("{not json", "not valid JSON"),
        "list": ("[1, 2, 3]", "not a JSON object"),
        "no_status": (lambda d: d.pop("status"), "missing key status"),
        "no_eval_key": (
            lambda d: d["evaluations"][1].pop("gradient_equivalents"),
            "missing key evaluations[1].gradient_equivalents",
        ),
        "schema2": (lambda d: d.update(schema_version=2), "schema_version 2"),
        "bad_type": (lambda d: d["evaluations"][0].update(step="three"), "evaluations[0].step"),
        "bad_status": (lambda d: d.update(status="running"), "status 'running'"),
        "empty_evals": (lambda d: d.update(evaluations=[]), "evaluations is empty"),
        "bad_target": (lambda d: d["target"].update(metric="bleu"), "target.metric"),
        "foreign": ('{"hello": "world"}', "not a result file"),
        "partial_deepobs": ('{"testproblem": "mnist_mlp"}', "not a complete DeepOBS file"),
    }
    for name, (change, _) in cases.items():
        path = base / f"{name}.json"
        if isinstance(change, str):
            path.write_text(change)
        else:
            doc = make_run(seed=10)
            change(doc)
            path.write_text(json.dumps(doc))
        files[name] = path
    (base / "notes.txt").write_text("hello")
    files["notes"] = base / "notes.txt"
    deepobs = {k: v for k, v in make_run(seed=11).items() if k in _deepobs_keys()}
    files["deepobs"] = base / "random_seed__11__deepobs.json"
    files["deepobs"].write_text(json.dumps(deepobs))
    runs = root / "_runs"
    runs.mkdir()
    (runs / "abc.json").write_text("{broken")
    (runs / "abc.lock").write_text("")
    return {"files": files, "reasons": {k: why for k, (_, why) in cases.items()}}


def _deepobs_keys() -> set[str]:
    return {
        "testproblem", "batch_size", "num_epochs", "random_seed", "weight_decay",
        "optimizer_name", "optimizer_hyperparams", "training_params", "train_losses",
        "valid_losses", "test_losses", "train_accuracies", "valid_accuracies",
        "test_accuracies", "minibatch_train_losses",
    }  # fmt: skip


@pytest.fixture
def messy(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "results"
    return root, _messy(root)


def test_unusable_files_are_skipped_with_their_reason(messy) -> None:
    root, info = messy
    loaded = load_results([root])
    reasons = {Path(s.path).stem: s.reason for s in loaded.skipped}
    for name, why in info["reasons"].items():
        assert why in reasons[name], (name, reasons[name])
    assert reasons["notes"] == "not a .json file"
    assert not any("_runs" in s.path for s in loaded.skipped)  # bookkeeping is not read
    assert len(loaded.skipped) == len(info["reasons"]) + 1


def test_good_diverged_and_deepobs_only_runs_are_loaded(messy) -> None:
    root, info = messy
    loaded = load_results([root])
    runs = loaded.runs.set_index("seed")
    assert sorted(runs.index) == [1, 2, 3, 11]
    assert runs.loc[1, "status"] == "finished"
    assert runs.loc[2, "status"] == "diverged"
    assert runs.loc[3, "status"] == "diverged"
    assert runs.loc[11, "kind"] == "deepobs"
    assert [Path(r.path).name for r in loaded.reduced] == [info["files"]["deepobs"].name]
    assert math.isnan(runs.loc[11, "seconds_to_target"])  # no target: not a miss
    assert runs.loc[1, "seconds_to_target"] == 2.0
    assert runs.loc[2, "seconds_to_target"] == math.inf
    assert runs.loc[1, "run_id"] == "results/" + info["files"]["good"].relative_to(root).as_posix()


def test_evaluations_frame_is_tidy(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_run(root, seed=1, hps={"lr": 0.01, "beta1": 0.9}, reached_seconds=1.0)
    write_run(root, seed=2, hps={"lr": 0.01, "beta1": 0.9}, diverged_after=1)
    loaded = load_results([root])
    evals = loaded.evaluations
    assert len(evals) == 3 + 2
    for column in ("run_id", "problem", "optimizer", "setting", "seed", "status", "evaluation"):
        assert column in evals.columns
    assert set(EVAL_COLUMNS) <= set(evals.columns)
    assert {"hp_lr", "hp_beta1"} <= set(evals.columns)
    assert set(evals["setting"]) == {"beta1=0.9, lr=0.01 | batch_size=128, num_epochs=2"}
    first = evals[(evals["seed"] == 1)].sort_values("evaluation")
    assert list(first["step"]) == [0.0, 8.0, 16.0]
    assert list(first["train_seconds"]) == [0.0, 4.0, 8.0]
    assert list(first["gradient_equivalents"]) == [0.0, 8.0, 16.0]
    runs = loaded.runs.set_index("seed")
    assert runs.loc[1, "final_test_accuracy"] == 0.9
    assert runs.loc[2, "n_evaluations"] == 2
    assert runs.loc[1, "data_source"] == "synthetic"
    assert json.loads(runs.loc[1, "hyperparameters"]) == {"beta1": 0.9, "lr": 0.01}


def test_a_folder_given_twice_is_read_once(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_run(root, seed=1)
    loaded = load_results([root, root / "mnist_mlp"])
    assert len(loaded.runs) == 1


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results([tmp_path / "nope"])


def test_an_empty_folder_gives_empty_frames(tmp_path: Path) -> None:
    loaded = load_results([tmp_path])
    assert loaded.runs.empty and loaded.evaluations.empty and loaded.skipped == []


def test_a_seed_written_twice_counts_once_the_newer_file(tmp_path: Path) -> None:
    root = tmp_path / "results"
    old = write_doc(root, make_run(seed=1, final_test=0.5), name="random_seed__1__2026-01-01.json")
    new = write_doc(root, make_run(seed=1, final_test=0.7), name="random_seed__1__2026-02-01.json")
    loaded = load_results([root])
    assert len(loaded.runs) == 1
    assert loaded.runs["final_test_accuracy"].tolist() == [0.7]
    assert [(s.path, "newer" in s.reason) for s in loaded.skipped] == [(str(old), True)]
    assert str(new) in loaded.skipped[0].reason


def test_list_valued_hyperparameters_are_kept_as_json(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_doc(root, make_run(hps={"betas": [0.9, 0.999], "lr": 0.001}))
    loaded = load_results([root])
    assert loaded.skipped == []
    assert loaded.runs["hp_betas"].tolist() == ["[0.9, 0.999]"]
    assert loaded.runs["setting"].tolist() == [
        "betas=[0.9, 0.999], lr=0.001 | batch_size=128, num_epochs=2"
    ]


def test_a_train_eval_target_is_read(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_doc(root, make_run(target=("accuracy", "train_eval", 0.5), reached_seconds=2.0))
    loaded = load_results([root])
    assert loaded.skipped == []
    assert loaded.runs["target_split"].tolist() == ["train_eval"]


def test_every_logged_minibatch_loss_is_placed_on_the_three_axes(tmp_path: Path) -> None:
    root = tmp_path / "results"
    losses = [3.0 - 0.125 * i for i in range(16)]  # evaluations at steps 0, 8 and 16
    write_run(root, seed=1, seconds_per_step=0.5, ge_per_step=4.0, minibatch=losses)
    write_run(root, seed=2, diverged_after=1, minibatch=[2.0] * 11 + [None])
    steps = load_results([root]).steps
    one = steps[steps["seed"] == 1].sort_values("step")
    assert list(one["step"]) == list(range(16))  # entry i: the loss after i updates
    assert list(one["minibatch_loss"]) == losses
    # linear between the evaluation records (step, seconds, grad-eq) = (0,0,0), (8,4,32), (16,8,64)
    assert list(one["train_seconds"]) == [0.5 * i for i in range(16)]
    assert list(one["gradient_equivalents"]) == [4.0 * i for i in range(16)]
    two = steps[steps["seed"] == 2].sort_values("step")
    assert len(two) == 12 and two["status"].eq("diverged").all()
    assert np.isnan(two["minibatch_loss"].iloc[-1])  # a null loss reads as NaN
    # past the last evaluation (step 8) nothing is invented
    assert list(two["train_seconds"].iloc[:9]) == [0.5 * i for i in range(9)]
    assert two["train_seconds"].iloc[9:].isna().all()
    assert two["gradient_equivalents"].iloc[9:].isna().all()


def test_budget_and_machine_are_read(tmp_path: Path) -> None:
    root = tmp_path / "results"
    steps = {"epochs": None, "steps": 40, "time_budget": None, "eval_every": 10}
    env = {"threads": 2, "cpu": "Example CPU 9000"}
    write_run(root, seed=1, budget=steps, environment=env)
    write_run(root, seed=2)
    timed = {"epochs": None, "steps": None, "time_budget": 60.0, "eval_every": None}
    write_run(root, seed=3, budget=timed, environment={"threads": True})
    runs = load_results([root]).runs.set_index("seed")
    assert runs.loc[1, "budget"] == "40 steps, eval every 10"
    assert runs.loc[2, "budget"] == "2 epochs"
    assert runs.loc[3, "budget"] == "60 s"
    assert runs.loc[1, "threads"] == 2 and runs.loc[1, "cpu"] == "Example CPU 9000"
    assert np.isnan(runs.loc[2, "threads"]) and runs.loc[2, "cpu"] == ""  # older files
    assert np.isnan(runs.loc[3, "threads"])  # a boolean is not a thread count


def test_malformed_minibatch_losses_are_skipped_with_a_reason(tmp_path: Path) -> None:
    root = tmp_path / "results"
    doc = make_run(seed=1)
    doc["minibatch_train_losses"] = [1.0, "2.0"]
    write_doc(root, doc)
    skipped = load_results([root]).skipped
    assert [s.reason for s in skipped] == ["minibatch_train_losses[1] is not a number ('2.0')"]


def test_per_update_losses_are_read_again_only_for_the_runs_asked(
    tmp_path: Path, monkeypatch
) -> None:
    """The loader keeps no per-update rows (a 30,000-run folder has tens of millions): each
    file is parsed once to load, and ``steps_for`` parses only the runs it is given."""
    from bdhf_bench.report import load as load_module

    root = tmp_path / "results"
    for seed in (1, 2, 3):
        write_run(root, seed=seed, minibatch=[1.0, 0.5, 0.25])
    parsed: list[str] = []
    real = load_module._read

    def counting(path, under_diverged):
        parsed.append(Path(path).name)
        return real(path, under_diverged)

    monkeypatch.setattr(load_module, "_read", counting)
    loaded = load_results([root])
    assert len(parsed) == 3
    wanted = loaded.runs.loc[loaded.runs["seed"] == 2, "run_id"]
    steps = loaded.steps_for(wanted)
    assert len(parsed) == 4 and "random_seed__2" in parsed[-1]
    assert steps["seed"].tolist() == [2, 2, 2] and steps["minibatch_loss"].tolist() == [
        1.0,
        0.5,
        0.25,
    ]


def test_a_run_file_gone_since_loading_has_no_steps_and_no_crash(tmp_path: Path) -> None:
    root = tmp_path / "results"
    paths = [write_run(root, seed=seed, minibatch=[1.0, 0.5]) for seed in (1, 2)]
    loaded = load_results([root])
    paths[0].unlink()
    steps = loaded.steps_for(loaded.runs["run_id"])
    assert steps["seed"].tolist() == [2, 2]


def test_reading_in_worker_processes_gives_the_same_frames_and_skips(tmp_path: Path) -> None:
    """A large folder is parsed in a pool: the same frames, skipped files and reduced files,
    in the same order, as read in turn (the scenario has diverged, DeepOBS-only and broken
    files, and a duplicate)."""
    from test_report_helpers import write_scenario

    root = write_scenario(tmp_path / "results")
    (root / "broken.json").write_text("{not json")
    write_run(root, seed=99)
    write_run(root, seed=99)  # the same run again: one of the two is skipped
    here = load_results([root], workers=1)
    pool = load_results([root], workers=2)
    pd.testing.assert_frame_equal(here.runs, pool.runs)
    pd.testing.assert_frame_equal(here.evaluations, pool.evaluations)
    assert here.skipped == pool.skipped and here.reduced == pool.reduced
    assert any("not valid JSON" in s.reason for s in pool.skipped)
