"""What data a run trains on, as a short fingerprint, so that a finished run on other data is
never taken for this one.

The fingerprint is a SHA-256 of the arrays before any carving (the training and test files, or
the quadratic's three draws) with their shapes and dtypes. It is the same for a folder of .gz
files and one of plain files holding the same digits, differs between a 4,000-digit and an
8,004-digit subset, and covers generated data (synthetic, tiny, the quadratic, data sets built
by packages) by hashing what the generator returns. It is computed once per process and data:
file-backed data is keyed by its files' paths, sizes and modification times, generated data by
the generator's arguments.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .files import file_set, locate, read_raw
from .splits import quadratic_arrays, raw_arrays

_CACHE: dict[tuple, dict[str, Any]] = {}


def _digest(arrays: tuple[np.ndarray, ...]) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:20]


def data_identity(
    dataset: str,
    *,
    source: str,
    data_dir: str | Path,
    seed: int,
    synthetic_sizes: tuple[int, int],
    download: bool = True,
) -> dict[str, Any]:
    """``{"dataset", "source", "examples", "sha256"}`` of the data ``load_splits`` would load
    with the same arguments (missing files are downloaded first when ``download``)."""
    data_dir = Path(data_dir)
    files_of = file_set(dataset) if source == "real" else None
    if files_of is not None:
        paths = locate(files_of, data_dir)
        if paths is None:
            read_raw(files_of, data_dir, download)  # downloads them, or raises MissingDataError
            paths = locate(files_of, data_dir) or []
        stats = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
        key: tuple = ("files", dataset, stats)
    else:
        key = ("generated", dataset, source, seed, tuple(synthetic_sizes))
    if key not in _CACHE:
        if dataset == "quadratic":
            arrays = quadratic_arrays(source, seed, synthetic_sizes)
            examples = dict(zip(("train", "valid", "test"), (len(a) for a in arrays)))
        else:
            raw = raw_arrays(dataset, source, data_dir, seed, synthetic_sizes, download)
            arrays = (raw.train_x, raw.train_y, raw.test_x, raw.test_y)
            examples = {"train_file": len(raw.train_x), "test": len(raw.test_x)}
        _CACHE[key] = {
            "dataset": dataset,
            "source": source,
            "examples": examples,
            "sha256": _digest(arrays),
        }
    return dict(_CACHE[key])
