"""The results folder: result files, checkpoints, locks and finished-records, all crash-safe.

- Finished runs go to ``deepobs/``, a tree that holds nothing but DeepOBS's
  ``<problem>/<optimizer>/<setting>/*.json``, so that DeepOBS's analyzer can be pointed at it
  whole; diverged runs go to ``_diverged/`` and the bookkeeping below to ``_runs/``, both beside
  it. A folder in the older layout (problem folders at the top) is moved into ``deepobs/`` once.
- Every file is written to a temporary name in the same folder, flushed, and renamed over the
  target, so a reader (or a crash) never sees half a file.
- A run's lock is an ``fcntl.flock`` on ``_runs/<id>.lock``: the kernel releases it when the
  holder dies, SIGKILL included, so there are no stale locks to guess about. Two processes
  sharing a folder (on one machine, or on a shared filesystem that supports locks) never run
  the same run at once.
- A finished run has a record ``_runs/<id>.json`` naming its result file; ``finished`` checks
  both, so finished runs are skipped.
- Checkpoints are ``torch.save`` files loaded with ``weights_only=True``: nothing else is ever
  unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import torch

from ..atomic import atomic_file, fsync_dir, write_json
from .spec import RunInputError, RunSpec

DEEPOBS = "deepobs"
"""The DeepOBS tree: finished runs only, in DeepOBS's layout."""
RUNS = "_runs"
DIVERGED = "_diverged"
LAYOUT_LOCK = ".layout.lock"
"""In ``_runs/``: held while a folder in the older layout is moved into ``deepobs/``."""


class OutputFolderError(ValueError):
    """The results folder cannot be created or written."""


class RunLock:
    """An exclusive, crash-released lock on one run."""

    def __init__(self, handle: IO[str], path: Path) -> None:
        self._handle = handle
        self.path = path

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _is_problem_folder(path: Path) -> bool:
    """A DeepOBS problem folder of the older layout: ``<problem>/<optimizer>/num_epochs__*/``."""
    return path.is_dir() and any(path.glob("*/num_epochs*/"))


def _merge_into(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, merging folders; a file never replaces one already there
    (it stays behind, and is still read by the report)."""
    if not target.exists():
        os.rename(source, target)
        return
    if source.is_dir() and target.is_dir():
        for child in sorted(source.iterdir()):
            _merge_into(child, target / child.name)
        with contextlib.suppress(OSError):
            source.rmdir()


def move_legacy_layout(root: Path) -> list[str]:
    """Move the problem folders of the older layout (beside ``_runs/`` at the top of the results
    folder) into ``deepobs/``; the names moved. Safe when several processes start at once."""
    candidates = [
        p
        for p in root.iterdir()
        if p.name not in (DEEPOBS, RUNS, DIVERGED) and _is_problem_folder(p)
    ]
    if not candidates:
        return []
    with open(root / RUNS / LAYOUT_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        moved = []
        for path in candidates:
            if path.exists():  # another process may have moved it while this one waited
                (root / DEEPOBS).mkdir(exist_ok=True)
                _merge_into(path, root / DEEPOBS / path.name)
                moved.append(path.name)
        fsync_dir(root)
    return moved


def _existing_result(root: Path, record: Any) -> str | None:
    """The result file a finished-record names, relative to ``root``, when it is there; a record
    of the older layout names it without ``deepobs/``, where it was moved."""
    relative = record.get("result") if isinstance(record, dict) else None
    if not isinstance(relative, str) or not relative:
        return None
    for candidate in (relative, f"{DEEPOBS}/{relative}"):
        if (root / candidate).is_file():
            return candidate
    return None


class ResultStore:
    """A results folder: the DeepOBS tree plus our bookkeeping (see docs/results.md).

    ``moved`` lists the problem folders of an older-layout folder that opening it moved into
    ``deepobs/`` (empty for a folder already in this layout).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.name == DEEPOBS and (self.root.parent / RUNS).is_dir():
            raise OutputFolderError(
                f"{self.root} is the DeepOBS tree inside the results folder {self.root.parent}; "
                f"use {self.root.parent} as the results folder"
            )
        try:
            (self.root / RUNS).mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root / RUNS, prefix=".probe."):
                pass
            self.moved = move_legacy_layout(self.root)
        except OSError as exc:
            raise OutputFolderError(
                f"cannot write to the output folder {self.root}: {exc.strerror or exc}"
            ) from None

    @property
    def deepobs_root(self) -> Path:
        """The folder to give DeepOBS's analyzer: finished runs only, in DeepOBS's layout."""
        return self.root / DEEPOBS

    # -- paths -------------------------------------------------------------------------------

    def _runs(self, run_id: str, suffix: str) -> Path:
        return self.root / RUNS / f"{run_id}{suffix}"

    def checkpoint_path(self, spec: RunSpec) -> Path:
        return self._runs(spec.run_id, ".ckpt")

    def result_dir(self, spec: RunSpec, setting: str, diverged: bool) -> Path:
        base = self.root / DIVERGED if diverged else self.deepobs_root
        return base / spec.problem / spec.optimizer / setting

    # -- finished runs ---------------------------------------------------------------------------

    def record(self, spec: RunSpec) -> dict[str, Any] | None:
        """The finished-record of a run (``result``, ``spec``, ``context``, and ``written``: the
        record's modification time), or None when it has none or its result file is missing."""
        path = self._runs(spec.run_id, ".json")
        try:
            data = json.loads(path.read_text())
            written = path.stat().st_mtime
        except (OSError, ValueError):
            return None
        relative = _existing_result(self.root, data)
        if relative is None:
            return None
        return {**data, "result": relative, "written": written}

    def finished(self, spec: RunSpec) -> Path | None:
        """The result file of a finished run, or None."""
        data = self.record(spec)
        return None if data is None else self.root / data["result"]

    def forget(self, spec: RunSpec) -> None:
        """Drop a finished run (``--rerun``): its result file first, then its record, so that
        a crash in between leaves a record naming nothing, which counts as not finished."""
        data = self.record(spec)
        if data is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.root / data["result"]).unlink()
        with contextlib.suppress(FileNotFoundError):
            self._runs(spec.run_id, ".json").unlink()

    def write_result(
        self,
        spec: RunSpec,
        result: dict[str, Any],
        setting: str,
        diverged: bool,
        context: dict[str, Any] | None = None,
    ) -> Path:
        """Write the finished-record, then the result file it names, then drop the checkpoint.

        In that order a process killed in between leaves a record naming a missing file, which
        ``finished`` ignores, so the retry's result replaces it; the other order would leave a
        result file without a record, and the retry would write a second one.
        """
        stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
        path = self.result_dir(spec, setting, diverged) / f"random_seed__{spec.seed}__{stamp}.json"
        write_json(
            self._runs(spec.run_id, ".json"),
            {
                "result": str(path.relative_to(self.root)),
                "spec": spec.identity(),
                "context": context,
            },
        )
        write_json(path, result)
        with contextlib.suppress(FileNotFoundError):
            self.checkpoint_path(spec).unlink()
        return path

    def load_result(self, spec: RunSpec) -> dict[str, Any] | None:
        """The result of a finished run, or None; a result file that is not a JSON object is a
        ``RunInputError`` naming it (it was changed after it was written)."""
        path = self.finished(spec)
        if path is None:
            return None
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            result = exc
        if not isinstance(result, dict):
            raise RunInputError(
                f"result file {path} of a finished run is not a JSON object ({result}); "
                f"delete it and {self._runs(spec.run_id, '.json')} to run it again"
            )
        return result

    # -- locks -----------------------------------------------------------------------------------

    def try_lock(self, spec: RunSpec) -> RunLock | None:
        """The run's lock, or None when another live process holds it."""
        path = self._runs(spec.run_id, ".lock")
        handle = open(path, "a+")  # noqa: SIM115 - the lock object owns and closes it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
        handle.flush()
        return RunLock(handle, path)

    def is_locked(self, spec: RunSpec) -> bool:
        lock = self.try_lock(spec)
        if lock is None:
            return True
        lock.release()
        return False

    # -- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(self, spec: RunSpec, state: dict[str, Any]) -> None:
        with atomic_file(self.checkpoint_path(spec), "wb") as f:
            torch.save(state, f)

    def load_checkpoint(self, spec: RunSpec) -> dict[str, Any] | None:
        path = self.checkpoint_path(spec)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            state = exc
        if not isinstance(state, dict):
            reason = " ".join(str(state).split())[:120]
            raise RunInputError(
                f"checkpoint {path} is truncated or corrupt ({reason}); "
                "delete it to start the run again"
            )
        return state
