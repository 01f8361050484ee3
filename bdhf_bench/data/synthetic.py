"""Data generated from a seed, with each data set's real shapes, value ranges and classes.

For smoke tests and CI (``source="synthetic"``), and the generated data sets that have no files
(DeepOBS's noisy quadratic, our tiny classification set). Images are uint8 like the real files and
go through the same preprocessing; feature-vector data sets (MNIST-1D, digits) get float32 values
in [0, 1]. Each class has its own prototype, so a model can learn the labels and a falling loss
means something.
"""

from __future__ import annotations

import numpy as np

from .files import RawData
from .specs import get_spec

DEFAULT_SYNTHETIC_SIZES = (600, 100)
"""(training file, test) examples: small enough for CI, split like the real ones."""

_RAW_SHAPES = {
    "mnist": (1, 28, 28),
    "fmnist": (1, 28, 28),
    "smnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "svhn": (3, 32, 32),
}


def _examples(
    rng: np.random.Generator, n: int, prototypes: np.ndarray, images: bool
) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, len(prototypes), size=n)
    noise = rng.uniform(0, 1, size=(n, *prototypes.shape[1:]))
    values = 0.7 * prototypes[labels] + 0.3 * noise
    if images:
        values = np.clip(np.rint(255 * values), 0, 255).astype(np.uint8)
    else:
        values = values.astype(np.float32)
    return values, labels.astype(np.int64)


def synthetic_raw(dataset: str, seed: int, sizes: tuple[int, int]) -> RawData:
    """Examples and labels shaped like ``dataset``'s (uint8 images for the image data sets,
    float32 vectors otherwise), drawn from ``seed``."""
    spec = get_spec(dataset)
    images = dataset in _RAW_SHAPES
    shape = _RAW_SHAPES[dataset] if images else spec.input_shape
    rng = np.random.default_rng([seed, 0x5EED])
    prototypes = rng.uniform(0, 1, size=(spec.num_classes, *shape))
    tx, ty = _examples(rng, sizes[0], prototypes, images)
    vx, vy = _examples(rng, sizes[1], prototypes, images)
    return RawData(tx, ty, vx, vy)


def tiny_blobs(seed: int, sizes: tuple[int, int]) -> RawData:
    """Four Gaussian blobs in 8 dimensions (float32 features, not images)."""
    spec = get_spec("tiny")
    rng = np.random.default_rng([seed, 0x7177])
    means = 1.5 * rng.standard_normal((spec.num_classes, *spec.input_shape))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, spec.num_classes, size=n)
        x = means[y] + rng.standard_normal((n, *spec.input_shape))
        return x.astype(np.float32), y.astype(np.int64)

    return RawData(*draw(sizes[0]), *draw(sizes[1]))


def quadratic_draws(seed: int, sizes: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) draws of DeepOBS's noisy quadratic's data, N(0, 0.6^2) in 100-d."""
    rng = np.random.default_rng([seed, 0x9AD])
    dim = get_spec("quadratic").input_shape[0]
    n_train, n_test = sizes
    return tuple(
        rng.normal(0.0, 0.6, size=(n, dim)).astype(np.float32) for n in (n_train, n_test, n_test)
    )
