"""Reader for CIFAR-10/100's "python version" batch files (the standard archive members).

These files are pickles. Unpickling can run arbitrary code, so we only open files with the
standard member names, and unpickle through a restricted ``Unpickler`` that resolves nothing but
what CIFAR's batches are made of: dicts, lists, strings, numbers and numpy arrays.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR100_TRAIN = ("train",)
CIFAR100_TEST = ("test",)
STANDARD_MEMBERS = frozenset(CIFAR10_TRAIN + CIFAR10_TEST + CIFAR100_TRAIN + CIFAR100_TEST)

# Everything a CIFAR batch pickle (written by Python 2 + numpy, or re-written by Python 3) needs.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
    }
)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only numpy array reconstruction; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one standard CIFAR batch file.

    CIFAR-100's files carry ``fine_labels`` (the 100 classes DeepOBS uses) and
    ``coarse_labels``; CIFAR-10's carry ``labels``.
    """
    path = Path(path)
    if path.name not in STANDARD_MEMBERS:
        raise ValueError(
            f"{path}: not a standard CIFAR batch file name; expected one of "
            f"{', '.join(sorted(STANDARD_MEMBERS))}"
        )
    with open(path, "rb") as f:
        entry = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    if not isinstance(entry, dict) or "data" not in entry:
        raise ValueError(f"{path}: not a CIFAR batch (no 'data' entry)")
    labels = entry.get("fine_labels", entry.get("labels"))
    if labels is None:
        raise ValueError(f"{path}: not a CIFAR batch (no 'labels' or 'fine_labels' entry)")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{path}: CIFAR data must be (N, 3072) with N labels, got {data.shape} and "
            f"{labels.shape}"
        )
    return data.reshape(-1, 3, 32, 32), labels
