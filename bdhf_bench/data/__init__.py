"""Data sets as device-resident tensors: readers, DeepOBS splits, batching and augmentation.

``load_splits`` reads a data set's standard files (or draws synthetic data) and returns DeepOBS's
four splits on the run's device; ``train_stream`` makes the shuffled, augmented training batches;
``eval_batches`` walks a split in fixed order.
"""

from __future__ import annotations

from .augment import Augmentation, augmentation_for
from .download import CorruptDataError, MissingDataError
from .identity import data_identity
from .specs import SPECS, DatasetSpec, dataset_names, get_spec
from .splits import SOURCES, SPLIT_NAMES, DataSplits, load_splits
from .stream import BatchStream, eval_batches
from .synthetic import DEFAULT_SYNTHETIC_SIZES


def train_stream(
    splits: DataSplits, batch_size: int, *, seed: int, augment: bool = True
) -> BatchStream:
    """Training batches of ``splits``, with DeepOBS's augmentation for the data set if ``augment``
    (and it has one)."""
    aug = augmentation_for(get_spec(splits.dataset), splits.device) if augment else None
    return BatchStream(*splits.train, batch_size, seed=seed, augment=aug)


__all__ = [
    "DEFAULT_SYNTHETIC_SIZES",
    "SOURCES",
    "SPECS",
    "SPLIT_NAMES",
    "Augmentation",
    "BatchStream",
    "CorruptDataError",
    "DataSplits",
    "DatasetSpec",
    "MissingDataError",
    "augmentation_for",
    "data_identity",
    "dataset_names",
    "eval_batches",
    "get_spec",
    "load_splits",
    "train_stream",
]
