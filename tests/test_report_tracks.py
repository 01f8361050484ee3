"""AlgoPerf's self-tuning track beside the tuned one: the untuned-against-tuned table."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from test_report_helpers import write_run

from bdhf_bench.cli import main
from bdhf_bench.runner.suite import SuiteError, load_suite


def _tracks(tmp_path: Path) -> tuple[Path, Path]:
    tuned, untuned = tmp_path / "tuned", tmp_path / "untuned"
    for seed in (1, 2, 3):
        # tuned: Adam at its selected lr reaches the target at step 10, BDHF at step 4
        write_run(tuned, optimizer="adam", hps={"lr": 0.01}, seed=seed, reached_seconds=5.0)
        write_run(tuned, optimizer="bdhf", hps={"damping": 10.0}, seed=seed, reached_seconds=2.0)
        write_run(tuned, optimizer="hf", seed=seed, reached_seconds=1.0)  # only tuned
        write_run(tuned, optimizer="momentum", seed=seed, reached_seconds=None)  # tuned missed
        write_run(untuned, optimizer="momentum", seed=seed, reached_seconds=2.5)
        # untuned: Adam at step 20; BDHF on one seed of three; SGD only here
        write_run(untuned, optimizer="adam", hps={"lr": 0.001}, seed=seed, reached_seconds=10.0)
        bdhf_reached = 3.0 if seed == 1 else None
        write_run(untuned, optimizer="bdhf", seed=seed, reached_seconds=bdhf_reached)
        write_run(untuned, optimizer="sgd", seed=seed, reached_seconds=1.5)
    return tuned, untuned


def _row(page: str, optimizer: str) -> list[str]:
    section = page.split("## Untuned against tuned", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and cells[1] == optimizer:
            return cells
    raise AssertionError(f"no row for {optimizer}")


def test_the_page_compares_each_optimizer_untuned_with_tuned(tmp_path):
    tuned, untuned = _tracks(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main, ["report", str(untuned), "--tuned", str(tuned), "--out", str(out), "--no-baselines"]
    )
    assert result.exit_code == 0, result.output
    page = (out / "leaderboard.md").read_text()
    # problem, optimizer, tuned updates, untuned updates, ratio, tuned grad-eq, untuned grad-eq
    assert _row(page, "adam")[2:5] == ["10 (3/3)", "20 (3/3)", "2.00×"]
    assert _row(page, "bdhf")[2:5] == ["4 (3/3)", "∞ (1/3)", "∞"]
    assert _row(page, "sgd")[2:5] == ["–", "3 (3/3)", "–"]
    assert _row(page, "hf")[2:5] == ["2 (3/3)", "–", "–"]
    assert _row(page, "momentum")[2:5] == ["∞ (0/3)", "5 (3/3)", "–"]
    assert (out / "tables" / "tracks.csv").is_file()


def test_without_tuned_results_there_is_no_such_section(tmp_path):
    _, untuned = _tracks(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(untuned), "--out", str(out), "--no-baselines"])
    assert result.exit_code == 0, result.output
    assert "Untuned against tuned" not in (out / "leaderboard.md").read_text()


def test_a_missing_tuned_folder_is_one_line(tmp_path):
    _, untuned = _tracks(tmp_path)
    result = CliRunner().invoke(main, ["report", str(untuned), "--tuned", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_a_suite_names_its_tuned_track(tmp_path):
    text = (
        'tuned = "results/ci"\n[[experiment]]\nproblem = "tiny_mlp"\noptimizers = ["adam"]\n'
        "steps = 2\n"
    )
    (tmp_path / "st.toml").write_text(text)
    assert load_suite(str(tmp_path / "st.toml")).tuned == Path("results/ci")
    (tmp_path / "bad.toml").write_text(text.replace('"results/ci"', "3"))
    try:
        load_suite(str(tmp_path / "bad.toml"))
    except SuiteError as exc:
        assert "tuned must be a results folder" in str(exc)
    else:
        raise AssertionError("a tuned key that is not a folder was accepted")
