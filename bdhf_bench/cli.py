"""The ``bdhf-bench`` command line: thin Click commands over the library modules.

Every input is checked before any work starts; bad input exits with code 2 and one line saying
what was wrong and what is valid.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import click
import torch

from . import __version__
from .benchmarks import commands as benchmark_commands
from .data import CorruptDataError, MissingDataError
from .runner.spec import MAX_SEED, RunInputError


class BadInput(click.ClickException):
    """Bad input: one line on stderr, exit code 2 (Click's usage-error code)."""

    exit_code = 2


def _problem(name: str):
    from .problems import get_problem

    try:
        return get_problem(name)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _optimizer(name: str):
    """The entry, refused in one line before anything is created when it is unknown or its
    library is not installed."""
    from .optim import get_optimizer

    try:
        entry = get_optimizer(name)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    missing = entry.missing_package()
    if missing is not None:
        raise BadInput(f"optimizer {name} needs the package {missing}: pip install {missing}")
    return entry


def _hyperparameters(entry, pairs: Sequence[str]) -> dict[str, Any]:
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
    try:
        entry.resolve(overrides)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return overrides


def _device(name: str | None) -> torch.device:
    from .runner import default_device

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


def _store(path: Path):
    from .runner import OutputFolderError, ResultStore

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


def _budget(problem, epochs: int | None, steps: int | None, seconds: float | None):
    from .runner import Budget

    if epochs is None and steps is None and seconds is None:
        epochs = problem.num_epochs
    try:
        return Budget(epochs=epochs, steps=steps, seconds=seconds)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _run_error(exc: Exception) -> click.ClickException:
    """A run that could not start: a missing data set offline exits 1 (the input was fine), a
    corrupt data file or an impossible setting exits 2."""
    from .runner.run import OtherContextError

    if isinstance(exc, MissingDataError | OtherContextError):
        return click.ClickException(str(exc))
    assert isinstance(exc, CorruptDataError | RunInputError)
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


def _data_dir_option(func):
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        callback=_existing_data_dir,
        help="Folder with the data sets in DeepOBS's layout (default: ./data_deepobs).",
    )(func)


@dataclass(frozen=True)
class _Machine:
    """How this command's runs execute here (--threads, --rerun, --cg-check-every,
    --cg-compile): part of no run's identity."""

    threads: int | None = None
    rerun: bool = False
    cg_check_every: int = 1
    cg_compile: bool = False

    def execution(self, device: torch.device, data_dir: Path | None, progress: bool):
        """The runner's ``Execution`` on ``device`` with these settings."""
        from .runner import Execution

        return Execution(
            device=device,
            data_dir=data_dir,
            progress=progress,
            threads=self.threads,
            rerun_before=time.time() if self.rerun else None,
            cg_check_every=self.cg_check_every,
            cg_compiled=self.cg_compile,
        )


def _machine_options(func):
    """--threads, --cg-check-every, --cg-compile and --rerun, shared by ``run``, ``tune`` and
    ``leaderboard``, which receive them as one ``machine: _Machine``."""

    @functools.wraps(func)
    def command(*args, threads, rerun, cg_check_every, cg_compile, **kwargs):
        machine = _Machine(threads, rerun, cg_check_every, cg_compile)
        return func(*args, machine=machine, **kwargs)

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


def _preflight(
    what: str, specs, data_dir: Path | None, device: torch.device | None, note: str = ""
) -> None:
    """Refuse, in one line and before anything is created, runs that cannot run here
    (``note`` follows a device problem)."""
    from .runner.preflight import device_problem, preflight

    problems = preflight(specs, data_dir, device)
    if problems and note and device is not None and device_problem(device):
        problems[0] += note
    if problems:
        raise click.ClickException(f"{what} cannot start: {'; '.join(problems)}")


def _executor_options(func):
    """--executor, --address and --emit-slurm, shared by ``tune`` and ``leaderboard``."""
    decorators = [
        click.option(
            "--executor",
            "executor_kind",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="Run here (--workers at a time) or as Ray tasks, one GPU (or CPU) each.",
        ),
        click.option(
            "--address",
            metavar="auto|HOST:PORT",
            help="Ray cluster to join (default: start a local one for this command).",
        ),
        click.option(
            "--verbose",
            "-v",
            is_flag=True,
            help="Progress lines name every hyperparameter (default: those off their defaults).",
        ),
        click.option(
            "--emit-slurm",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE",
            help="Write a SLURM array job script (a run per task) and its spec file; run nothing.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _device_name(name: str | None) -> str | None:
    """A device name checked for form only (the runs use another machine's devices)."""
    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device {name!r}; valid: cpu, cuda") from None
    if device.type not in ("cpu", "cuda") or device.index is not None:
        raise BadInput(f"unsupported device {name!r} here; valid: cpu, cuda")
    return name


def _executor(
    kind: str,
    address: str | None,
    workers: int,
    device: str | None,
    data_dir,
    quiet: bool,
    machine: _Machine,
    verbose: bool = False,
):
    """The executor for --executor: LocalExecutor, or a started RayExecutor (so that a missing
    Ray or an unreachable cluster fails before any run), closed with the command."""
    if kind == "local":
        from .runner.executors import LocalExecutor

        if address is not None:
            raise BadInput("--address is for --executor ray")
        execution = machine.execution(_device(device), data_dir, not quiet and workers == 1)
        return LocalExecutor(workers, execution, echo=click.echo, verbose=verbose)
    from .runner.ray_executor import RayClusterError, RayExecutor, RayUnavailableError

    if workers != 1:
        raise BadInput("--workers is for --executor local; Ray runs as many as the cluster fits")
    execution = machine.execution(torch.device("cpu"), data_dir, progress=False)
    executor = RayExecutor(
        execution, address, echo=click.echo, device=_device_name(device), verbose=verbose
    )
    try:
        executor.start()
    except (RayUnavailableError, RayClusterError) as exc:
        raise BadInput(str(exc)) from None
    click.get_current_context().call_on_close(executor.close)
    click.echo(executor.describe())
    return executor


def _emit_slurm(
    path: Path,
    specs,
    results: Path,
    device: str | None,
    data_dir,
    title: str,
    then: str,
    ray: bool,
    machine: _Machine,
) -> None:
    """Write the SLURM script and spec file for ``specs`` instead of running them."""
    from .runner.slurm import write_slurm

    if ray:
        raise BadInput("--emit-slurm writes a script and runs nothing; drop --executor/--address")
    if not specs:
        raise BadInput("no runs to put in a SLURM script")
    try:
        script, spec_file = write_slurm(
            path,
            specs,
            results,
            title=title,
            then=then,
            data_dir=data_dir,
            device=_device_name(device),
            threads=machine.threads,
            cg_check_every=machine.cg_check_every,
            cg_compiled=machine.cg_compile,
        )
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"SLURM array of {len(specs)} run(s): sbatch {script}  (specs: {spec_file})")


def _rerun_command(command: str) -> str:
    """This command line without --emit-slurm (when it is one), for the script's header."""
    import shlex
    import sys

    argv = sys.argv[1:]
    if Path(sys.argv[0]).name not in ("bdhf-bench", "__main__.py") or command not in argv:
        return f"bdhf-bench {command} <the same options, without --emit-slurm>"
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--emit-slurm":
            skip = True
        elif not arg.startswith("--emit-slurm="):
            kept.append(arg)
    return shlex.join(["bdhf-bench", *kept])


def _run_options(func):
    """Options shared by ``run`` and ``tune``."""
    decorators = [
        click.option("--problem", "-p", required=True, help="Problem name (see `list problems`)."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Default: the problem's."),
        click.option("--epochs", type=click.IntRange(min=1), help="Budget in epochs."),
        click.option("--steps", type=click.IntRange(min=1), help="Budget in optimizer steps."),
        click.option(
            "--time-budget",
            type=FiniteFloat(min=0, min_open=True),
            help="Budget in seconds of training time (evaluations excluded).",
        ),
        click.option(
            "--eval-every",
            type=click.IntRange(min=1),
            help="Evaluate every N steps (default: at epoch boundaries).",
        ),
        click.option(
            "--weight-decay",
            type=FiniteFloat(min=0),
            help="L2 factor (default: the problem's, as DeepOBS).",
        ),
        click.option("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one)."),
        click.option(
            "--data",
            type=click.Choice(["real", "synthetic"]),
            default="real",
            show_default=True,
            help="Real data sets, or data generated from the seed with the real shapes.",
        ),
        _data_dir_option,
        _machine_options,
        click.option(
            "--output-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("results"),
            show_default=True,
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress lines."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


class _Commands(click.Group):
    """A group that imports some commands only when they are used (the report command pulls
    in pandas and seaborn, which every other command can do without)."""

    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "report": ("bdhf_bench.report.cli", "report_command")
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attr = self.lazy[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        """Ctrl-C says what was kept (Click alone prints "Aborted!"); exit code 130."""
        from .runner.interrupt import RunInterrupted

        try:
            return super().invoke(ctx)
        except RunInterrupted as exc:
            click.echo(str(exc), err=True)
            ctx.exit(130)
        except KeyboardInterrupt:
            click.echo(
                "interrupted: finished runs are kept; the same command resumes each unfinished "
                "run from its last checkpoint",
                err=True,
            )
            ctx.exit(130)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bdhf-bench")
def main() -> None:
    """Benchmark block-diagonal Hessian-free optimization against HF and Adam, DeepOBS-style."""


@main.command("list")
@click.argument("what", type=click.Choice(["problems", "optimizers"]))
def list_command(what: str) -> None:
    """List the registered problems or optimizers, one line each."""
    if what == "problems":
        from .problems import get_problem, problem_names

        for name in problem_names():
            click.echo(f"{name:<20} {get_problem(name).description}")
    else:
        from .optim import get_optimizer, optimizer_names

        for name in optimizer_names():
            click.echo(f"{name:<20} {get_optimizer(name).description}")


def _outcome_line(out) -> str:
    from .runner.console import outcome_line

    line = outcome_line(out)
    return f"{line} -> {out.path}" if out.status != "failed" and out.path else line


@main.command()
@_run_options
@click.option("--optimizer", "-o", default="bdhf", show_default=True, help="Optimizer name.")
@click.option(
    "--seed",
    "seeds",
    type=click.IntRange(0, MAX_SEED),
    multiple=True,
    help="Random seed (repeatable; default 42).",
)
@click.option(
    "--hp", "hps", multiple=True, metavar="NAME=VALUE", help="Hyperparameter (repeatable)."
)
def run(
    problem: str,
    optimizer: str,
    seeds: tuple[int, ...],
    hps: tuple[str, ...],
    batch_size: int | None,
    epochs: int | None,
    steps: int | None,
    time_budget: float | None,
    eval_every: int | None,
    weight_decay: float | None,
    device: str | None,
    data: str,
    data_dir: Path | None,
    machine: _Machine,
    output_dir: Path,
    quiet: bool,
) -> None:
    """Train one optimizer on one problem, one run per seed; results as DeepOBS JSON."""
    from .runner import RunSpec, run_one
    from .runner.run import OtherContextError

    prob = _problem(problem)
    entry = _optimizer(optimizer)
    overrides = _hyperparameters(entry, hps)
    dev = _device(device)
    budget = _budget(prob, epochs, steps, time_budget)
    specs = [
        RunSpec(
            problem=prob.name,
            optimizer=entry.name,
            hyperparameters=entry.resolve(overrides),
            seed=seed,
            batch_size=batch_size or prob.batch_size,
            budget=budget,
            eval_every=eval_every,
            data=data,
            weight_decay=weight_decay,
        )
        for seed in (seeds or (42,))
    ]
    _preflight("run", specs, data_dir, None)
    store = _store(output_dir)
    execution = machine.execution(dev, data_dir, progress=not quiet)
    for spec in specs:
        try:
            out = run_one(spec, store, execution)
        except (MissingDataError, CorruptDataError, RunInputError, OtherContextError) as exc:
            raise _run_error(exc) from None
        if out.status == "busy":
            click.echo(f"busy: {spec.label()} is running in another process; skipped")
            continue
        click.echo(_outcome_line(out))


@main.command()
@_run_options
@click.option("--optimizer", "-o", required=True, help="Optimizer name.")
@click.option(
    "--grid",
    "grid_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML grid file ([grid] lists, optional [fixed]); default: the optimizer's grid.",
)
@click.option(
    "--random-trials",
    type=click.IntRange(min=1),
    help="Random search with this many trials over the grid's range instead of the grid.",
)
@click.option(
    "--search-seed",
    type=click.IntRange(0, MAX_SEED),
    default=0,
    show_default=True,
    help="Random search seed.",
)
@click.option(
    "--tuning-seed",
    type=click.IntRange(0, MAX_SEED),
    default=42,
    show_default=True,
    help="Seed of the search runs.",
)
@click.option(
    "--final-seeds",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Seeds (tuning seed onwards) for the rerun of the best setting (DeepOBS: 10).",
)
@click.option("--hp", "hps", multiple=True, metavar="NAME=VALUE", help="Fixed hyperparameter.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Runs at once."
)
@_executor_options
def tune(
    problem: str,
    optimizer: str,
    grid_file: Path | None,
    random_trials: int | None,
    search_seed: int,
    tuning_seed: int,
    final_seeds: int,
    hps: tuple[str, ...],
    workers: int,
    executor_kind: str,
    address: str | None,
    verbose: bool,
    emit_slurm: Path | None,
    batch_size: int | None,
    epochs: int | None,
    steps: int | None,
    time_budget: float | None,
    eval_every: int | None,
    weight_decay: float | None,
    device: str | None,
    data: str,
    data_dir: Path | None,
    machine: _Machine,
    output_dir: Path,
    quiet: bool,
) -> None:
    """Tune an optimizer on a problem (DeepOBS protocol): search on one seed, select on the
    validation metric, rerun the best setting with more seeds."""
    from .runner.tune import (
        GridFileError,
        TunePlan,
        grid_settings,
        load_grid_file,
        random_settings,
    )

    prob = _problem(problem)
    entry = _optimizer(optimizer)
    fixed = _hyperparameters(entry, hps)
    if final_seeds and tuning_seed + final_seeds - 1 > MAX_SEED:
        raise BadInput(
            f"--final-seeds {final_seeds} from --tuning-seed {tuning_seed} passes the largest "
            f"seed, {MAX_SEED}; give a smaller tuning seed or fewer final seeds"
        )
    points: list[dict] = []
    if grid_file is not None:
        try:
            grid, file_fixed, points = load_grid_file(grid_file, entry)
        except GridFileError as exc:
            raise BadInput(str(exc)) from None
        fixed = {**file_fixed, **fixed}
    else:
        grid = dict(entry.grid)
        if not grid:
            raise BadInput(f"optimizer {entry.name!r} has no default grid; give --grid FILE")
    if random_trials and points:
        raise BadInput(
            "random search samples a [grid]; a grid file with [[point]] tables lists "
            "its settings itself, so leave out --random"
        )
    try:
        settings = (
            random_settings(entry, grid, fixed, random_trials, search_seed)
            if random_trials
            else grid_settings(entry, grid, fixed, points)
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    plan = TunePlan(
        problem=prob,
        entry=entry,
        settings=settings,
        batch_size=batch_size or prob.batch_size,
        budget=_budget(prob, epochs, steps, time_budget),
        data=data,
        eval_every=eval_every,
        weight_decay=weight_decay,
        tuning_seed=tuning_seed,
        final_seeds=list(range(tuning_seed, tuning_seed + final_seeds)),
    )
    if emit_slurm is not None:
        then = (
            f"{_rerun_command('tune')}\n#          skips these search runs, selects on validation "
            f"and runs the {final_seeds} final seed(s)."
        )
        title = f"the search of tuning {entry.name} on {prob.name}"
        specs = plan.search_specs()
        ray = executor_kind != "local" or address is not None
        _emit_slurm(
            emit_slurm,
            specs,
            output_dir,
            device,
            data_dir,
            title,
            then,
            ray,
            machine,
        )
        return
    _preflight("tune", plan.search_specs(), data_dir, None)
    executor = _executor(
        executor_kind,
        address,
        workers,
        device,
        data_dir,
        quiet,
        machine,
        verbose,
    )
    store = _store(output_dir)
    click.echo(f"search: {len(settings)} settings of {entry.name} on {prob.name}")
    try:
        outcomes = executor.run(plan.search_specs(), store)
    except (MissingDataError, CorruptDataError, RunInputError) as exc:
        raise _run_error(exc) from None
    best, score = plan.select(outcomes)
    metric = "valid accuracy" if prob.correct is not None else "valid loss"
    shown = score if prob.correct is not None else -score
    click.echo(f"best on {metric} ({shown:.4g}): {best}")
    if final_seeds:
        final = executor.run(plan.final_specs(best), store)
        kept = sorted({str(out.path.parent) for out in final if out.path is not None})
        for folder in kept:  # each run was printed as it ended; where they are, once
            click.echo(f"final runs: {folder}")
        outcomes = [*outcomes, *final]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise click.ClickException(f"{len(failed)} run(s) failed (see above)")


@main.command()
@click.option("--problem", "-p", required=True, help="Problem name.")
@click.option(
    "--optimizer",
    "-o",
    "optimizers",
    multiple=True,
    help="Optimizer (repeatable; default: every registered one). Adam is always measured.",
)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), help="Default: the problem's.")
@click.option("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one).")
@click.option(
    "--data",
    type=click.Choice(["real", "synthetic"]),
    default="synthetic",
    show_default=True,
)
@_data_dir_option
def overhead(
    problem: str,
    optimizers: tuple[str, ...],
    steps: int,
    warmup: int,
    batch_size: int | None,
    device: str | None,
    data: str,
    data_dir: Path | None,
) -> None:
    """Per-step time of each optimizer relative to Adam, with its pass counts."""
    from .optim import optimizer_names
    from .runner.overhead import format_rows, measure_overhead

    prob = _problem(problem)
    names = list(optimizers) or optimizer_names()
    for name in names:
        _optimizer(name)
    dev = _device(device)
    try:
        rows = measure_overhead(
            prob.name,
            [(n, {}) for n in names],
            device=dev,
            batch_size=batch_size,
            data=data,
            data_dir=data_dir,
            steps=steps,
            warmup=warmup,
        )
    except (MissingDataError, CorruptDataError, RunInputError) as exc:
        raise _run_error(exc) from None
    click.echo(f"{prob.name}, batch {batch_size or prob.batch_size}, {dev}, {steps} steps")
    click.echo(format_rows(rows))


@main.command()
@click.option("--suite", "-s", "suite_name", required=True, help="Suite name (runners/) or file.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Runs at once (default: the suite's `workers`, at most this machine's cores; else 1).",
)
@click.option("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one).")
@_data_dir_option
@click.option(
    "--results", type=click.Path(file_okay=False, path_type=Path), help="Override the folder."
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@_machine_options
@_executor_options
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
    machine: _Machine,
) -> None:
    """Run a suite (resuming what exists) and regenerate its leaderboard report."""
    from .report.baselines import default_baselines_path
    from .report.build import ReportInputError, build_report
    from .runner.environment import changed_tracked_files
    from .runner.suite import SuiteError, load_suite, run_suite

    try:
        suite = load_suite(suite_name)
    except SuiteError as exc:
        raise BadInput(str(exc)) from None
    results = results or suite.results
    out = out or suite.report
    if emit_slurm is not None:
        specs = suite.runs + [s for plan in suite.tunings for s in plan.search_specs()]
        then = (
            f"{_rerun_command('leaderboard')}\n#          skips these runs, runs the final seeds "
            "of any tuned optimizer and writes the leaderboard."
        )
        title = f"suite {suite.name} (fixed runs and tuning searches)"
        ray = executor_kind != "local" or address is not None
        _emit_slurm(
            emit_slurm,
            specs,
            results,
            device,
            data_dir,
            title,
            then,
            ray,
            machine,
        )
        return
    specs = suite.runs + [s for plan in suite.tunings for s in plan.search_specs()]
    local = executor_kind == "local"
    device = device or suite.device
    check = torch.device(device) if local and device is not None else None
    note = f" (suite {suite.name} says device = {suite.device!r}; --device cpu runs it here)"
    _preflight(f"suite {suite.name}", specs, data_dir, check, note if suite.device else "")
    if workers is None:
        workers = min(suite.workers, _cores()) if local else 1
    executor = _executor(
        executor_kind,
        address,
        workers,
        device,
        data_dir,
        quiet,
        machine,
        verbose,
    )
    store = _store(results)
    started = time.monotonic()
    at_once = f", {workers} at a time" if workers > 1 else ""
    click.echo(f"suite {suite.name}: {suite.size()} runs -> {results}{at_once}")
    try:
        outcomes = run_suite(suite, store, executor, echo=click.echo)
    except (MissingDataError, CorruptDataError, RunInputError) as exc:
        raise _run_error(exc) from None
    failed = [o for o in outcomes if o.status == "failed"]
    try:
        summary = build_report(
            [results],
            out,
            baselines=default_baselines_path(),
            milestones=suite.levels,
            tuned_dirs=[suite.tuned] if suite.tuned is not None and suite.tuned.is_dir() else [],
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
    if suite.tuned is not None and not suite.tuned.is_dir():
        click.echo(
            f"note: no tuned results at {suite.tuned}: the untuned-against-tuned table "
            "is left out (run that suite first)"
        )
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    click.echo(f"elapsed:     {minutes}m{seconds:02d}s (runs and report)")
    for item in summary.skipped:
        click.echo(f"skipped {item.path}: {item.reason}")
    if failed:
        raise click.ClickException(f"{len(failed)} run(s) failed (see above)")


def _cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _data_options(func):
    """-p/--problem, -s/--suite and --data-dir, shared by the ``data`` commands."""
    func = _data_dir_option(func)
    func = click.option(
        "--suite", "-s", "suite_name", help="The data sets of a suite's runs on real data."
    )(func)
    return click.option(
        "--problem", "-p", "problems", multiple=True, help="A problem's data set (repeatable)."
    )(func)


def _data_sets(problems: tuple[str, ...], suite_name: str | None) -> list[str]:
    """The data sets named by -p/-s (all of them when neither is given)."""
    from .runner.preflight import all_datasets, files_needed, needed

    if not problems and suite_name is None:
        return all_datasets()
    names = set(needed([_problem(p).name for p in problems]))
    if suite_name is not None:
        from .runner.suite import SuiteError, load_suite

        try:
            suite = load_suite(suite_name)
        except SuiteError as exc:
            raise BadInput(str(exc)) from None
        specs = suite.runs + [s for t in suite.tunings for s in t.search_specs()]
        names.update(files_needed(specs))
    return sorted(names)


@main.group("data")
def data_command() -> None:
    """List, check and fetch the data sets that problems and suites read."""


@data_command.command("list")
@_data_options
def data_list(problems: tuple[str, ...], suite_name: str | None, data_dir: Path | None) -> None:
    """Each data set and where it stands here: generated, present, or missing (no network)."""
    from .runner.preflight import status

    for name in _data_sets(problems, suite_name):
        click.echo(status(name, data_dir, ask=False).line())


@data_command.command("check")
@_data_options
def data_check(problems: tuple[str, ...], suite_name: str | None, data_dir: Path | None) -> None:
    """Like list, asking each missing data set's source whether it can be downloaded now;
    exits 1 when one is missing and cannot be."""
    from .runner.preflight import status

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
    from .data import MissingDataError
    from .data.files import read_raw
    from .runner.context import DEFAULT_DATA_DIR
    from .runner.preflight import status

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


@main.command("run-spec", hidden=True)
@click.option(
    "--specs",
    "specs_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Spec file written by --emit-slurm.",
)
@click.option(
    "--index",
    type=click.IntRange(min=0),
    required=True,
    envvar="SLURM_ARRAY_TASK_ID",
    help="Which spec (default: $SLURM_ARRAY_TASK_ID).",
)
@click.option("--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one).")
@_data_dir_option
@click.option("--threads", type=click.IntRange(min=1), help="torch threads (as for run).")
@click.option(
    "--cg-check-every",
    type=click.IntRange(min=1),
    default=1,
    help="bdhf/hf: read CG's active-block mask every K iterations (as for run).",
)
@click.option("--cg-compile", is_flag=True, help="bdhf/hf: CG's compiled iteration (as for run).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def run_spec(
    specs_file: Path,
    index: int,
    output_dir: Path,
    device: str | None,
    data_dir: Path | None,
    threads: int | None,
    cg_check_every: int,
    cg_compile: bool,
    quiet: bool,
) -> None:
    """Plumbing for SLURM array tasks: run spec INDEX of a spec file (skipped when finished,
    resumed from its checkpoint, waited for while another process holds it)."""
    from .runner.slurm import SpecFileError, load_spec, run_until_done

    try:
        spec = load_spec(specs_file, index)
    except SpecFileError as exc:
        raise BadInput(str(exc)) from None
    machine = _Machine(threads=threads, cg_check_every=cg_check_every, cg_compile=cg_compile)
    execution = machine.execution(_device(device), data_dir, progress=not quiet)
    try:
        out = run_until_done(spec, _store(output_dir), execution, echo=click.echo)
    except (MissingDataError, CorruptDataError, RunInputError) as exc:
        raise _run_error(exc) from None
    click.echo(_outcome_line(out))


@main.group()
def bench() -> None:
    """Speed and memory benchmarks: ratios measured side by side in one process."""


for _command in benchmark_commands():
    bench.add_command(_command)
