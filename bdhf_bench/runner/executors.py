"""Executing many runs: one after another, or N at once in worker processes (one GPU each).

Whatever the executor, every run goes through ``run_one`` against the shared results folder:
finished runs are skipped, a run another process holds is waited for (and taken over with its
checkpoint if that process dies), and a run that fails is reported with its error without
stopping the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def _failure(spec: RunSpec, exc: BaseException) -> RunOutcome:
    msg = f"{type(exc).__name__}: {exc}".strip()
    return RunOutcome(spec, "failed", error=msg)


def _worker_run(
    spec: RunSpec, root: str, execution: Execution, threads: int | None
) -> tuple[str, str | None, str | None]:
    """Run one spec in a worker process; returns (status, result path, error)."""
    if threads:
        torch.set_num_threads(threads)
    try:
        out = run_one(spec, ResultStore(root), execution)
        return out.status, str(out.path) if out.path else None, None
    except Exception as exc:  # reported to the driver, never fatal for the grid
        return "failed", None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"


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
        started = time.monotonic()
        for i, spec in enumerate(specs):
            out = self._try(spec, store)
            if out.status == "busy":
                waiting.append(i)
                continue
            outcomes[i] = out
            self._tally(report, out, started)
        while waiting:
            still = []
            for i in waiting:
                out = self._try(specs[i], store)
                if out.status == "busy":
                    still.append(i)
                else:
                    outcomes[i] = out
                    self._tally(report, out, started)
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

    def _tally(self, report: GridReport, out: RunOutcome, started: float) -> None:
        if out.status == "failed":
            report.failed += 1
        else:
            report.done += 1
        finished = report.done + report.failed
        elapsed = time.monotonic() - started
        eta = elapsed / finished * (report.total - finished) if finished else None
        self.echo(f"{out.status}: {out.spec.label()} | {report.line(eta)}")

    # -- worker processes -----------------------------------------------------------------------

    def _parallel(self, specs: Sequence[RunSpec], store: ResultStore) -> list[RunOutcome]:
        gpus = torch.cuda.device_count() if self.execution.device.type == "cuda" else 0
        threads = None if gpus else max(1, (os.cpu_count() or 1) // self.workers)
        ctx = multiprocessing.get_context("spawn")
        outcomes: dict[int, RunOutcome] = {}
        report = GridReport(total=len(specs))
        started = time.monotonic()
        pending = list(range(len(specs)))
        with cf.ProcessPoolExecutor(self.workers, mp_context=ctx) as pool:
            while pending:
                futures = {}
                for slot, i in enumerate(pending):
                    execution = self.execution
                    if gpus:
                        device = torch.device("cuda", slot % gpus)
                        execution = Execution(**{**execution.__dict__, "device": device})
                    execution = Execution(**{**execution.__dict__, "progress": False})
                    fut = pool.submit(_worker_run, specs[i], str(store.root), execution, threads)
                    futures[fut] = i
                report.running = min(len(futures), self.workers)
                busy = []
                for fut in cf.as_completed(futures):
                    i = futures[fut]
                    status, path, error = fut.result()
                    if status == "busy":
                        busy.append(i)
                        continue
                    out = RunOutcome(specs[i], status, Path(path) if path else None, error=error)
                    outcomes[i] = out
                    report.running = max(0, report.running - 1)
                    if error:
                        self.echo(f"FAILED {specs[i].label()}: {error.splitlines()[0]}")
                    self._tally(report, out, started)
                pending = busy
                if pending:
                    time.sleep(WAIT_POLL)
        return [outcomes[i] for i in range(len(specs))]
