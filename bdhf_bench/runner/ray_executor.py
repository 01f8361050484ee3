"""Running a grid on a Ray cluster: one Ray task per run, one GPU each (one CPU without GPUs).

The scheduling is Ray's, the guarantees are the results folder's: every task calls ``run_one``
against a ``ResultStore`` on the shared results path, so finished runs are skipped, a run held by
another process comes back "busy" (and is tried again later), and two processes never train the
same run. A worker that dies mid-run (SIGKILL, out of memory, a lost node) releases its flock with
its process and leaves its last checkpoint; the driver submits the run again, a bounded number of
times, and the new task resumes from that checkpoint. Ray itself never retries (``max_retries=0``)
so that every crash is seen, counted and reported here.

Ray is optional (``pip install bdhf-bench[ray]``) and imported only when this executor starts.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .console import outcome_line
from .executors import WAIT_POLL, FollowUp, RunQueue, finished_first, measured
from .loop import DEFAULT_DATA_DIR, Execution
from .run import RunOutcome, run_one
from .spec import RunSpec
from .store import ResultStore

INSTALL_HINT = "pip install 'bdhf-bench[ray]'"
DEFAULT_CRASH_RETRIES = 2
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a HOST:PORT cluster to answer (Ray itself retries for minutes)."""
HEARTBEAT = 60.0
"""Seconds without a finished run after which the driver prints a progress line anyway."""


class RayUnavailableError(RuntimeError):
    """Ray is not installed (the message says how to install it)."""


class RayClusterError(RuntimeError):
    """The Ray cluster cannot be reached or cannot run what was asked (one line)."""


def import_ray() -> ModuleType:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            f"--executor ray needs Ray, which is not installed; install it with: {INSTALL_HINT}"
        ) from None
    return ray


def _probe(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast when a HOST:PORT address does not answer: ``ray.init`` would retry for a long
    time, printing warnings, before it gives up."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", or a form Ray checks itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise RayClusterError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def _task_device(requested: str | None) -> torch.device:
    """The device inside a task: the GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES, so it is
    always ``cuda:0`` here), else the CPU."""
    if requested is not None and torch.device(requested).type == "cpu":
        return torch.device("cpu")
    import ray

    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    if requested is not None:
        raise RuntimeError(f"device {requested!r} asked for, but Ray assigned this task no GPU")
    return torch.device("cpu")


def _ray_task(
    spec: RunSpec, root: str, execution: Execution, device: str | None
) -> tuple[str, str | None, str | None, float]:
    """One run inside a Ray worker; returns (status, result path, error, seconds). Errors of
    the run itself come back as values; only a dying worker surfaces as a Ray exception."""
    started = time.monotonic()
    try:
        execution = replace(execution, device=_task_device(device))
        out = run_one(spec, ResultStore(root), execution)
        path = str(out.path) if out.path else None
        return out.status, path, None, time.monotonic() - started
    except Exception as exc:  # reported to the driver, never fatal for the grid
        where = f"{socket.gethostname()} pid {os.getpid()}"
        trace = traceback.format_exc(limit=3)
        error = f"{type(exc).__name__}: {exc} (on {where})\n{trace}"
        return "failed", None, error, time.monotonic() - started


class RayExecutor:
    """Runs specs as Ray tasks on an existing cluster (``address``: "auto" or "HOST:PORT") or
    on a local cluster started on first use and shut down by ``close``.

    Same interface as ``LocalExecutor``: ``run(specs, store)`` returns outcomes in spec order and
    progress lines go to ``echo``. ``device`` None means "a GPU per run when the cluster has
    GPUs, else a CPU"; "cpu" forces CPU runs; "cuda" requires GPUs.
    """

    def __init__(
        self,
        execution: Execution | None = None,
        address: str | None = None,
        echo: Callable[[str], None] | None = None,
        device: str | None = None,
        crash_retries: int = DEFAULT_CRASH_RETRIES,
        num_cpus: int | None = None,
        heartbeat: float = HEARTBEAT,
        verbose: bool = False,
    ) -> None:
        self.verbose = verbose
        if crash_retries < 0:
            raise ValueError(f"crash_retries must be >= 0, got {crash_retries}")
        if device is not None and torch.device(device).type not in ("cpu", "cuda"):
            raise ValueError(f"unsupported device {device!r}; valid: cpu, cuda")
        self.execution = execution or Execution(torch.device("cpu"))
        self.address = address
        self.echo = echo or (lambda text: None)
        self.device = device
        self.crash_retries = crash_retries
        self.num_cpus = num_cpus
        """CPUs of a local cluster started here (None: every core)."""
        self.heartbeat = heartbeat
        self.crashes = 0
        """Worker deaths seen so far (each one retried or reported)."""
        self._ray: ModuleType | None = None
        self._owned = False
        self._resources: dict[str, float] = {}
        self._slots = 1
        self.use_gpus = False

    # -- cluster ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the cluster (or start the local one) and decide what a run asks for.

        Called by ``run``; call it earlier to fail before any work when the cluster is
        unreachable. Raises ``RayUnavailableError`` or ``RayClusterError``.
        """
        if self._ray is not None:
            return
        ray = import_ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "log_to_driver": False,
                "logging_level": logging.WARNING,
                "include_dashboard": False,
            }
            if self.address:
                _probe(self.address)
            try:
                if self.address:
                    ray.init(address=self.address, **options)
                else:
                    ray.init(address="local", num_cpus=self.num_cpus, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local cluster"
                raise RayClusterError(
                    f"cannot start or reach Ray at {where}: {_first_line(exc)}"
                ) from None
            self._owned = True
        self._ray = ray
        self._resources = dict(ray.cluster_resources())
        gpus = int(self._resources.get("GPU", 0))
        if self.device is not None and torch.device(self.device).type == "cuda" and not gpus:
            self.close()
            raise RayClusterError(f"device {self.device!r} asked for; the Ray cluster has no GPU")
        self.use_gpus = gpus > 0 and self.device != "cpu"
        self._slots = max(1, gpus if self.use_gpus else int(self._resources.get("CPU", 1)))

    @property
    def slots(self) -> int:
        """Runs the cluster holds at once (GPUs, or CPUs without GPUs); 1 before ``start``."""
        return self._slots

    def describe(self) -> str:
        """One line: where runs go and what each asks for."""
        self.start()
        kind = "local Ray cluster" if self._owned and not self.address else "Ray cluster"
        per_run = "1 GPU" if self.use_gpus else "1 CPU"
        return f"{kind}: {self._slots} run(s) at once, {per_run} each"

    def close(self) -> None:
        """Shut down the local cluster this executor started (a cluster it joined stays up)."""
        if self._ray is not None and self._owned:
            self._ray.shutdown()
        self._ray = None
        self._owned = False

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ------------------------------------------------------------------------------------

    def run(
        self,
        specs: Sequence[RunSpec],
        store: ResultStore,
        follow_up: FollowUp | None = None,
        expected: Sequence[RunSpec] = (),
    ) -> list[RunOutcome]:
        """Every spec run (or skipped) to completion, and every spec ``follow_up`` adds (sent
        to the cluster as soon as it is added); outcomes in the order of ``specs``, then of
        the added specs (``expected``: as for ``Executor.run``).

        A run whose task raised is failed at once; a run whose worker died is submitted again up
        to ``crash_retries`` times (resuming its checkpoint) before it is failed; a busy run is
        submitted again every few seconds until its holder finishes or dies.
        """
        self.start()
        ray = self._ray
        assert ray is not None
        remote = ray.remote(_ray_task).options(
            num_cpus=1, num_gpus=1 if self.use_gpus else 0, max_retries=0, name="bdhf-bench run"
        )
        execution = replace(
            self.execution,
            progress=False,
            threads=self.execution.threads or 1,  # a task holds one CPU
            runs_at_once=None,  # the cluster places tasks: who shares a node is not known here
            data_dir=Path(self.execution.data_dir or DEFAULT_DATA_DIR).resolve(),
        )
        queue = RunQueue(specs, follow_up, self._slots, expected)
        task = functools.partial(
            remote.remote, root=str(Path(store.root).resolve()), execution=execution,
            device=self.device,
        )  # fmt: skip
        tasks = _TasksInFlight(self, ray, task, queue)
        try:
            for i in finished_first(queue.specs, store):
                tasks.submit(i)
            while tasks.pending or tasks.later:
                ref = tasks.next_ready()
                if ref is not None:
                    tasks.collect(ref)
        except BaseException:
            # Interrupted (Ctrl-C): stop the runs in flight; their locks die with their workers
            # and their checkpoints are resumed by the next invocation.
            for ref in tasks.pending:
                ray.cancel(ref, force=True)
            raise
        return queue.in_order()


class _TasksInFlight:
    """The Ray tasks of one ``RayExecutor.run``: which run each pending task trains, the busy
    runs to submit again later, and each run's crash count."""

    def __init__(self, executor: RayExecutor, ray: ModuleType, task: Any, queue: RunQueue):
        self.executor, self.ray, self.task, self.queue = executor, ray, task, queue
        self.pending: dict[Any, int] = {}
        self.later: list[tuple[float, int]] = []  # (time, index): busy runs to submit again
        self.crashes: dict[int, int] = {}
        self.last_line = time.monotonic()

    def submit(self, i: int) -> None:
        self.pending[self.task(self.queue.specs[i])] = i

    def settle(self, i: int, out: RunOutcome, seconds: float | None = None) -> None:
        """Record run ``i``'s outcome, print it, and submit what its follow-up added."""
        ex = self.executor
        added = self.queue.settle(i, out, seconds)
        self.queue.report.running = min(len(self.pending), ex._slots)
        ex.echo(f"{outcome_line(out, ex.verbose)} | {self.queue.line()}")
        for j in added:
            self.submit(j)

    def next_ready(self) -> Any | None:
        """A finished task, after submitting the busy runs whose wait is over; None when none
        finished before the next heartbeat line or resubmission is due."""
        ex, now = self.executor, time.monotonic()
        for item in [x for x in self.later if x[0] <= now]:
            self.later.remove(item)
            self.submit(item[1])
        if not self.pending:
            time.sleep(max(0.0, min(t for t, _ in self.later) - now))
            return None
        wait = ex.heartbeat - (now - self.last_line)
        if self.later:
            wait = min(wait, min(t for t, _ in self.later) - now)
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=max(0.05, wait))
        if ready:
            self.last_line = time.monotonic()
            return ready[0]
        if time.monotonic() - self.last_line >= ex.heartbeat:
            self.queue.report.running = min(len(self.pending), ex._slots)
            ex.echo(f"in progress: {self.queue.line()}")
            self.last_line = time.monotonic()
        return None

    def collect(self, ref: Any) -> None:
        """The outcome of a finished task: settled, or submitted again (a busy run later; a run
        whose worker died up to ``crash_retries`` times, from its checkpoint)."""
        from ray.exceptions import RayError, RayTaskError

        ex = self.executor
        i = self.pending.pop(ref)
        spec = self.queue.specs[i]
        try:
            status, path, error, seconds = self.ray.get(ref)
        except RayTaskError as exc:  # the task itself raised: retrying would not help
            cause = getattr(exc, "cause", None) or exc
            error = f"{type(cause).__name__}: {_first_line(cause)}"
            self.settle(i, RunOutcome(spec, "failed", error=error))
            return
        except RayError as exc:  # the worker (or its node) died: resume elsewhere
            ex.crashes += 1
            self.crashes[i] = self.crashes.get(i, 0) + 1
            reason = f"{type(exc).__name__}: {_first_line(exc)}"
            if self.crashes[i] <= ex.crash_retries:
                ex.echo(
                    f"worker died running {spec.label()} ({reason}); "
                    f"retry {self.crashes[i]}/{ex.crash_retries} from its checkpoint"
                )
                self.submit(i)
            else:
                error = f"worker died {self.crashes[i]} times; last: {reason}"
                self.settle(i, RunOutcome(spec, "failed", error=error))
            return
        if status == "busy":
            self.later.append((time.monotonic() + WAIT_POLL, i))
            return
        out = RunOutcome(spec, status, Path(path) if path else None, error=error)
        self.settle(i, out, measured(status, seconds))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
