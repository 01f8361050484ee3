"""``bdhf-bench report``: the Click command over :func:`build_report` (thin on purpose)."""

from __future__ import annotations

from pathlib import Path

import click

from ..levels import LevelError, parse_level
from .baselines import default_baselines_path
from .build import ReportInputError, build_report


class _BadInput(click.ClickException):
    """Bad input: Click prints ``Error: <message>`` as one line on stderr; exit code 2."""

    exit_code = 2


def _fail(message: str) -> None:
    raise _BadInput(message)


@click.command("report")
@click.argument("results_dirs", nargs=-1, metavar="RESULTS_DIR...")
@click.option(
    "--out",
    "out_dir",
    default="reports",
    metavar="DIR",
    show_default=True,
    help="Folder for leaderboard.md, index.html, tables/ and figures/.",
)
@click.option(
    "--baselines",
    "baselines",
    default=None,
    metavar="PATH",
    help="DeepOBS baselines CSV [default: baselines/deepobs_baselines_v1.1.csv when present].",
)
@click.option("--no-baselines", is_flag=True, help="Do not show DeepOBS's published baselines.")
@click.option(
    "--level",
    "level_texts",
    multiple=True,
    metavar="PROBLEM:SPLIT_METRIC<=VALUE",
    help="Also time each optimizer to this level, e.g. mnist_autoencoder:valid_loss<=125 "
    "(repeatable; an accuracy level uses >=).",
)
@click.option(
    "--tuned",
    "tuned_dirs",
    multiple=True,
    metavar="DIR",
    help="Results of the tuned track: RESULTS_DIR is then AlgoPerf's self-tuning track (every "
    "optimizer at its defaults) and the page compares the two (repeatable).",
)
def report_command(
    results_dirs: tuple[str, ...],
    out_dir: str,
    baselines: str | None,
    no_baselines: bool,
    level_texts: tuple[str, ...],
    tuned_dirs: tuple[str, ...],
) -> None:
    """Aggregate result files into a leaderboard (markdown, self-contained HTML, CSV, PNG)."""
    try:
        milestones = [parse_level(text) for text in level_texts]
    except LevelError as err:
        _fail(str(err))
        return
    if not results_dirs:
        _fail("give at least one RESULTS_DIR")
    for folder in (*results_dirs, *tuned_dirs):
        if Path(folder).is_file():
            _fail(f"{folder!r} is a file; give the results folder that holds the result files")
        if not Path(folder).is_dir():
            _fail(f"results folder {folder!r} does not exist")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        _fail(f"--out {out_dir!r} is a file, not a folder")
    if no_baselines:
        baselines = None
    elif baselines is None:
        default = default_baselines_path()
        baselines = None if default is None else str(default)
    try:
        summary = build_report(
            results_dirs,
            out_dir,
            baselines=baselines,
            milestones=milestones,
            tuned_dirs=tuned_dirs,
        )
    except ReportInputError as err:
        _fail(str(err))
        return
    except OSError as err:  # an unwritable output folder
        _fail(f"cannot write the report to {out_dir!r}: {err.strerror or err}")
        return
    click.echo(
        f"report: {summary.n_runs} runs, {len(summary.problems)} problems, "
        f"{len(summary.optimizers)} optimizers -> {summary.out_dir}"
    )
    click.echo(f"  leaderboard: {summary.leaderboard}")
    click.echo(f"  html:        {summary.html}")
    click.echo(f"  baselines:   {summary.baselines or 'none'}")
    click.echo(f"  wrote {len(summary.written)} files:")
    for path in summary.written:
        click.echo(f"    {path}")
    if summary.removed:
        click.echo(f"  removed {len(summary.removed)} files of an earlier report:")
        for path in summary.removed:
            click.echo(f"    {path}")
    click.echo(f"skipped {len(summary.skipped)} files:")
    for item in summary.skipped:
        click.echo(f"  {item.path}: {item.reason}")
    if summary.reduced:
        click.echo(f"read {len(summary.reduced)} DeepOBS-only files in reduced form:")
        for item in summary.reduced:
            click.echo(f"  {item.path}")
    for note in summary.notes:
        click.echo(f"note: {note}")
