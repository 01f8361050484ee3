"""Running one spec against a results folder: skip it when finished, wait when another process
holds it, otherwise train it (resuming its checkpoint) and write its result."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .loop import Execution, Trainer
from .spec import RunSpec
from .store import ResultStore

STATUSES = ("finished", "diverged", "skipped", "busy", "failed")


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


def run_one(spec: RunSpec, store: ResultStore, execution: Execution) -> RunOutcome:
    existing = store.finished(spec)
    if existing is not None:
        return RunOutcome(spec, "skipped", existing, json.loads(existing.read_text()))
    lock = store.try_lock(spec)
    if lock is None:
        return RunOutcome(spec, "busy")
    with lock:
        existing = store.finished(spec)
        if existing is not None:
            return RunOutcome(spec, "skipped", existing, json.loads(existing.read_text()))
        trainer = Trainer(spec, store, execution)
        result, diverged = trainer.run()
        path = store.write_result(spec, result, trainer.setting(result), diverged)
    return RunOutcome(spec, "diverged" if diverged else "finished", path, result)
