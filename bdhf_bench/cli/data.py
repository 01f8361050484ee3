"""``data list|check|fetch``: the data sets that problems and suites read, and where each
stands here."""

from __future__ import annotations

from pathlib import Path

import click

from .common import BadInput, data_dir_option, lookup_problem


def _data_options(func):
    """-p/--problem, -s/--suite and --data-dir, shared by the ``data`` commands."""
    func = data_dir_option(func)
    func = click.option(
        "--suite", "-s", "suite_name", help="The data sets of a suite's runs on real data."
    )(func)
    return click.option(
        "--problem", "-p", "problems", multiple=True, help="A problem's data set (repeatable)."
    )(func)


def _data_sets(problems: tuple[str, ...], suite_name: str | None) -> list[str]:
    """The data sets named by -p/-s (all of them when neither is given)."""
    from ..runner.preflight import all_datasets, files_needed, needed

    if not problems and suite_name is None:
        return all_datasets()
    names = set(needed([lookup_problem(p).name for p in problems]))
    if suite_name is not None:
        from ..runner.suite import SuiteError, load_suite

        try:
            suite = load_suite(suite_name)
        except SuiteError as exc:
            raise BadInput(str(exc)) from None
        names.update(files_needed(suite.known_specs()))
    return sorted(names)


@click.group("data")
def data_command() -> None:
    """List, check and fetch the data sets that problems and suites read."""


@data_command.command("list")
@_data_options
def data_list(problems: tuple[str, ...], suite_name: str | None, data_dir: Path | None) -> None:
    """Each data set and where it stands here: generated, present, or missing (no network)."""
    from ..runner.preflight import status

    for name in _data_sets(problems, suite_name):
        click.echo(status(name, data_dir, ask=False).line())


@data_command.command("check")
@_data_options
def data_check(problems: tuple[str, ...], suite_name: str | None, data_dir: Path | None) -> None:
    """Like list, asking each missing data set's source whether it can be downloaded now;
    exits 1 when one is missing and cannot be."""
    from ..runner.preflight import status

    missing = []
    for name in _data_sets(problems, suite_name):
        state = status(name, data_dir)
        click.echo(state.line())
        if not state.ready:
            missing.append(name)
    if missing:
        raise click.ClickException(f"missing and not downloadable now: {', '.join(missing)}")


@data_command.command("fetch")
@_data_options
def data_fetch(problems: tuple[str, ...], suite_name: str | None, data_dir: Path | None) -> None:
    """Download the missing files (checksums verified); exits 1 when one cannot be fetched."""
    from ..data import MissingDataError
    from ..data.files import read_raw
    from ..runner.context import DEFAULT_DATA_DIR
    from ..runner.preflight import status

    failed = []
    for name in _data_sets(problems, suite_name):
        state = status(name, data_dir, ask=False)
        if state.state != "missing":
            click.echo(state.line())
            continue
        try:
            read_raw(name, data_dir if data_dir is not None else DEFAULT_DATA_DIR)
        except MissingDataError as exc:
            failed.append(str(exc))
            continue
        click.echo(status(name, data_dir, ask=False).line())
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise click.ClickException(f"cannot fetch {failed[0]}{more}")
