"""``run``: one optimizer on one problem, a run per seed; ``run-spec``: one run of a spec file
(a SLURM array task)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import click

from ..limits import MAX_SEED
from .common import (
    BadInput,
    ExecutionFlags,
    FiniteFloat,
    data_dir_option,
    execution_flag_options,
    lookup_optimizer,
    lookup_problem,
    make_budget,
    open_store,
    parse_device,
    parse_overrides,
    preflight_or_fail,
    resolve_setting,
    run_error,
    run_errors,
)


@dataclass(frozen=True)
class RunSettings:
    """What ``run`` and ``tune`` share: the problem, its budget and data, where and how the runs
    execute, where results go (the command receives them as one ``settings``)."""

    problem: str
    batch_size: int | None
    epochs: int | None
    steps: int | None
    time_budget: float | None
    eval_every: int | None
    weight_decay: float | None
    device: str | None
    data: str
    data_dir: Path | None
    flags: ExecutionFlags
    output_dir: Path
    quiet: bool


def run_options(func):
    """Options shared by ``run`` and ``tune``, passed on as ``settings: RunSettings``."""

    inner = func

    @functools.wraps(inner)
    def command(*args, **kwargs):
        names = [f.name for f in dataclasses.fields(RunSettings)]
        settings = RunSettings(**{name: kwargs.pop(name) for name in names})
        return inner(*args, settings=settings, **kwargs)

    func = command
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
        data_dir_option,
        execution_flag_options,
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


def outcome_text(out) -> str:
    """A finished run's one line, with where its result lies."""
    from ..runner.console import outcome_line

    line = outcome_line(out)
    return f"{line} -> {out.path}" if out.status != "failed" and out.path else line


@click.command()
@run_options
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
    settings: RunSettings, optimizer: str, seeds: tuple[int, ...], hps: tuple[str, ...]
) -> None:
    """Train one optimizer on one problem, one run per seed; results as DeepOBS JSON."""
    from ..runner import RunSpec, run_one

    prob = lookup_problem(settings.problem)
    entry = lookup_optimizer(optimizer)
    setting = resolve_setting(entry, parse_overrides(hps))
    dev = parse_device(settings.device)
    budget = make_budget(prob, settings.epochs, settings.steps, settings.time_budget)
    specs = [
        RunSpec(
            problem=prob.name,
            optimizer=entry.name,
            hyperparameters=setting,
            seed=seed,
            batch_size=settings.batch_size or prob.batch_size,
            budget=budget,
            eval_every=settings.eval_every,
            data=settings.data,
            weight_decay=settings.weight_decay,
        )
        for seed in (seeds or (42,))
    ]
    preflight_or_fail("run", specs, settings.data_dir, None)
    store = open_store(settings.output_dir)
    execution = settings.flags.execution(dev, settings.data_dir, progress=not settings.quiet)
    for spec in specs:
        try:
            out = run_one(spec, store, execution)
        except run_errors() as exc:
            raise run_error(exc) from None
        if out.status == "busy":
            click.echo(f"busy: {spec.label()} is running in another process; skipped")
            continue
        click.echo(outcome_text(out))


@click.command("run-spec", hidden=True)
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
@data_dir_option
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
    from ..runner.slurm import SpecFileError, load_spec, run_until_done

    try:
        spec = load_spec(specs_file, index)
    except SpecFileError as exc:
        raise BadInput(str(exc)) from None
    flags = ExecutionFlags(threads=threads, cg_check_every=cg_check_every, cg_compile=cg_compile)
    execution = flags.execution(parse_device(device), data_dir, progress=not quiet)
    try:
        out = run_until_done(spec, open_store(output_dir), execution, echo=click.echo)
    except run_errors() as exc:
        raise run_error(exc) from None
    click.echo(outcome_text(out))
