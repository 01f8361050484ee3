"""``leaderboard``: run a suite (resuming what exists), then regenerate its report."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from .common import (
    BadInput,
    ExecutionFlags,
    data_dir_option,
    execution_flag_options,
    open_store,
    preflight_or_fail,
    run_error,
    run_errors,
)
from .executors import executor_options, make_executor, rerun_command, write_slurm_script


@click.command()
@click.option("--suite", "-s", "suite_name", required=True, help="Suite name (runners/) or file.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Runs at once (default: the suite's `workers`, at most this machine's cores; else 1).",
)
@click.option("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one).")
@data_dir_option
@click.option(
    "--results", type=click.Path(file_okay=False, path_type=Path), help="Override the folder."
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@execution_flag_options
@executor_options
def leaderboard(
    suite_name: str,
    workers: int | None,
    executor_kind: str,
    address: str | None,
    verbose: bool,
    emit_slurm: Path | None,
    device: str | None,
    data_dir: Path | None,
    results: Path | None,
    out: Path | None,
    quiet: bool,
    flags: ExecutionFlags,
) -> None:
    """Run a suite (resuming what exists) and regenerate its leaderboard report."""
    import torch

    from ..runner.suite import SuiteError, load_suite, run_suite

    try:
        suite = load_suite(suite_name)
    except SuiteError as exc:
        raise BadInput(str(exc)) from None
    results = results or suite.results
    out = out or suite.report
    specs = suite.known_specs()
    if emit_slurm is not None:
        then = (
            f"{rerun_command('leaderboard')}\n#          skips these runs, runs the final seeds "
            "of any tuned optimizer and writes the leaderboard."
        )
        title = f"suite {suite.name} (fixed runs and tuning searches)"
        ray = executor_kind != "local" or address is not None
        write_slurm_script(emit_slurm, specs, results, device, data_dir, title, then, ray, flags)
        return
    local = executor_kind == "local"
    device = device or suite.device
    check = torch.device(device) if local and device is not None else None
    note = f" (suite {suite.name} says device = {suite.device!r}; --device cpu runs it here)"
    preflight_or_fail(f"suite {suite.name}", specs, data_dir, check, note if suite.device else "")
    if workers is None:
        workers = min(suite.workers, cores()) if local else 1
    executor = make_executor(
        executor_kind, address, workers, device, data_dir, quiet, flags, verbose
    )
    store = open_store(results)
    started = time.monotonic()
    at_once = f", {workers} at a time" if workers > 1 else ""
    click.echo(f"suite {suite.name}: {suite.size()} runs -> {results}{at_once}")
    try:
        outcomes = run_suite(suite, store, executor, echo=click.echo)
    except run_errors() as exc:
        raise run_error(exc) from None
    failed = [o for o in outcomes if o.status == "failed"]
    summary = _write_report(suite, results, out)
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    click.echo(f"elapsed:     {minutes}m{seconds:02d}s (runs and report)")
    for item in summary.skipped:
        click.echo(f"skipped {item.path}: {item.reason}")
    if failed:
        raise click.ClickException(f"{len(failed)} run(s) failed (see above)")


def _write_report(suite, results: Path, out: Path):
    """The suite's report from ``results`` into ``out``, saying where it is and what it left
    out; the report's summary."""
    from ..report.baselines import default_baselines_path
    from ..report.build import ReportInputError, build_report
    from ..runner.environment import changed_tracked_files

    tuned = suite.tuned
    try:
        summary = build_report(
            [results],
            out,
            baselines=default_baselines_path(),
            milestones=suite.levels,
            tuned_dirs=[tuned] if tuned is not None and tuned.is_dir() else [],
        )
    except ReportInputError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"leaderboard: {summary.leaderboard}")
    click.echo(f"html:        {summary.html}")
    tracked = changed_tracked_files(Path(out))
    if tracked:
        click.echo(
            f"note: the report rewrote {len(tracked)} file(s) that git tracks under {out} "
            "(`git diff` shows what changed); results record the code's revision, which this "
            "does not mark dirty"
        )
    if tuned is not None and not tuned.is_dir():
        click.echo(
            f"note: no tuned results at {tuned}: the untuned-against-tuned table "
            "is left out (run that suite first)"
        )
    return summary


def cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
