"""Host reads per HF and BDHF step: the calls that would make the host wait for a GPU.

On a GPU every read of a device value on the host (``item``, ``float()``, ``bool()``,
``tolist``, ``nonzero``, a copy to the CPU) waits until the queued kernels have run, so a CG
iteration that reads its active-block mask cannot overlap the next iteration's launches. The
calls are counted by a ``TorchFunctionMode`` that sees them at the Python level, so the count is
the same on a CPU, where reads cost nothing: a number every session can watch without a GPU.
``--cg-check-every K`` reads CG's mask every K iterations, so the count falls with K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..data import train_stream
from ..optim import ModelClosure, get_optimizer
from ..problems import get_problem, seeded_model
from ..runner.loop import problem_data
from .engine_setting import ENGINE_SETTING
from .timing import machine_options

_READS = {
    Tensor.item,
    Tensor.tolist,
    Tensor.__bool__,
    Tensor.__float__,
    Tensor.__int__,
    Tensor.__index__,
    Tensor.numpy,
    Tensor.nonzero,
    torch.nonzero,
    Tensor.cpu,
}
"""Functions that return host values of a tensor (or, for ``nonzero``, need its values on the
host to size the result)."""


class HostReadCounter(TorchFunctionMode):
    """Counts host reads, by function name, while active (nested modes see them too)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _READS or _is_host_copy(func, args, kwargs):
            name = getattr(func, "__name__", str(func))
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **kwargs)


def _is_host_copy(func: Any, args: tuple, kwargs: dict) -> bool:
    """``tensor.to("cpu")`` (or ``.to(device=...)``): a copy to the host."""
    if func is not Tensor.to:
        return False
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    if isinstance(target, str | torch.device):
        return torch.device(target).type == "cpu"
    return False


@dataclass(frozen=True)
class StepReads:
    """Host reads of one optimizer's steps, per step."""

    optimizer: str
    check_every: int
    reads_per_step: float
    cg_iterations_per_step: float
    by_call: dict[str, float]


def count_step_reads(
    problem_name: str,
    optimizer: str,
    *,
    check_every: int = 1,
    device: torch.device | str = "cpu",
    steps: int = 2,
    seed: int = 0,
    batch_size: int | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> StepReads:
    """Count the host reads of ``steps`` steps (after one uncounted step) on synthetic data."""
    problem = get_problem(problem_name)
    device = torch.device(device)
    batch = batch_size or problem.batch_size
    splits = problem_data(
        problem, batch_size=batch, source="synthetic", data_dir=None, device=device, seed=seed
    )
    batches = list(train_stream(splits, batch, seed=seed, augment=False).epoch(0))
    while len(batches) < steps + 1:
        batches += batches
    model = seeded_model(problem, seed, device).train()
    l2 = problem.l2_coefficients(model)
    entry = get_optimizer(optimizer)
    hps = entry.resolve({**ENGINE_SETTING, **(hyperparameters or {})})
    driver = entry.driver(entry.build(model, hps, cg_check_every=check_every))
    driver.before_steps()
    counter = HostReadCounter()
    iterations = 0.0
    for i, (x, y) in enumerate(batches[: steps + 1]):
        closure = ModelClosure(model, problem.loss, *problem.prepare_batch(x, y), l2)
        if i == 0:
            driver.step(closure)
            continue
        with counter:
            driver.step(closure)
        iterations += driver.products().iterations
    return StepReads(
        optimizer,
        check_every,
        counter.total / steps,
        iterations / steps,
        {k: v / steps for k, v in sorted(counter.calls.items())},
    )


def read_table(rows: Sequence[StepReads]) -> str:
    """The rows as a fixed-width table."""
    header = f"{'optimizer':<9} {'check every':>11} {'CG its/step':>11} {'reads/step':>10}  calls"
    lines = [header, "-" * len(header)]
    for r in rows:
        calls = ", ".join(f"{k} {v:g}" for k, v in r.by_call.items())
        lines.append(
            f"{r.optimizer:<9} {r.check_every:>11} {r.cg_iterations_per_step:>11.1f} "
            f"{r.reads_per_step:>10.1f}  {calls}"
        )
    return "\n".join(lines)


@click.command("host-reads")
@click.option("--problem", default="mnist1d_mlp", show_default=True, help="Problem name.")
@click.option(
    "--check-every",
    "check_every",
    type=click.IntRange(min=1),
    multiple=True,
    help="CG mask read period to count (repeatable; default 1, 2, 4 and 8).",
)
@click.option("--steps", type=click.IntRange(min=1), default=2, show_default=True)
@machine_options
def command(
    problem: str,
    check_every: tuple[int, ...],
    steps: int,
    device: torch.device,
    threads: int | None,
) -> None:
    """Host reads (item, bool, tolist, nonzero, host copies) per hf and bdhf step."""
    try:
        get_problem(problem)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--problem") from None
    rows = [
        count_step_reads(problem, name, check_every=k, device=device, steps=steps)
        for name in ("bdhf", "hf")
        for k in check_every or (1, 2, 4, 8)
    ]
    click.echo(f"{problem}, synthetic data, {device}, counted over {steps} step(s) after one")
    click.echo(read_table(rows))
    click.echo(
        "reads/step: calls per step that return a tensor's value to the host (each waits for "
        "the device on a GPU); CG its/step: the longest block's CG iterations per step"
    )
