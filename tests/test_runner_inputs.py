"""Bad input: exit code 2 and one clear line, before any work, nothing written."""

from __future__ import annotations

import pytest
from runner_helpers import cli, result_files


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "mnist_mpl"], "unknown problem 'mnist_mpl' (did you mean mnist_mlp"),
        (
            ["-p", "tiny_mlp", "-o", "adma"],
            "unknown optimizer 'adma' (did you mean adam, sfadamw?)",
        ),
        (["-p", "tiny_mlp", "--hp", "dampin=1"], "unknown hyperparameter of bdhf 'dampin'"),
        (["-p", "tiny_mlp", "--hp", "damping=abc"], "damping='abc' is not valid: must be a float"),
        (["-p", "tiny_mlp", "--hp", "damping=-1"], "damping=-1.0 is out of range"),
        (
            ["-p", "tiny_mlp", "--hp", "cg_max_iters=2.5"],
            "cg_max_iters='2.5' is not valid: must be an int",
        ),
        (["-p", "tiny_mlp", "--hp", "damping"], "--hp takes name=value, got 'damping'"),
        (["-p", "tiny_mlp", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_run_input(tmp_path, args, message):
    out = tmp_path / "results"
    res = cli("run", *args, "--output-dir", str(out), "-q")
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists() or not result_files(out)


def test_out_of_range_options_are_usage_errors(tmp_path):
    res = cli("run", "-p", "tiny_mlp", "--batch-size", "0", "--output-dir", str(tmp_path))
    assert res.exit_code == 2 and "batch-size" in res.output


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = cli("run", "-p", "tiny_mlp", "--output-dir", str(blocker / "results"), "-q")
    assert res.exit_code == 2
    assert res.output.strip().startswith("Error: cannot write to the output folder")
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[grid\nlr = [1]", "is not valid TOML"),
        ("lr = [1e-3]", "unknown key(s) ['lr']; valid: [grid], [[point]]"),
        ("[gird]\nlr = [1e-3]", "unknown key(s) ['gird']; valid: [grid], [[point]]"),
        ("description = 'x'", "needs a non-empty [grid] table"),
        ("[grid]\nlr = 0.1", "grid.lr must be a non-empty list"),
        ("[grid]\nrl = [0.1]", "unknown hyperparameter of adam 'rl' (did you mean lr?)"),
        ("[grid]\nlr = [-1.0]", "lr=-1.0 is out of range"),
        ("[grid]\nlr = [0.1]\n[grids]\nlr = [0.1]", "unknown key(s) ['grids']"),
    ],
)
def test_malformed_grid_file(tmp_path, content, message):
    grid = tmp_path / "grid.toml"
    grid.write_text(content)
    out = tmp_path / "results"
    res = cli(
        "tune", "-p", "tiny_mlp", "-o", "adam", "--grid", str(grid), "--output-dir", str(out), "-q"
    )
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.output
    assert not out.exists() or not result_files(out)
