"""Executing many runs: one after another, or N at once in worker processes (one GPU each).

Whatever the executor, every run goes through ``run_one`` against the shared results folder:
finished runs are skipped, a run another process holds is waited for (and taken over with its
checkpoint if that process dies), and a run that fails is reported with its error without
stopping the others.

A ``follow_up`` hook, called as each run settles, may add runs to the same queue: a suite starts a
tuning's final seeds the moment that tuning's last search run ends, while other searches still
run, so no worker waits for the slowest search of the whole suite.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from .console import outcome_line
from .loop import Execution
from .run import RunOutcome, run_one
from .spec import RunSpec
from .store import ResultStore

WAIT_POLL = 2.0

FollowUp = Callable[[int, RunOutcome], Sequence[RunSpec]]
"""``follow_up(index, outcome)``: called once per settled run (never for a busy one), in the
order runs settle; the specs it returns are run too, indexed after every spec given so far."""


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
        self.times: dict[tuple, list[float]] = {}
        self.slots = max(1, slots)
        self.add(specs)

    def add(self, specs: Sequence[RunSpec]) -> None:
        """More runs to wait for (a follow-up's)."""
        for spec in specs:
            self.left[_kind(spec)] = self.left.get(_kind(spec), 0) + 1

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


_WORKER_GPU: int | None = None
"""The GPU this worker process was given when it started (None: not a GPU pool's worker)."""


def _claim_gpu(slots: Any) -> None:
    """Pool initializer: the new worker process takes one GPU index for its whole life, so two
    runs in flight never share a GPU while another GPU idles. It is made the current device
    before anything touches CUDA: pinned memory and libraries that allocate on "cuda" would
    otherwise open a context on GPU 0 in every worker."""
    global _WORKER_GPU
    _WORKER_GPU = slots.get()
    if torch.cuda.is_available():
        torch.cuda.set_device(_WORKER_GPU)


def _worker_execution(execution: Execution) -> Execution:
    """``execution`` on this worker's own GPU, when it has one and the runs are on CUDA."""
    if _WORKER_GPU is None or execution.device.type != "cuda":
        return execution
    return replace(execution, device=torch.device("cuda", _WORKER_GPU))


def _worker_run(
    spec: RunSpec, root: str, execution: Execution
) -> tuple[str, str | None, str | None, float]:
    """Run one spec in a worker process; returns (status, result path, error, seconds)."""
    execution = _worker_execution(execution)
    started = time.monotonic()
    try:
        out = run_one(spec, ResultStore(root), execution)
        path = str(out.path) if out.path else None
        return out.status, path, None, time.monotonic() - started
    except Exception as exc:  # reported to the driver, never fatal for the grid
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        return "failed", None, error, time.monotonic() - started


def finished_first(specs: Sequence[RunSpec], store: ResultStore) -> list[int]:
    """The indices of ``specs`` in the order to start them: those the store already holds a
    result for first, each group in its given order. A reused run settles in moments, so the
    progress line counts it, and the ETA drops it, from the start instead of when the queue
    reaches it behind hours of training. (Under ``--rerun`` such runs train again; only their
    place in the queue moves.)"""
    return sorted(range(len(specs)), key=lambda i: store.finished(specs[i]) is None)


def measured(status: str, seconds: float) -> float | None:
    """A run's time for the ETA: only runs trained here count."""
    return seconds if status in ("finished", "diverged") else None


class Executor(Protocol):
    """What runs a list of specs: ``LocalExecutor``, ``RayExecutor``."""

    def run(
        self,
        specs: Sequence[RunSpec],
        store: ResultStore,
        follow_up: FollowUp | None = None,
        expected: Sequence[RunSpec] = (),
    ) -> list[RunOutcome]:
        """Every spec run (or skipped) to completion, and every spec ``follow_up`` adds;
        outcomes in the order of ``specs``, then of the added specs. ``expected``: stand-ins
        for the runs ``follow_up`` will add (their kind, not their settings), counted in the
        progress line's total and the ETA from the start."""
        ...


class RunQueue:
    """The specs of one ``Executor.run`` call, growing as ``follow_up`` adds to them, with
    the progress line and ETA that go with them. Runs ``expected`` from follow-ups count from
    the start, so the total stays fixed and the ETA does not grow as runs finish."""

    def __init__(
        self,
        specs: Sequence[RunSpec],
        follow_up: FollowUp | None,
        slots: int = 1,
        expected: Sequence[RunSpec] = (),
    ) -> None:
        self.specs = list(specs)
        self.follow_up = follow_up
        self.outcomes: dict[int, RunOutcome] = {}
        self.report = GridReport(total=len(self.specs) + len(expected))
        self.eta = Eta([*self.specs, *expected], slots)
        self.expected = Counter(_kind(spec) for spec in expected)

    def settle(self, i: int, out: RunOutcome, seconds: float | None) -> list[int]:
        """Record run ``i``'s outcome; the indices of the specs its follow-up added."""
        self.outcomes[i] = out
        if out.status == "failed":
            self.report.failed += 1
        else:
            self.report.done += 1
        self.eta.settle(out.spec, seconds)
        added = list(self.follow_up(i, out)) if self.follow_up is not None else []
        for spec in added:
            if self.expected[_kind(spec)] > 0:
                self.expected[_kind(spec)] -= 1  # counted from the start
            else:
                self.eta.add([spec])
                self.report.total += 1
        first = len(self.specs)
        self.specs += added
        return list(range(first, len(self.specs)))

    def line(self) -> str:
        return self.report.line(self.eta.seconds())

    def in_order(self) -> list[RunOutcome]:
        return [self.outcomes[i] for i in range(len(self.specs))]


class LocalExecutor:
    """Runs specs on this machine: sequentially, or ``workers`` at a time in processes.

    With GPUs, worker process w uses GPU ``w % n_gpus`` for every run it takes; on the CPU the
    cores are shared out.
    """

    def __init__(
        self,
        workers: int = 1,
        execution: Execution | None = None,
        echo: Callable[[str], None] | None = None,
        verbose: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers}")
        self.workers = workers
        self.verbose = verbose
        """Progress lines with every hyperparameter (else only those off their defaults)."""
        self.execution = execution or Execution(torch.device("cpu"))
        self.echo = echo or (lambda text: None)
        self.clock: Callable[[], float] = time.monotonic

    def run(
        self,
        specs: Sequence[RunSpec],
        store: ResultStore,
        follow_up: FollowUp | None = None,
        expected: Sequence[RunSpec] = (),
    ) -> list[RunOutcome]:
        """Every spec run (or skipped) to completion, and every spec ``follow_up`` adds;
        outcomes in the order of ``specs``, then of the added specs (``expected``: as for
        ``Executor.run``)."""
        queue = RunQueue(specs, follow_up, self.workers, expected)
        if self.workers == 1:
            self._sequential(queue, store)
        else:
            self._parallel(queue, store)
        return queue.in_order()

    # -- one process ----------------------------------------------------------------------------

    def _sequential(self, queue: RunQueue, store: ResultStore) -> None:
        waiting: list[int] = []
        order = finished_first(queue.specs, store)
        k = 0
        while k < len(order):  # follow-ups join the end of the order
            i = order[k]
            started = self.clock()
            out = self._try(queue.specs[i], store)
            if out.status == "busy":
                waiting.append(i)
            else:
                order += self._tally(queue, i, out, measured(out.status, self.clock() - started))
            k += 1
        while waiting:
            still = []
            for i in waiting:
                started = self.clock()
                out = self._try(queue.specs[i], store)
                if out.status == "busy":
                    still.append(i)
                else:
                    added = self._tally(queue, i, out, measured(out.status, self.clock() - started))
                    still += added  # tried in the next round, after a pause like the others
            waiting = still
            if waiting:
                time.sleep(WAIT_POLL)

    def _try(self, spec: RunSpec, store: ResultStore) -> RunOutcome:
        try:
            return run_one(spec, store, self.execution)
        except Exception as exc:  # one failed run never stops the others
            return _failure(spec, exc)

    def _tally(self, queue: RunQueue, i: int, out: RunOutcome, seconds: float | None) -> list[int]:
        added = queue.settle(i, out, seconds)
        self.echo(f"{outcome_line(out, self.verbose)} | {queue.line()}")
        return added

    # -- worker processes -----------------------------------------------------------------------

    def _parallel(self, queue: RunQueue, store: ResultStore) -> None:
        gpus = torch.cuda.device_count() if self.execution.device.type == "cuda" else 0
        # One thread per worker unless --threads says otherwise: N workers with torch's
        # default (every core each) oversubscribe the machine and crawl.
        threads = self.execution.threads or 1
        ctx = multiprocessing.get_context("spawn")
        pool_options: dict[str, Any] = {}
        if gpus:
            slots = ctx.Queue()
            for w in range(self.workers):
                slots.put(w % gpus)
            pool_options = {"initializer": _claim_gpu, "initargs": (slots,)}
        execution = replace(
            self.execution, progress=False, threads=threads, runs_at_once=self.workers
        )
        report = queue.report
        to_submit = finished_first(queue.specs, store)
        later: list[tuple[float, int]] = []  # (time, index): busy runs to submit again
        running: dict[cf.Future, int] = {}
        with cf.ProcessPoolExecutor(self.workers, mp_context=ctx, **pool_options) as pool:
            while to_submit or later or running:
                now = time.monotonic()
                to_submit += [i for t, i in later if t <= now]
                later = [(t, i) for t, i in later if t > now]
                for i in to_submit:
                    fut = pool.submit(_worker_run, queue.specs[i], str(store.root), execution)
                    running[fut] = i
                to_submit = []
                report.running = min(len(running), self.workers)
                if not running:
                    time.sleep(max(0.0, min(t for t, _ in later) - now))
                    continue
                timeout = max(0.05, min(t for t, _ in later) - now) if later else None
                done, _ = cf.wait(running, timeout=timeout, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    status, path, error, seconds = fut.result()
                    if status == "busy":
                        later.append((time.monotonic() + WAIT_POLL, i))
                        continue
                    spec = queue.specs[i]
                    out = RunOutcome(spec, status, Path(path) if path else None, error=error)
                    report.running = min(len(running), self.workers)  # the pool starts the next
                    to_submit += self._tally(queue, i, out, measured(status, seconds))
