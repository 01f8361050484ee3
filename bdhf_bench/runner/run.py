"""Running one spec against a results folder: skip it when finished on the same data, device
and dtype, wait when another process holds it, otherwise train it (resuming its checkpoint) and
write its result."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import describe, run_context
from .environment import torch_threads
from .loop import Execution, Trainer
from .spec import RunSpec
from .store import ResultStore

STATUSES = ("finished", "diverged", "skipped", "busy", "failed")


class OtherContextError(RuntimeError):
    """The folder holds this run finished on other data, another device kind or dtype."""


@dataclass
class RunOutcome:
    """What happened to one spec."""

    spec: RunSpec
    status: str
    """finished / diverged (trained now), skipped (finished before), busy (another process
    holds it), failed (an error, in ``error``)."""
    path: Path | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def load(self) -> dict[str, Any] | None:
        """The result dict (read from its file when this outcome came from another process)."""
        if self.result is None and self.path is not None and self.path.is_file():
            self.result = json.loads(self.path.read_text())
        return self.result


def _reusable(
    spec: RunSpec, store: ResultStore, context: dict[str, Any], execution: Execution
) -> Path | None:
    """The finished result this run may reuse, None when it must (re)train; a result on
    other data or another device refuses unless ``--rerun`` asked to redo it."""
    record = store.record(spec)
    if record is None:
        return None
    if execution.rerun_before is not None and record["written"] < execution.rerun_before:
        return None
    if record.get("context") != context:
        raise OtherContextError(
            f"{store.root / record['result']} is this run finished on "
            f"{describe(record.get('context'))}, not on {describe(context)}; "
            "--rerun replaces it, or give another output folder"
        )
    return store.root / record["result"]


def run_one(spec: RunSpec, store: ResultStore, execution: Execution) -> RunOutcome:
    context = run_context(spec, execution.device, execution.data_dir)
    existing = _reusable(spec, store, context, execution)
    if existing is not None:
        return RunOutcome(spec, "skipped", existing, store.load_result(spec))
    lock = store.try_lock(spec)
    if lock is None:
        return RunOutcome(spec, "busy")
    with lock:
        existing = _reusable(spec, store, context, execution)
        if existing is not None:
            return RunOutcome(spec, "skipped", existing, store.load_result(spec))
        store.forget(spec)  # a result to redo goes before its replacement is trained
        with torch_threads(execution.threads):
            trainer = Trainer(spec, store, execution, context)
            result, diverged = trainer.run()
        path = store.write_result(spec, result, trainer.setting(result), diverged, context)
    return RunOutcome(spec, "diverged" if diverged else "finished", path, result)
