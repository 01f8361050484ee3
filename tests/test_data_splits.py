"""DeepOBS's splits: sizes as specified, disjoint, deterministic; synthetic data; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_fixtures import index_of, write_mnist

from bdhf_bench.data import SPECS, get_spec, load_splits
from bdhf_bench.data.splits import carve_sizes

# DeepOBS 1.2's documented sizes: valid = train_eval = train_eval_size (the test set's size),
# carved out of the training file.
DEEPOBS_SIZES = {
    "mnist": {"train": 50000, "train_eval": 10000, "valid": 10000, "test": 10000},
    "fmnist": {"train": 50000, "train_eval": 10000, "valid": 10000, "test": 10000},
    "cifar10": {"train": 40000, "train_eval": 10000, "valid": 10000, "test": 10000},
    "cifar100": {"train": 40000, "train_eval": 10000, "valid": 10000, "test": 10000},
    "svhn": {"train": 73257 - 26032, "train_eval": 26032, "valid": 26032, "test": 26032},
}


@pytest.mark.parametrize("dataset", sorted(DEEPOBS_SIZES))
def test_standard_files_give_deepobs_sizes(dataset: str) -> None:
    spec = get_spec(dataset)
    sizes, scaled = carve_sizes(spec, spec.train_file_size, spec.test_size)
    assert sizes == DEEPOBS_SIZES[dataset] == spec.standard_sizes
    assert not scaled


def test_the_10000_digit_subset_scales_proportionally() -> None:
    # ../shared/data/mnist-subset holds 8,004 training and 1,996 test digits
    sizes, scaled = carve_sizes(get_spec("mnist"), 8004, 1996)
    assert scaled
    assert sizes == {"train": 6670, "train_eval": 1334, "valid": 1334, "test": 1996}


def _traced(splits) -> dict[str, torch.Tensor]:
    return {
        name: index_of(splits.split(name)[0][:, 0]) for name in ("train", "train_eval", "valid")
    }


def test_splits_are_disjoint_complete_sized_and_deterministic(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", 600, 100)
    with pytest.warns(UserWarning, match="600 training and 100 test"):
        a = load_splits("mnist", data_dir=tmp_path, seed=7, download=False)
    assert a.scaled and a.source == "real" and a.dataset == "mnist"
    assert a.sizes == {"train": 500, "train_eval": 100, "valid": 100, "test": 100}
    assert a.standard_sizes == DEEPOBS_SIZES["mnist"]
    assert {k: len(a.split(k)[0]) for k in a.sizes} == a.sizes
    rows = _traced(a)
    train, valid, train_eval = (set(rows[k].tolist()) for k in ("train", "valid", "train_eval"))
    assert not train & valid
    assert train | valid == set(range(600))
    assert train_eval <= train and len(train_eval) == 100
    with pytest.warns(UserWarning):
        again = load_splits("mnist", data_dir=tmp_path, seed=7, download=False)
        other = load_splits("mnist", data_dir=tmp_path, seed=8, download=False)
    for name in ("train", "train_eval", "valid", "test"):
        assert torch.equal(a.split(name)[0], again.split(name)[0])
        assert torch.equal(a.split(name)[1], again.split(name)[1])
    assert set(_traced(other)["valid"].tolist()) != valid
    assert torch.equal(a.test[0], other.test[0])  # the test file is not reshuffled


def test_quadratic_is_deepobs_fixed_draws() -> None:
    splits = load_splits("quadratic")
    # DeepOBS's quadratic data set: N(0, 0.6^2) draws from RandomState 42 (train), 44 (valid),
    # 43 (test); train_eval is the training set
    for name, seed in (("train", 42), ("valid", 44), ("test", 43)):
        expected = np.random.RandomState(seed).normal(0.0, 0.6, (1000, 100)).astype(np.float32)
        assert torch.equal(splits.split(name)[0], torch.from_numpy(expected))
    assert torch.equal(splits.train_eval[0], splits.train[0])
    assert splits.sizes == {"train": 1000, "train_eval": 1000, "valid": 1000, "test": 1000}
    assert not splits.scaled


@pytest.mark.parametrize("dataset", sorted(SPECS))
def test_synthetic_data_has_real_shapes_ranges_and_classes(dataset: str) -> None:
    spec = get_spec(dataset)
    a = load_splits(dataset, source="synthetic", seed=3, synthetic_sizes=(300, 80))
    b = load_splits(dataset, source="synthetic", seed=3, synthetic_sizes=(300, 80))
    c = load_splits(dataset, source="synthetic", seed=4, synthetic_sizes=(300, 80))
    assert a.source == "synthetic"
    for name in ("train", "train_eval", "valid", "test"):
        x, y = a.split(name)
        assert x.shape[1:] == spec.input_shape and x.dtype == torch.float32
        assert y.dtype == torch.long and len(y) == len(x) == a.sizes[name]
        assert torch.equal(x, b.split(name)[0])
    assert not torch.equal(a.train[0], c.train[0])
    x, y = a.train
    if spec.num_classes:
        assert int(y.min()) >= 0 and int(y.max()) < spec.num_classes
        if spec.num_classes <= 10:
            assert len(set(y.tolist())) == spec.num_classes
    if len(spec.input_shape) == 3 or dataset == "smnist":
        mean = torch.tensor(spec.mean or (0.0,)).view(1, -1, *([1] * (x.dim() - 2)))
        std = torch.tensor(spec.std or (1.0,)).view(1, -1, *([1] * (x.dim() - 2)))
        pixels = x * std + mean if dataset != "smnist" else x
        assert float(pixels.min()) >= -1e-5 and float(pixels.max()) <= 1 + 1e-5
        assert float(pixels.std()) > 0.05


def test_synthetic_sizes_split_like_the_real_ones() -> None:
    splits = load_splits("cifar10", source="synthetic", synthetic_sizes=(500, 100))
    # valid = 10000/50000 of the training file, as for the real files
    assert splits.sizes == {"train": 400, "train_eval": 100, "valid": 100, "test": 100}


def test_bad_arguments_are_one_line_value_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown data set 'mnsit' \(did you mean mnist"):
        load_splits("mnsit")
    with pytest.raises(ValueError, match="unknown data source 'fake'; valid: real, synthetic"):
        load_splits("mnist", source="fake")
    with pytest.raises(ValueError, match="synthetic_sizes"):
        load_splits("mnist", source="synthetic", synthetic_sizes=(1, 1))
    with pytest.raises(ValueError, match="unknown split"):
        load_splits("tiny").split("validation")
