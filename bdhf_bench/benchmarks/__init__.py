"""Benchmark commands: each prints ratios measured side by side in one process.

Every module here defines ``command``, a ``click.Command``; ``bdhf-bench bench <name>`` runs it.
Modules are discovered, so adding a benchmark touches no other file.
"""

from __future__ import annotations

import importlib
import pkgutil

import click


def commands() -> list[click.Command]:
    """The benchmark commands, one per module of this package."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            found.append(command)
    return found
