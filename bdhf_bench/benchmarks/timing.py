"""Side-by-side timing: interleaved repetitions, medians, device-synchronised."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import click
import torch


def machine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--device`` and ``--threads``, shared by the benchmark commands; the command receives
    ``device`` as a ``torch.device`` with torch's thread count already set."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if param.name == "threads" and value:
            torch.set_num_threads(value)
        if param.name == "device":
            try:
                return torch.device(value)
            except RuntimeError:
                raise click.BadParameter(
                    f"unknown device {value!r}; valid: cpu, cuda, cuda:N"
                ) from None
        return value

    func = click.option(
        "--threads",
        type=click.IntRange(min=1),
        callback=callback,
        is_eager=True,
        help="torch threads (default: torch's).",
    )(func)
    return click.option(
        "--device", default="cpu", show_default=True, callback=callback, help="cpu, cuda, cuda:N."
    )(func)


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued device work (a no-op on CPU)."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


def median_times(
    fns: dict[str, Callable[[], object]],
    repeats: int = 15,
    warmup: int = 2,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin so that machine noise
    hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}
