"""The packaged data sets against the packages' own arrays: MNIST-1D from its generator and
scikit-learn's digits, split DeepOBS's way, bitwise the packages' values, deterministic."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from bdhf_bench.data import load_splits
from bdhf_bench.data.packaged import _digits, _mnist1d


@pytest.fixture(scope="module")
def mnist1d_arrays() -> dict:
    """The published data set, straight from the package's generator (seed 42)."""
    from mnist1d.data import get_dataset_args, make_dataset

    return make_dataset(get_dataset_args())


@pytest.fixture(scope="module")
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


def _rows(x: torch.Tensor, y: torch.Tensor) -> Counter:
    """Each example as (exact bytes, label), counted (digits holds duplicate images)."""
    return Counter(zip((r.tobytes() for r in x.numpy()), y.tolist()))


def _package_rows(x: np.ndarray, y: np.ndarray) -> Counter:
    return Counter(zip((r.tobytes() for r in x.astype(np.float32)), y.tolist()))


def test_mnist1d_is_the_generators_data_split_deepobs_style(mnist1d_arrays) -> None:
    splits = load_splits("mnist1d", seed=42)
    assert splits.sizes == {"train": 3000, "train_eval": 1000, "valid": 1000, "test": 1000}
    assert not splits.scaled and splits.sizes == splits.standard_sizes
    x, y = mnist1d_arrays["x"], mnist1d_arrays["y"]
    assert x.shape == (4000, 40) and mnist1d_arrays["x_test"].shape == (1000, 40)
    # test: the generator's test sequences, in order, bitwise (as float32)
    assert splits.test[0].dtype == torch.float32 and splits.test[0].shape == (1000, 40)
    assert np.array_equal(splits.test[0].numpy(), mnist1d_arrays["x_test"].astype(np.float32))
    assert torch.equal(splits.test[1], torch.from_numpy(mnist1d_arrays["y_test"]))
    # train and valid partition the generator's training sequences; train_eval lies in train
    train, valid = _rows(*splits.train), _rows(*splits.valid)
    assert train + valid == _package_rows(x, y)
    assert not set(train) & set(valid)
    assert not _rows(*splits.train_eval) - train
    # ten classes, with the generator's label counts
    labels = torch.cat([splits.train[1], splits.valid[1]])
    assert torch.equal(torch.bincount(labels, minlength=10), torch.from_numpy(np.bincount(y)))


def test_digits_are_sklearns_pixels_over_16_split_with_a_fixed_test_carve(digits_arrays) -> None:
    images, labels = digits_arrays
    splits = load_splits("digits", seed=42)
    assert splits.sizes == {"train": 1200, "train_eval": 300, "valid": 300, "test": 297}
    assert not splits.scaled
    assert splits.train[0].shape == (1200, 64) and splits.train[0].dtype == torch.float32
    everything = _rows(*splits.train) + _rows(*splits.valid) + _rows(*splits.test)
    assert everything == _package_rows(images / 16.0, labels)
    assert float(splits.train[0].min()) == 0.0 and float(splits.train[0].max()) == 1.0
    all_labels = torch.cat([splits.train[1], splits.valid[1], splits.test[1]])
    assert torch.equal(torch.bincount(all_labels), torch.from_numpy(np.bincount(labels)))
    # the test carve does not depend on the run's seed; the validation carve does
    other = load_splits("digits", seed=43)
    assert torch.equal(other.test[0], splits.test[0])
    assert not torch.equal(other.valid[0], splits.valid[0])


@pytest.mark.parametrize("dataset", ["mnist1d", "digits"])
def test_a_fixed_seed_gives_the_same_splits_twice(dataset: str) -> None:
    a, b = load_splits(dataset, seed=7), load_splits(dataset, seed=7)
    for name in ("train", "train_eval", "valid", "test"):
        assert torch.equal(a.split(name)[0], b.split(name)[0])
        assert torch.equal(a.split(name)[1], b.split(name)[1])


def test_building_mnist1d_leaves_the_global_random_state_alone() -> None:
    _mnist1d.cache_clear()
    np.random.seed(3)
    random.seed(3)
    load_splits("mnist1d", seed=0)
    fresh = np.random.RandomState(3)
    assert np.random.random() == fresh.random_sample()
    assert random.random() == random.Random(3).random()


def test_callers_get_copies_of_the_cached_arrays() -> None:
    splits = load_splits("digits", seed=0)
    splits.test[0].zero_()
    assert load_splits("digits", seed=0).test[0].abs().sum() > 0
    assert _digits().test_x.any()


@pytest.mark.parametrize(("dataset", "width"), [("mnist1d", 40), ("digits", 64)])
def test_synthetic_stand_ins_have_the_real_shapes(dataset: str, width: int) -> None:
    splits = load_splits(dataset, source="synthetic", seed=1, synthetic_sizes=(50, 20))
    assert splits.train[0].shape[1:] == (width,) and splits.test[0].shape == (20, width)
    assert splits.train[0].dtype == torch.float32
    assert int(splits.train[1].max()) < 10
