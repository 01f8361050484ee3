"""Data sets that ship inside Python packages: no files, no download, the same arrays everywhere.

- **MNIST-1D** (Greydanus 2020, "Scaling down deep learning", package ``mnist1d``): built by the
  package's own generator, ``make_dataset(get_dataset_args())``, whose default seed (42) gives
  the published data set: 4,000 training and 1,000 test sequences of 40 points, 10 classes,
  standardised by the generator. We never call the package's download path. The generator
  reseeds NumPy's and Python's global random state; both are restored afterwards.
- **scikit-learn's digits** (``sklearn.datasets.load_digits``): 1,797 real 8x8 handwritten
  digits, pixel values 0..16, scaled here to [0, 1] (exact: a division by 16). No test set ships
  with them, so a fixed carve (seed ``DIGITS_TEST_SEED``, the same for every run) sets aside
  ``DIGITS_TEST_SIZE`` digits as the test file; the rest is the training file, from which the
  splits carve validation like any other data set.

Both are float32 feature vectors (N, 40) and (N, 64). Each is built once per process and handed
out as fresh copies, so no caller can change another's data.
"""

from __future__ import annotations

import functools
import random

import numpy as np
import torch

from .files import RawData
from .seeding import generator

PACKAGED_DATASETS = ("mnist1d", "digits")
DIGITS_TEST_SEED = 1797
DIGITS_TEST_SIZE = 297
"""Test digits carved out of the 1,797 (the other 1,500 are the training file)."""


@functools.lru_cache(maxsize=1)
def _mnist1d() -> RawData:
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return RawData(
        data["x"].astype(np.float32),
        data["y"].astype(np.int64),
        data["x_test"].astype(np.float32),
        data["y_test"].astype(np.int64),
    )


def digits_test_rows(n: int = 1797) -> tuple[np.ndarray, np.ndarray]:
    """(training-file rows, test rows) of the digits, each sorted: a fixed random carve."""
    perm = torch.randperm(n, generator=generator("cpu", DIGITS_TEST_SEED, "digits-test")).numpy()
    return np.sort(perm[DIGITS_TEST_SIZE:]), np.sort(perm[:DIGITS_TEST_SIZE])


@functools.lru_cache(maxsize=1)
def _digits() -> RawData:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    pixels = (images / 16.0).astype(np.float32)
    train, test = digits_test_rows(len(labels))
    labels = labels.astype(np.int64)
    return RawData(pixels[train], labels[train], pixels[test], labels[test])


_BUILDERS = {"mnist1d": _mnist1d, "digits": _digits}


def read_packaged(dataset: str) -> RawData:
    """The arrays of a packaged data set (fresh copies of the per-process build)."""
    if dataset not in _BUILDERS:
        raise ValueError(
            f"{dataset!r} is not a packaged data set; packaged: {', '.join(PACKAGED_DATASETS)}"
        )
    raw = _BUILDERS[dataset]()
    return RawData(*(a.copy() for a in (raw.train_x, raw.train_y, raw.test_x, raw.test_y)))
