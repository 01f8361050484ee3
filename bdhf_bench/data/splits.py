"""DeepOBS 1.2's four splits, held as tensors on the run's device.

- valid: carved at random out of the training file, the size of the test set (DeepOBS's
  ``train_eval_size``); train: the rest of the training file.
- train_eval: a fixed random subset of train, the size of the test set, evaluated WITHOUT
  augmentation. (DeepOBS 1.2 redraws it from the whole training file, validation images included,
  at every evaluation, and measures it on augmented images; we keep it inside train and fixed.)
- test: the test file (for scikit-learn's digits, which have none, a fixed carve: data/packaged.py).

When the files hold fewer examples than the standard set (a 10,000-digit MNIST subset, say), the
validation and train_eval sizes shrink in proportion, a warning says so, and ``sizes`` records
what was used. The carve is a pure function of the seed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .download import CorruptDataError
from .files import RawData, file_set, read_raw
from .packaged import PACKAGED_DATASETS, read_packaged
from .preprocess import to_inputs
from .seeding import generator
from .specs import DatasetSpec, get_spec
from .synthetic import DEFAULT_SYNTHETIC_SIZES, quadratic_draws, synthetic_raw, tiny_blobs

SOURCES = ("real", "synthetic")
SPLIT_NAMES = ("train", "train_eval", "valid", "test")
TINY_SEED = 20171220
"""The fixed seed of the "real" tiny data set (the same data for every run)."""

Pair = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class DataSplits:
    """The four splits as (inputs, labels) pairs on one device, and what their sizes are."""

    dataset: str
    source: str
    train: Pair
    train_eval: Pair
    valid: Pair
    test: Pair
    sizes: dict[str, int]
    """Examples actually in each split."""
    standard_sizes: dict[str, int]
    """DeepOBS's sizes for the full data set."""
    scaled: bool
    """True when the files were smaller than the standard set and the splits were scaled down."""

    def split(self, name: str) -> Pair:
        """One split by name ("train", "train_eval", "valid" or "test")."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)

    @property
    def device(self) -> torch.device:
        return self.train[0].device


def carve_sizes(spec: DatasetSpec, n_train_file: int, n_test: int) -> tuple[dict[str, int], bool]:
    """Split sizes for files with ``n_train_file`` training and ``n_test`` test examples, and
    whether they are scaled down from the standard ones."""
    scaled = n_train_file < spec.train_file_size or n_test < spec.test_size
    if n_train_file < spec.train_file_size:
        valid = max(1, round(spec.valid_size * n_train_file / spec.train_file_size))
    else:
        valid = spec.valid_size
    train = n_train_file - valid
    if train < 1 or n_test < 1:
        raise ValueError(
            f"{spec.name}: {n_train_file} training and {n_test} test examples are too few to split"
        )
    sizes = {"train": train, "train_eval": min(train, valid), "valid": valid, "test": n_test}
    return sizes, scaled


def carve_indices(n_train_file: int, sizes: dict[str, int], seed: int) -> dict[str, Tensor]:
    """Sorted indices into the training file for train, train_eval and valid (CPU int64)."""
    perm = torch.randperm(n_train_file, generator=generator("cpu", seed, "valid-carve"))
    valid = perm[: sizes["valid"]].sort().values
    train = perm[sizes["valid"] :].sort().values
    pick = torch.randperm(len(train), generator=generator("cpu", seed, "train-eval"))
    train_eval = train[pick[: sizes["train_eval"]]].sort().values
    return {"train": train, "train_eval": train_eval, "valid": valid}


def raw_arrays(
    dataset: str, source: str, data_dir: Path, seed: int, sizes: tuple[int, int], download: bool
) -> RawData:
    """A data set's training-file and test arrays before carving: read from its files, or drawn
    from ``seed`` with ``sizes`` = (training file, test) examples (not for the quadratic)."""
    if dataset == "tiny":
        spec = get_spec("tiny")
        if source == "real":
            return tiny_blobs(TINY_SEED, (spec.train_file_size, spec.test_size))
        return tiny_blobs(seed, sizes)
    if source == "synthetic":
        return synthetic_raw(dataset, seed, sizes)
    if dataset in PACKAGED_DATASETS:
        return read_packaged(dataset)
    files_of = file_set(dataset)
    if files_of is None:
        raise ValueError(f"{dataset!r} has no real source")
    return read_raw(files_of, data_dir, download)


def quadratic_arrays(
    source: str, seed: int, sizes: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quadratic's (train, valid, test) draws: DeepOBS's own ("real") or from ``seed``."""
    if source == "synthetic":
        return quadratic_draws(seed, sizes)
    from deepobs.pytorch.datasets.quadratic import quadratic

    data = quadratic(batch_size=1)
    loaders = (data._train_dataloader, data._valid_dataloader, data._test_dataloader)
    return tuple(loader.dataset.tensors[0].numpy() for loader in loaders)


def _quadratic_splits(
    source: str, seed: int, sizes: tuple[int, int], device: torch.device
) -> DataSplits:
    """DeepOBS's noisy quadratic: separate draws for train, valid and test, train_eval = train,
    no labels (zeros stand in). "real" is DeepOBS's own fixed draws (seeds 42, 44, 43)."""
    spec = get_spec("quadratic")
    arrays = quadratic_arrays(source, seed, sizes)
    train, valid, test = (to_inputs(spec, a, device) for a in arrays)
    pairs = {
        name: (x, torch.zeros(len(x), dtype=torch.long, device=device))
        for name, x in (("train", train), ("valid", valid), ("test", test))
    }
    pairs["train_eval"] = pairs["train"]
    actual = {name: len(pairs[name][0]) for name in SPLIT_NAMES}
    return DataSplits(
        "quadratic",
        source,
        **{n: pairs[n] for n in SPLIT_NAMES},
        sizes=actual,
        standard_sizes=spec.standard_sizes,
        scaled=source == "synthetic",
    )


def _check_real(spec: DatasetSpec, raw: RawData, data_dir: Path) -> None:
    """Files that read but cannot be what they claim: too few examples, labels out of range."""
    n_train, n_test = len(raw.train_x), len(raw.test_x)
    if n_train < 2 or n_test < 1:
        raise CorruptDataError(
            f"{spec.name}: the files in {data_dir} hold {n_train} training and {n_test} test "
            "examples, too few to split (truncated?); replace them"
        )
    for labels in (raw.train_y, raw.test_y):
        if (
            spec.num_classes
            and len(labels)
            and not 0 <= labels.min() <= labels.max() < spec.num_classes
        ):
            raise CorruptDataError(
                f"{spec.name}: the files in {data_dir} hold labels {labels.min()}..{labels.max()}, "
                f"outside 0..{spec.num_classes - 1} (corrupt); replace them"
            )


def load_splits(
    dataset: str,
    *,
    data_dir: str | Path = "data_deepobs",
    source: str = "real",
    device: torch.device | str = "cpu",
    seed: int = 0,
    download: bool = True,
    synthetic_sizes: tuple[int, int] = DEFAULT_SYNTHETIC_SIZES,
) -> DataSplits:
    """Load ``dataset`` and return its DeepOBS splits as tensors on ``device``.

    ``source="real"`` reads the standard files under ``data_dir`` (downloading missing ones when
    ``download`` and the network allow), or builds a packaged data set (MNIST-1D, digits: no
    files); ``"synthetic"`` draws data of the same shapes and classes from ``seed``, with
    ``synthetic_sizes`` = (training file, test) examples. The valid/train carve is drawn from
    ``seed``.
    """
    spec = get_spec(dataset)
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; valid: {', '.join(SOURCES)}")
    if len(synthetic_sizes) != 2 or min(synthetic_sizes) < 2:
        raise ValueError(f"synthetic_sizes must be two sizes >= 2, got {synthetic_sizes}")
    device = torch.device(device)
    if dataset == "quadratic":
        return _quadratic_splits(source, seed, synthetic_sizes, device)
    raw = raw_arrays(dataset, source, Path(data_dir), seed, synthetic_sizes, download)
    if source == "real":
        _check_real(spec, raw, Path(data_dir))
    sizes, scaled = carve_sizes(spec, len(raw.train_x), len(raw.test_x))
    if scaled and source == "real":
        warnings.warn(
            f"{dataset}: the files in {data_dir} hold {len(raw.train_x)} training and "
            f"{len(raw.test_x)} test examples (standard: {spec.train_file_size} and "
            f"{spec.test_size}); splits scaled down to {sizes}",
            stacklevel=2,
        )
    inputs = to_inputs(spec, raw.train_x, device)
    labels = torch.from_numpy(raw.train_y).to(device)
    idx = {k: v.to(device) for k, v in carve_indices(len(inputs), sizes, seed).items()}
    pairs = {k: (inputs.index_select(0, i), labels.index_select(0, i)) for k, i in idx.items()}
    test = (to_inputs(spec, raw.test_x, device), torch.from_numpy(raw.test_y).to(device))
    return DataSplits(
        dataset,
        source,
        pairs["train"],
        pairs["train_eval"],
        pairs["valid"],
        test,
        sizes,
        spec.standard_sizes,
        scaled,
    )
