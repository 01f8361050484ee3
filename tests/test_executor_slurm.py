"""`--emit-slurm`: the array script's size and commands, its spec file's round trip, and one
array task run here with bash (sbatch cannot run here) followed by the same tune command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from runner_helpers import cli, load, result_files

from bdhf_bench.cli import main
from bdhf_bench.optim import get_optimizer
from bdhf_bench.problems import get_problem
from bdhf_bench.runner import Budget
from bdhf_bench.runner.slurm import read_spec_file, spec_file_path
from bdhf_bench.runner.suite import load_suite
from bdhf_bench.runner.tune import TunePlan, grid_settings

LRS = (1e-3, 1e-2, 1e-1)


def _tune_args(tmp_path: Path) -> list[str]:
    grid = tmp_path / "grid.toml"
    grid.write_text("[grid]\nlr = [" + ", ".join(map(str, LRS)) + "]\n")
    args = ["tune", "-p", "tiny_mlp", "-o", "adam", "--grid", str(grid), "--steps", "4"]
    return [*args, "--final-seeds", "2", "--output-dir", str(tmp_path / "results"), "-q"]


def _directives(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", text, flags=re.M))


def test_tune_emits_an_array_of_the_search_runs_and_a_spec_file_that_round_trips(tmp_path):
    script = tmp_path / "jobs" / "tune.sh"
    res = cli(*_tune_args(tmp_path), "--emit-slurm", str(script))
    assert res.exit_code == 0, res.output
    assert not result_files(tmp_path / "results"), "--emit-slurm runs nothing"
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n") and os.access(script, os.X_OK)
    sbatch = _directives(text)
    assert sbatch["array"] == f"0-{len(LRS) - 1}"
    assert sbatch["gres"] == "gpu:1" and sbatch["ntasks"] == "1"
    assert sbatch["output"] == f"{(tmp_path / 'jobs' / 'tune.logs').resolve()}/%A_%a.out"
    assert (tmp_path / "jobs" / "tune.logs").is_dir()  # sbatch does not create it
    specs_path = spec_file_path(script)
    assert specs_path == tmp_path / "jobs" / "tune.specs.json"
    joined = text.replace(" \\\n    ", " ").splitlines()
    (command,) = [line for line in joined if line.startswith("exec ")]
    assert command == (
        f'exec "$PYTHON" -m bdhf_bench run-spec --specs {specs_path.resolve()} '
        f'--index "$SLURM_ARRAY_TASK_ID" --output-dir {(tmp_path / "results").resolve()} --quiet'
    )
    assert "Then:    bdhf-bench tune" in text and "2 final seed(s)" in text
    # The spec file holds exactly the search runs tune would run, with the same run ids.
    entry = get_optimizer("adam")
    plan = TunePlan(
        get_problem("tiny_mlp"),
        entry,
        grid_settings(entry, {"lr": list(LRS)}, {}),
        50,
        Budget(steps=4),
        "real",
    )
    specs = read_spec_file(specs_path)
    assert specs == plan.search_specs()
    raw = json.loads(specs_path.read_text())["specs"]
    assert [e["run_id"] for e in raw] == [s.run_id for s in plan.search_specs()]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_an_array_task_runs_its_spec_and_the_tune_command_then_skips_it(tmp_path):
    script = tmp_path / "tune.sh"
    assert cli(*_tune_args(tmp_path), "--emit-slurm", str(script)).exit_code == 0
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "PYTHON": sys.executable}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (path,) = result_files(tmp_path / "results")
    assert load(path)["optimizer_hyperparams"]["lr"] == LRS[1]
    assert proc.stdout.startswith("finished: tiny_mlp / adam")
    # Task 1 again (a resubmitted array): skipped, nothing written twice.
    again = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.startswith("reused:"), again.stderr
    # The same tune command afterwards skips the array's run and does the rest.
    res = cli(*_tune_args(tmp_path))
    assert res.exit_code == 0, res.output
    skipped = [line for line in res.output.splitlines() if line.startswith("reused:")]
    assert any(f"lr={LRS[1]})" in line for line in skipped)
    assert len(result_files(tmp_path / "results")) == len(LRS) + 1


def test_run_spec_refuses_a_changed_spec_file_or_a_missing_index(tmp_path):
    script = tmp_path / "tune.sh"
    assert cli(*_tune_args(tmp_path), "--emit-slurm", str(script)).exit_code == 0
    specs_path = spec_file_path(script)
    base = ["run-spec", "--specs", str(specs_path), "--output-dir", str(tmp_path / "r")]
    res = CliRunner().invoke(main, [*base, "--index", "3"])
    assert res.exit_code == 2 and "index 3 is outside spec file" in res.output
    res = CliRunner().invoke(main, base, env={"SLURM_ARRAY_TASK_ID": "9"})
    assert res.exit_code == 2 and "index 9 is outside" in res.output
    data = json.loads(specs_path.read_text())
    data["specs"][0]["spec"]["seed"] = 7
    specs_path.write_text(json.dumps(data))
    res = CliRunner().invoke(main, [*base, "--index", "0"])
    assert res.exit_code == 2 and "does not match the recorded" in res.output
    assert "run-spec" not in CliRunner().invoke(main, ["--help"]).output  # plumbing, hidden


def test_leaderboard_emits_the_suite_runs_and_cpu_scripts_ask_for_no_gpu(tmp_path):
    script = tmp_path / "ci.sbatch"
    res = cli(
        "leaderboard",
        "--suite",
        "ci",
        "--results",
        str(tmp_path / "results"),
        "--device",
        "cpu",
        "--emit-slurm",
        str(script),
    )
    assert res.exit_code == 0, res.output
    suite = load_suite("ci")
    expected = suite.runs + [s for plan in suite.tunings for s in plan.search_specs()]
    text = script.read_text()
    assert _directives(text)["array"] == f"0-{len(expected) - 1}"
    assert "gres" not in _directives(text) and "--device cpu" in text
    assert read_spec_file(spec_file_path(script)) == expected
    assert "Then:    bdhf-bench leaderboard" in text
    assert not (tmp_path / "reports").exists()


def test_emit_slurm_takes_no_ray_options(tmp_path):
    args = _tune_args(tmp_path)
    res = CliRunner().invoke(
        main, [*args, "--emit-slurm", str(tmp_path / "s.sh"), "--address", "auto"]
    )
    assert res.exit_code == 2 and "--emit-slurm writes a script and runs nothing" in res.output
    assert not (tmp_path / "s.sh").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_an_array_task_runs_with_the_emitting_commands_threads_and_cg_check_every(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("[grid]\ndamping = [0.1, 1.0]\n")
    script = tmp_path / "tune.sh"
    res = cli("tune", "-p", "tiny_mlp", "-o", "bdhf", "--grid", str(grid), "--steps", "2",
              "--threads", "2", "--cg-check-every", "3", "--cg-compile",
              "--output-dir", str(tmp_path / "results"), "-q",
              "--emit-slurm", str(script))  # fmt: skip
    assert res.exit_code == 0, res.output
    text = script.read_text().replace(" \\\n    ", " ")
    assert "--threads 2 --cg-check-every 3 --cg-compile --quiet" in text
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "PYTHON": sys.executable}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (path,) = result_files(tmp_path / "results")
    env_record = load(path)["environment"]
    assert env_record["cg_check_every"] == 3 and env_record["threads"] == 2  # OMP says 1
    assert env_record["cg_compiled"]
    # the default leaves the command as it was
    plain = tmp_path / "plain.sh"
    assert cli(*_tune_args(tmp_path), "--emit-slurm", str(plain)).exit_code == 0
    assert not {"--cg-check-every", "--cg-compile", "--threads"} & set(plain.read_text().split())
