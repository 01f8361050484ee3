"""``list problems|optimizers``: the registered names, one line each."""

from __future__ import annotations

import click


@click.command("list")
@click.argument("what", type=click.Choice(["problems", "optimizers"]))
def list_command(what: str) -> None:
    """List the registered problems or optimizers, one line each."""
    if what == "problems":
        from ..problems import get_problem, problem_names

        for name in problem_names():
            click.echo(f"{name:<20} {get_problem(name).description}")
    else:
        from ..optim import get_optimizer, optimizer_names

        for name in optimizer_names():
            click.echo(f"{name:<20} {get_optimizer(name).description}")
