"""The ``bdhf-bench`` command line: thin Click commands over the library modules."""

from __future__ import annotations

import click

from . import __version__
from .benchmarks import commands as benchmark_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bdhf-bench")
def main() -> None:
    """Benchmark block-diagonal Hessian-free optimization against HF and Adam, DeepOBS-style."""


@main.group()
def bench() -> None:
    """Speed and memory benchmarks: ratios measured side by side in one process."""


for _command in benchmark_commands():
    bench.add_command(_command)
