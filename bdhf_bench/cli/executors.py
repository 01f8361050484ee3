"""Where a command's runs execute: here (``--workers`` at a time), as Ray tasks, or written
into a SLURM array script instead of run."""

from __future__ import annotations

from pathlib import Path

import click

from .common import BadInput, ExecutionFlags, parse_device


def device_name(name: str | None) -> str | None:
    """A device name checked for form only (the runs use another machine's devices)."""
    import torch

    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device {name!r}; valid: cpu, cuda") from None
    if device.type not in ("cpu", "cuda") or device.index is not None:
        raise BadInput(f"unsupported device {name!r} here; valid: cpu, cuda")
    return name


def executor_options(func):
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


def make_executor(
    kind: str,
    address: str | None,
    workers: int,
    device: str | None,
    data_dir,
    quiet: bool,
    flags: ExecutionFlags,
    verbose: bool = False,
):
    """The executor for --executor: LocalExecutor, or a started RayExecutor (so that a missing
    Ray or an unreachable cluster fails before any run), closed with the command."""
    if kind == "local":
        from ..runner.executors import LocalExecutor

        if address is not None:
            raise BadInput("--address is for --executor ray")
        execution = flags.execution(parse_device(device), data_dir, not quiet and workers == 1)
        return LocalExecutor(workers, execution, echo=click.echo, verbose=verbose)
    import torch

    from ..runner.ray_executor import RayClusterError, RayExecutor, RayUnavailableError

    if workers != 1:
        raise BadInput("--workers is for --executor local; Ray runs as many as the cluster fits")
    execution = flags.execution(torch.device("cpu"), data_dir, progress=False)
    executor = RayExecutor(
        execution, address, echo=click.echo, device=device_name(device), verbose=verbose
    )
    try:
        executor.start()
    except (RayUnavailableError, RayClusterError) as exc:
        raise BadInput(str(exc)) from None
    click.get_current_context().call_on_close(executor.close)
    click.echo(executor.describe())
    return executor


def write_slurm_script(
    path: Path,
    specs,
    results: Path,
    device: str | None,
    data_dir,
    title: str,
    then: str,
    ray: bool,
    flags: ExecutionFlags,
) -> None:
    """Write the SLURM script and spec file for ``specs`` instead of running them."""
    from ..runner.slurm import write_slurm

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
            device=device_name(device),
            threads=flags.threads,
            cg_check_every=flags.cg_check_every,
            cg_compiled=flags.cg_compile,
        )
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"SLURM array of {len(specs)} run(s): sbatch {script}  (specs: {spec_file})")


def rerun_command(command: str) -> str:
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
