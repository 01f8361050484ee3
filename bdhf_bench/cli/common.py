"""What every command shares: the one-line bad-input error, lookups that refuse unknown names,
the options for data, machine and budget, and the runner's objects built from them.

Nothing heavy is imported at module level: ``bdhf-bench report`` and the report's worker
processes (which import the command line again) must not load torch.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import torch


class BadInput(click.ClickException):
    """Bad input: one line on stderr, exit code 2 (Click's usage-error code)."""

    exit_code = 2


def lookup_problem(name: str):
    """The registered problem ``name``, or one line naming the valid ones."""
    from ..problems import get_problem

    try:
        return get_problem(name)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def lookup_optimizer(name: str):
    """The entry, refused in one line before anything is created when it is unknown or its
    library is not installed."""
    from ..optim import get_optimizer

    try:
        entry = get_optimizer(name)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    missing = entry.missing_package()
    if missing is not None:
        raise BadInput(f"optimizer {name} needs the package {missing}: pip install {missing}")
    return entry


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``--hp name=value`` pairs as strings (checked where they are resolved, once)."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BadInput(f"--hp takes name=value, got {pair!r}")
        name = name.strip()
        if name in overrides:
            raise BadInput(
                f"--hp {name} given twice ({overrides[name]!r} and {value.strip()!r}); "
                "give each hyperparameter once"
            )
        overrides[name] = value.strip()
    return overrides


def resolve_setting(entry, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``entry``'s setting with ``overrides``, resolved once for every run made from it."""
    try:
        return entry.resolve(overrides)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def parse_device(name: str | None) -> torch.device:
    """``--device`` as a device of this machine (default: its GPU when it has one)."""
    import torch

    from ..runner import default_device

    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device {name!r}; valid: cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise BadInput(f"unsupported device {name!r}; valid: cpu, cuda, cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"device {name!r} asked for, but this machine has no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadInput(
                f"device {name!r} does not exist; "
                f"this machine has {torch.cuda.device_count()} GPU(s)"
            )
    return device


def open_store(path: Path):
    """The results folder, refused in one line when it cannot be one."""
    from ..runner import OutputFolderError, ResultStore

    try:
        store = ResultStore(path)
    except OutputFolderError as exc:
        raise BadInput(str(exc)) from None
    if store.moved:
        click.echo(
            f"{path}: moved {len(store.moved)} problem folder(s) of the older layout "
            f"({', '.join(store.moved)}) into {store.deepobs_root}, the folder DeepOBS's "
            "analyzer reads",
            err=True,
        )
    return store


def make_budget(problem, epochs: int | None, steps: int | None, seconds: float | None):
    """The run's budget; the problem's epochs when none is given."""
    from ..runner import Budget

    if epochs is None and steps is None and seconds is None:
        epochs = problem.num_epochs
    try:
        return Budget(epochs=epochs, steps=steps, seconds=seconds)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def run_errors() -> tuple[type[Exception], ...]:
    """The errors with which a run refuses to start (``except run_errors()``)."""
    from ..data import CorruptDataError, MissingDataError
    from ..runner import RunInputError
    from ..runner.run import OtherContextError

    return MissingDataError, CorruptDataError, RunInputError, OtherContextError


def run_error(exc: Exception) -> click.ClickException:
    """A run that could not start: a missing data set offline exits 1 (the input was fine), a
    corrupt data file or an impossible setting exits 2."""
    from ..data import MissingDataError
    from ..runner.run import OtherContextError

    if isinstance(exc, MissingDataError | OtherContextError):
        return click.ClickException(str(exc))
    return BadInput(str(exc))


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and inf (which Click's FloatRange lets through)."""

    def convert(self, value: Any, param, ctx) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _existing_data_dir(ctx: click.Context, param: click.Parameter, value: Path | None):
    """--data-dir must name an existing folder: a mistyped path must not grow folders (the
    downloads would create it, anywhere, before failing)."""
    if value is not None and not value.is_dir():
        what = "is not a folder" if value.exists() else "does not exist"
        raise BadInput(
            f"data folder {value} {what}; create it, or leave out --data-dir to use ./data_deepobs"
        )
    return value


def data_dir_option(func):
    """--data-dir, checked to be an existing folder."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        callback=_existing_data_dir,
        help="Folder with the data sets in DeepOBS's layout (default: ./data_deepobs).",
    )(func)


@dataclass(frozen=True)
class ExecutionFlags:
    """How this command's runs execute here (--threads, --rerun, --cg-check-every,
    --cg-compile): part of no run's identity."""

    threads: int | None = None
    rerun: bool = False
    cg_check_every: int = 1
    cg_compile: bool = False

    def execution(self, device: torch.device, data_dir: Path | None, progress: bool):
        """The runner's ``Execution`` on ``device`` with these settings."""
        from ..runner import Execution

        return Execution(
            device=device,
            data_dir=data_dir,
            progress=progress,
            threads=self.threads,
            rerun_before=time.time() if self.rerun else None,
            cg_check_every=self.cg_check_every,
            cg_compiled=self.cg_compile,
        )


def execution_flag_options(func):
    """--threads, --cg-check-every, --cg-compile and --rerun, shared by ``run``, ``tune`` and
    ``leaderboard``, which receive them as one ``flags: ExecutionFlags``."""

    @functools.wraps(func)
    def command(*args, threads, rerun, cg_check_every, cg_compile, **kwargs):
        flags = ExecutionFlags(threads, rerun, cg_check_every, cg_compile)
        return func(*args, flags=flags, **kwargs)

    command = click.option(
        "--cg-compile",
        is_flag=True,
        help="bdhf/hf: run each CG iteration's vector work as one compiled function (the same "
        "steps to rounding; compiles once per run). For GPUs, where each small kernel is a launch.",
    )(command)
    command = click.option(
        "--cg-check-every",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="bdhf/hf: read CG's active-block mask every K iterations (the same steps; up to "
        "K-1 more products per block, counted). For GPUs, where each read waits for the device.",
    )(command)
    command = click.option(
        "--rerun",
        is_flag=True,
        help="Redo runs finished before this command instead of reusing their results.",
    )(command)
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        help="torch threads per run (default: torch's; 1 per worker with --workers > 1).",
    )(command)


def preflight_or_fail(
    what: str, specs, data_dir: Path | None, device: torch.device | None, note: str = ""
) -> None:
    """Refuse, in one line and before anything is created, runs that cannot run here
    (``note`` follows a device problem)."""
    from ..runner.preflight import device_problem, preflight

    problems = preflight(specs, data_dir, device)
    if problems and note and device is not None and device_problem(device):
        problems[0] += note
    if problems:
        raise click.ClickException(f"{what} cannot start: {'; '.join(problems)}")
