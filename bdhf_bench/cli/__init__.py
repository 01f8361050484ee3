"""The ``bdhf-bench`` command line: thin Click commands over the library modules.

Every input is checked before any work starts; bad input exits with code 2 and one line saying
what was wrong and what is valid. Each command lives in its own module, imported only when it
is used: the report (and the worker processes it starts, which import this package again)
never loads torch, and ``bdhf-bench run`` never loads pandas.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import click

from .. import __version__

__all__ = ["main"]


class _LazyCommands(click.Group):
    """A group whose commands are imported when they are used (or listed by ``--help``)."""

    commands_at: ClassVar[dict[str, tuple[str, str]]] = {
        "bench": ("bdhf_bench.cli.bench", "bench"),
        "data": ("bdhf_bench.cli.data", "data_command"),
        "leaderboard": ("bdhf_bench.cli.leaderboard", "leaderboard"),
        "list": ("bdhf_bench.cli.listing", "list_command"),
        "overhead": ("bdhf_bench.cli.overhead", "overhead"),
        "report": ("bdhf_bench.report.cli", "report_command"),
        "run": ("bdhf_bench.cli.run", "run"),
        "run-spec": ("bdhf_bench.cli.run", "run_spec"),
        "tune": ("bdhf_bench.cli.tune", "tune"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands_at)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands_at:
            return None
        module, attr = self.commands_at[name]
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> Any:
        """Ctrl-C says what was kept (Click alone prints "Aborted!"); exit code 130. The
        runner's ``RunInterrupted`` (a KeyboardInterrupt with arguments) names the step and
        the checkpoint it kept; a bare one gets the general line."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            general = (
                "interrupted: finished runs are kept; the same command resumes each unfinished "
                "run from its last checkpoint"
            )
            click.echo(str(exc) if exc.args else general, err=True)
            ctx.exit(130)


@click.group(cls=_LazyCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bdhf-bench")
def main() -> None:
    """Benchmark block-diagonal Hessian-free optimization against HF and Adam, DeepOBS-style."""
