"""``bench <name>``: the speed and memory benchmarks (bdhf_bench/benchmarks/, one command per
module)."""

from __future__ import annotations

import click

from ..benchmarks import commands


@click.group()
def bench() -> None:
    """Speed and memory benchmarks: ratios measured side by side in one process."""


for _command in commands():
    bench.add_command(_command)
