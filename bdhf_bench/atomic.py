"""Atomic file writes, for results, checkpoints and reports alike: a reader never sees a
half-written file, and a crash right after a write does not lose it.

The data goes to a temporary file in the same folder, is flushed and fsynced, renamed over the
target, and the folder is fsynced so the rename itself survives a power cut. The temporary name
never contains ".json": DeepOBS's analyzer takes any name containing it for a finished run, and
may list a setting folder while a result is being written.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    """Make a rename or creation in ``path`` durable (a no-op where folders cannot be synced)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file renamed into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other readers
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON (NaN and infinity refused: results are plain JSON)."""
    with atomic_file(path) as f:
        json.dump(data, f, indent=1, allow_nan=False)
        f.write("\n")


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    """UTF-8 ``text``."""
    return write_bytes(path, text.encode("utf-8"))
