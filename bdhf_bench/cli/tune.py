"""``tune``: DeepOBS's protocol for one optimizer on one problem: search on one seed, select on
the validation metric, rerun the best setting with more seeds."""

from __future__ import annotations

from pathlib import Path

import click

from ..limits import MAX_SEED
from .common import (
    BadInput,
    lookup_optimizer,
    lookup_problem,
    make_budget,
    open_store,
    parse_overrides,
    preflight_or_fail,
    run_error,
    run_errors,
)
from .executors import executor_options, make_executor, rerun_command, write_slurm_script
from .run import RunSettings, run_options


def _search_settings(
    entry, fixed: dict, grid_file: Path | None, random_trials: int | None, search_seed: int
) -> list[dict]:
    """The settings to search: the grid file's (or the optimizer's default grid), every one of
    them or ``random_trials`` drawn from its range; ``fixed`` joins each."""
    from ..runner.tune import GridFileError, grid_settings, load_grid_file, random_settings

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
        return (
            random_settings(entry, grid, fixed, random_trials, search_seed)
            if random_trials
            else grid_settings(entry, grid, fixed, points)
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _write_search_script(path: Path, plan, settings: RunSettings, ray: bool) -> None:
    """The SLURM array of the tuning's search runs; the same command then selects and runs
    the final seeds."""
    then = (
        f"{rerun_command('tune')}\n#          skips these search runs, selects on validation "
        f"and runs the {len(plan.final_seeds)} final seed(s)."
    )
    title = f"the search of tuning {plan.entry.name} on {plan.problem.name}"
    write_slurm_script(
        path,
        plan.search_specs(),
        settings.output_dir,
        settings.device,
        settings.data_dir,
        title,
        then,
        ray,
        settings.flags,
    )


@click.command()
@run_options
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
@executor_options
def tune(
    settings: RunSettings,
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
) -> None:
    """Tune an optimizer on a problem (DeepOBS protocol): search on one seed, select on the
    validation metric, rerun the best setting with more seeds."""
    from ..runner.tune import TunePlan, run_tunings

    prob = lookup_problem(settings.problem)
    entry = lookup_optimizer(optimizer)
    fixed = parse_overrides(hps)
    if final_seeds and tuning_seed + final_seeds - 1 > MAX_SEED:
        raise BadInput(
            f"--final-seeds {final_seeds} from --tuning-seed {tuning_seed} passes the largest "
            f"seed, {MAX_SEED}; give a smaller tuning seed or fewer final seeds"
        )
    candidates = _search_settings(entry, fixed, grid_file, random_trials, search_seed)
    plan = TunePlan(
        problem=prob,
        entry=entry,
        settings=candidates,
        batch_size=settings.batch_size or prob.batch_size,
        budget=make_budget(prob, settings.epochs, settings.steps, settings.time_budget),
        data=settings.data,
        eval_every=settings.eval_every,
        weight_decay=settings.weight_decay,
        tuning_seed=tuning_seed,
        final_seeds=list(range(tuning_seed, tuning_seed + final_seeds)),
    )
    if emit_slurm is not None:
        ray = executor_kind != "local" or address is not None
        _write_search_script(emit_slurm, plan, settings, ray)
        return
    preflight_or_fail("tune", plan.search_specs(), settings.data_dir, None)
    executor = make_executor(
        executor_kind,
        address,
        workers,
        settings.device,
        settings.data_dir,
        settings.quiet,
        settings.flags,
        verbose,
    )
    store = open_store(settings.output_dir)
    try:
        outcomes = run_tunings([plan], store, executor, echo=click.echo)
    except run_errors() as exc:
        raise run_error(exc) from None
    final = outcomes[len(plan.settings) :]
    for folder in sorted({str(out.path.parent) for out in final if out.path is not None}):
        click.echo(f"final runs: {folder}")  # each run was printed as it ended; where, once
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise click.ClickException(f"{len(failed)} run(s) failed (see above)")
