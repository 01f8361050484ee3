"""Executing many runs: one after another, or N at once in worker processes (one GPU each).

Whatever the executor, every run goes through ``run_one`` against the shared results folder:
finished runs are skipped, a run another process holds is waited for (and taken over with its
checkpoint if that process dies), and a run that fails is reported with its error without
stopping the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

from .loop import Execution
from .run import RunOutcome, run_one
from .spec import RunSpec
from .store import ResultStore

WAIT_POLL = 2.0


@dataclass
class GridReport:
    """Runs of a grid by state, for progress lines."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0

    def line(self, eta: float | None) -> str:
        text = f"runs: {self.done}/{self.total} done, {self.running} running, {self.failed} failed"
        if eta is not None:
            text += f", ETA {int(eta // 60)}m{int(eta % 60):02d}s"
        return text


def _kind(spec: RunSpec) -> tuple:
    """Runs expected to take alike: one problem, optimizer, budget, batch size and data."""
    return (spec.problem, spec.optimizer, spec.budget, spec.batch_size, spec.data, spec.eval_every)


class Eta:
    """Time left for a list of runs, from the measured wall time of the runs trained so far:
    a run is expected to take what trained runs of its kind took (``_kind``), else the mean of
    every trained run. Skipped runs take no time and failed ones say nothing about the rest,
    so neither is measured; extrapolating from the first run (or the mean over skipped ones)
    would be off by the ratio of an HF run to an Adam run."""

    def __init__(self, specs: Sequence[RunSpec], slots: int = 1) -> None:
        self.left: dict[tuple, int] = {}
        for spec in specs:
            self.left[_kind(spec)] = self.left.get(_kind(spec), 0) + 1
        self.times: dict[tuple, list[float]] = {}
        self.slots = max(1, slots)

    def settle(self, spec: RunSpec, seconds: float | None) -> None:
        """``spec`` is done; ``seconds`` its training wall time (None: not trained here)."""
        self.left[_kind(spec)] -= 1
        if seconds is not None:
            self.times.setdefault(_kind(spec), []).append(seconds)

    def seconds(self) -> float | None:
        """Seconds left (None until a run has been trained)."""
        measured = [t for ts in self.times.values() for t in ts]
        if not measured:
            return None
        overall = sum(measured) / len(measured)
        left = 0.0
        for kind, n in self.left.items():
            own = self.times.get(kind)
            left += n * (sum(own) / len(own) if own else overall)
        return left / self.slots


def _failure(spec: RunSpec, exc: BaseException) -> RunOutcome:
    msg = f"{type(exc).__name__}: {exc}".strip()
    return RunOutcome(spec, "failed", error=msg)


def _worker_run(
    spec: RunSpec, root: str, execution: Execution
) -> tuple[str, str | None, str | None, float]:
    """Run one spec in a worker process; returns (status, result path, error, seconds)."""
    started = time.monotonic()
    try:
        out = run_one(spec, ResultStore(root), execution)
        path = str(out.path) if out.path else None
        return out.status, path, None, time.monotonic() - started
    except Exception as exc:  # reported to the driver, never fatal for the grid
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        return "failed", None, error, time.monotonic() - started


def measured(status: str, seconds: float) -> float | None:
    """A run's time for the ETA: only runs trained here count."""
    return seconds if status in ("finished", "diverged") else None


class Executor(Protocol):
    """What runs a list of specs: ``LocalExecutor``, ``RayExecutor``."""

    def run(self, specs: Sequence[RunSpec], store: ResultStore) -> list[RunOutcome]:
        """Every spec run (or skipped) to completion; outcomes in the order of ``specs``."""
        ...


class LocalExecutor:
    """Runs specs on this machine: sequentially, or ``workers`` at a time in processes.

    With GPUs, worker i uses GPU ``i % n_gpus``; on the CPU the cores are shared out.
    """

    def __init__(
        self,
        workers: int = 1,
        execution: Execution | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers}")
        self.workers = workers
        self.execution = execution or Execution(torch.device("cpu"))
        self.echo = echo or (lambda text: None)
        self.clock: Callable[[], float] = time.monotonic

    def run(self, specs: Sequence[RunSpec], store: ResultStore) -> list[RunOutcome]:
        """Every spec run (or skipped) to completion; outcomes in the order of ``specs``."""
        if self.workers == 1:
            return self._sequential(specs, store)
        return self._parallel(specs, store)

    # -- one process ----------------------------------------------------------------------------

    def _sequential(self, specs: Sequence[RunSpec], store: ResultStore) -> list[RunOutcome]:
        outcomes: dict[int, RunOutcome] = {}
        waiting: list[int] = []
        report = GridReport(total=len(specs))
        eta = Eta(specs)
        for i, spec in enumerate(specs):
            started = self.clock()
            out = self._try(spec, store)
            if out.status == "busy":
                waiting.append(i)
                continue
            outcomes[i] = out
            self._tally(report, out, eta, measured(out.status, self.clock() - started))
        while waiting:
            still = []
            for i in waiting:
                started = self.clock()
                out = self._try(specs[i], store)
                if out.status == "busy":
                    still.append(i)
                else:
                    outcomes[i] = out
                    self._tally(report, out, eta, measured(out.status, self.clock() - started))
            waiting = still
            if waiting:
                time.sleep(WAIT_POLL)
        return [outcomes[i] for i in range(len(specs))]

    def _try(self, spec: RunSpec, store: ResultStore) -> RunOutcome:
        try:
            return run_one(spec, store, self.execution)
        except Exception as exc:  # one failed run never stops the others
            out = _failure(spec, exc)
            self.echo(f"FAILED {spec.label()}: {out.error}")
            return out

    def _tally(self, report: GridReport, out: RunOutcome, eta: Eta, seconds: float | None) -> None:
        if out.status == "failed":
            report.failed += 1
        else:
            report.done += 1
        eta.settle(out.spec, seconds)
        self.echo(f"{out.status}: {out.spec.label()} | {report.line(eta.seconds())}")

    # -- worker processes -----------------------------------------------------------------------

    def _parallel(self, specs: Sequence[RunSpec], store: ResultStore) -> list[RunOutcome]:
        gpus = torch.cuda.device_count() if self.execution.device.type == "cuda" else 0
        # One thread per worker unless --threads says otherwise: N workers with torch's
        # default (every core each) oversubscribe the machine and crawl.
        threads = self.execution.threads or 1
        ctx = multiprocessing.get_context("spawn")
        outcomes: dict[int, RunOutcome] = {}
        report = GridReport(total=len(specs))
        eta = Eta(specs, self.workers)
        pending = list(range(len(specs)))
        with cf.ProcessPoolExecutor(self.workers, mp_context=ctx) as pool:
            while pending:
                futures = {}
                for slot, i in enumerate(pending):
                    execution = self.execution
                    if gpus:
                        device = torch.device("cuda", slot % gpus)
                        execution = Execution(**{**execution.__dict__, "device": device})
                    execution = replace(
                        execution, progress=False, threads=threads, runs_at_once=self.workers
                    )
                    fut = pool.submit(_worker_run, specs[i], str(store.root), execution)
                    futures[fut] = i
                report.running = min(len(futures), self.workers)
                busy = []
                left = len(futures)
                for fut in cf.as_completed(futures):
                    left -= 1
                    i = futures[fut]
                    status, path, error, seconds = fut.result()
                    if status == "busy":
                        busy.append(i)
                        continue
                    out = RunOutcome(specs[i], status, Path(path) if path else None, error=error)
                    outcomes[i] = out
                    report.running = min(left, self.workers)  # the pool starts the next
                    if error:
                        self.echo(f"FAILED {specs[i].label()}: {error.splitlines()[0]}")
                    self._tally(report, out, eta, measured(status, seconds))
                pending = busy
                if pending:
                    time.sleep(WAIT_POLL)
        return [outcomes[i] for i in range(len(specs))]
