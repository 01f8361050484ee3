"""DeepOBS's own analyzer on a whole results folder our runner wrote, and the move of a folder in
the older layout (problem folders beside ``_runs/``) into ``deepobs/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from deepobs import analyzer
from matplotlib import pyplot as plt
from runner_helpers import cli, load, result_files

from bdhf_bench.analyzer import deepobs_folder, register_problem_names
from bdhf_bench.report import load_results

STEPS = ("--steps", "12", "--eval-every", "4", "--device", "cpu", "-q")
SEEDS = ("--seed", "1", "--seed", "2")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:deepobs.*")


def _run(out: Path, problem: str, optimizer: str, *args: str) -> str:
    res = cli("run", "-p", problem, "-o", optimizer, *args, "--output-dir", str(out))
    assert res.exit_code == 0, res.output
    return res.output


def _write_folder(out: Path) -> None:
    """Two problems (one with accuracies, one loss-only), two optimizers, two settings, two
    seeds, and a diverged run."""
    for lr in ("1e-2", "1e-3"):
        _run(out, "tiny_mlp", "adam", "--hp", f"lr={lr}", *SEEDS, *STEPS)
        _run(out, "quadratic_deep", "adam", "--hp", f"lr={lr}", *SEEDS, *STEPS)
    _run(out, "tiny_mlp", "sgd", *SEEDS, *STEPS)
    diverged = _run(
        out, "quadratic_deep", "sgd", "--hp", "lr=1.0", "--steps", "200", "--eval-every", "5", "-q"
    )
    assert diverged.startswith("diverged:")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("analyzer") / "results"
    _write_folder(out)
    register_problem_names()  # "tiny" is no data set DeepOBS's naming tables know
    return out


def _files(root: Path, problem: str, optimizer: str) -> dict[str, list[dict]]:
    """Our result files of one problem and optimizer in the DeepOBS tree, by setting folder."""
    out: dict[str, list[dict]] = {}
    for path in result_files(root / "deepobs" / problem / optimizer):
        out.setdefault(path.parent.name, []).append(load(path))
    return out


def _mean_final(runs: list[dict], key: str) -> float:
    return float(np.mean([r[key][-1] for r in runs]))


def test_the_deepobs_tree_holds_finished_runs_only(results: Path) -> None:
    tree = deepobs_folder(results)
    assert sorted(p.name for p in results.iterdir()) == ["_diverged", "_runs", "deepobs"]
    assert sorted(p.name for p in tree.iterdir()) == ["quadratic_deep", "tiny_mlp"]
    assert sorted(p.name for p in (tree / "quadratic_deep").iterdir()) == ["adam"]
    assert all(load(p)["status"] == "finished" for p in result_files(tree))
    (diverged,) = result_files(results / "_diverged")
    assert load(diverged)["status"] == "diverged"
    # Our report still sees the diverged run (and every other one).
    loaded = load_results([results])
    assert len(loaded.runs) == 11 and not loaded.skipped
    assert loaded.runs.loc[loaded.runs["status"] == "diverged", "path"].tolist() == [str(diverged)]


def test_plot_results_table_reads_the_whole_folder(results: Path) -> None:
    table = analyzer.plot_results_table(str(deepobs_folder(results)))
    sgd = _files(results, "tiny_mlp", "sgd")
    (runs,) = sgd.values()
    assert len(runs) == 2
    assert table.loc[("tiny_mlp", "Performance"), "sgd"] == pytest.approx(
        _mean_final(runs, "test_accuracies")
    )
    # quadratic_deep has no accuracies: DeepOBS selects on the final validation loss instead.
    adam = _files(results, "quadratic_deep", "adam")
    best = min(adam.values(), key=lambda runs: _mean_final(runs, "valid_losses"))
    assert table.loc[("quadratic_deep", "Performance"), "adam"] == pytest.approx(
        _mean_final(best, "test_losses")
    )
    assert (
        table.loc[("quadratic_deep", "Hyperparameters"), "adam"] == best[0]["optimizer_hyperparams"]
    )
    # The diverged sgd run is in no aggregate.
    assert pd.isna(table.loc[("quadratic_deep", "Performance"), "sgd"])


def test_get_performance_dictionary_selects_as_deepobs_does(results: Path) -> None:
    path = deepobs_folder(results) / "tiny_mlp" / "adam"
    perf = analyzer.get_performance_dictionary(str(path), mode="final", metric="valid_losses")
    settings = _files(results, "tiny_mlp", "adam")
    assert len(settings) == 2 and all(len(runs) == 2 for runs in settings.values())
    best = min(settings.values(), key=lambda runs: _mean_final(runs, "valid_losses"))
    assert perf["Hyperparameters"] == best[0]["optimizer_hyperparams"]
    assert perf["Performance"] == pytest.approx(_mean_final(best, "test_accuracies"))


def test_plot_optimizer_performance_draws_our_curves(results: Path) -> None:
    fig, ax = analyzer.plot_optimizer_performance(
        str(deepobs_folder(results) / "tiny_mlp"), show=False, mode="final"
    )
    lines = {line.get_label(): line for line in ax[0].lines}  # ax[0]: test loss
    assert sorted(lines) == ["adam", "sgd"]
    (runs,) = _files(results, "tiny_mlp", "sgd").values()
    expected = np.mean([r["test_losses"] for r in runs], axis=0)
    np.testing.assert_allclose(lines["sgd"].get_ydata(), expected)
    plt.close(fig)


def test_plot_testset_performances_draws_every_problem(results: Path) -> None:
    fig, ax = analyzer.plot_testset_performances(
        str(deepobs_folder(results)), show=False, mode="final"
    )
    assert ax.shape == (4, 2)  # four metrics, two problems (sorted: quadratic_deep, tiny_mlp)
    assert [line.get_label() for line in ax[0, 0].lines] == ["adam"]
    assert sorted(line.get_label() for line in ax[0, 1].lines) == ["adam", "sgd"]
    plt.close(fig)


def test_registering_names_keeps_deepobs_own(results: Path) -> None:
    from deepobs.config import get_data_set_naming, get_tp_naming

    assert get_data_set_naming()["mnist"] == "MNIST" and get_tp_naming()["mlp"] == "MLP"
    assert get_data_set_naming()["tiny"] == "tiny"
    assert register_problem_names(["mnist_mlp", "smnist_lstm"]) == []  # already there


def _to_older_layout(new: Path, old: Path) -> None:
    """A copy of ``new`` as the previous version wrote it: problem folders at the top and
    finished-records naming them there; tiny_mlp/sgd is left in deepobs/ to be merged into."""
    shutil.copytree(new, old)
    for problem in ("quadratic_deep", "tiny_mlp"):
        (old / problem).mkdir()
        for optimizer in (old / "deepobs" / problem).iterdir():
            if (problem, optimizer.name) != ("tiny_mlp", "sgd"):
                optimizer.rename(old / problem / optimizer.name)
    for record in (old / "_runs").glob("*.json"):
        data = json.loads(record.read_text())
        data["result"] = data["result"].removeprefix("deepobs/")
        record.write_text(json.dumps(data))


def test_a_folder_in_the_older_layout_is_moved_once_and_resumed(results: Path, tmp_path) -> None:
    old = tmp_path / "old"
    _to_older_layout(results, old)
    before = sorted(p.relative_to(old).as_posix() for p in result_files(old))
    res = cli("run", "-p", "tiny_mlp", "-o", "adam", "--hp", "lr=1e-2", *SEEDS, *STEPS,
              "--output-dir", str(old))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "moved 2 problem folder(s) of the older layout (quadratic_deep, tiny_mlp)" in res.stderr
    # Both seeds were found finished through their old records: nothing ran again.
    assert [line.split(":")[0] for line in res.stdout.splitlines()] == ["reused", "reused"]
    assert sorted(p.name for p in old.iterdir()) == ["_diverged", "_runs", "deepobs"]
    after = sorted(p.relative_to(old).as_posix() for p in result_files(old))
    assert after == sorted(
        p if p.startswith("_diverged/") else f"deepobs/{p.removeprefix('deepobs/')}" for p in before
    )
    table = analyzer.plot_results_table(str(deepobs_folder(old)))
    assert sorted({problem for problem, _ in table.index}) == ["quadratic_deep", "tiny_mlp"]
    again = cli("run", "-p", "tiny_mlp", "-o", "sgd", *SEEDS, *STEPS, "--output-dir", str(old))
    assert again.exit_code == 0 and "moved" not in again.stderr
    assert [line.split(":")[0] for line in again.stdout.splitlines()] == ["reused", "reused"]


def test_the_deepobs_tree_is_refused_as_a_results_folder(results: Path) -> None:
    res = cli(
        "run", "-p", "tiny_mlp", "-o", "sgd", *STEPS, "--output-dir", str(results / "deepobs")
    )
    assert res.exit_code == 2
    assert f"use {results} as the results folder" in res.output
    assert not (results / "deepobs" / "_runs").exists()


def test_the_readme_analyzer_example_runs_as_written(results: Path, monkeypatch) -> None:
    """README's snippet, with only its folder pointed at this test's results, on naming tables
    that do not know our problems yet (the analyzer raised KeyError without the registration)."""
    from deepobs.config import get_data_set_naming

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in readme.split("```python\n")[1:] if "from deepobs import analyzer" in b)
    code = block.split("```", 1)[0].replace("results/ci/deepobs", str(deepobs_folder(results)))
    monkeypatch.delitem(get_data_set_naming(), "tiny")
    exec(compile(code, "README.md", "exec"), {})
    plt.close("all")
    assert "tiny" in get_data_set_naming()
