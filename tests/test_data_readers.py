"""Readers: tiny files in the real formats load with the right values and labels."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_fixtures import (
    index_of,
    write_cifar10,
    write_cifar100,
    write_mnist,
    write_svhn,
)

from bdhf_bench.data import get_spec, load_splits
from bdhf_bench.data.cifar import read_cifar_batch


def _pixels(dataset: str, inputs: torch.Tensor) -> torch.Tensor:
    """Undo DeepOBS's Normalize: back to [0, 1] pixels."""
    spec = get_spec(dataset)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return inputs * std + mean


def _check_pairs(split, file_x: np.ndarray, file_y: np.ndarray, pixels: torch.Tensor) -> None:
    """Every loaded row equals the file row it came from, and carries that row's label."""
    rows = index_of(pixels)
    expected = torch.from_numpy(file_x[rows.numpy()]).float() / 255
    torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)
    assert torch.equal(split[1], torch.from_numpy(np.asarray(file_y, dtype=np.int64)[rows.numpy()]))


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_torchvision_layout(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path / "MNIST" / "raw", 240, 60, gz=gz)
    with pytest.warns(UserWarning, match="scaled down"):
        splits = load_splits("mnist", data_dir=tmp_path, seed=0, download=False)
    for name in ("train", "valid", "train_eval"):
        split = splits.split(name)
        assert split[0].shape[1:] == (1, 28, 28) and split[0].dtype == torch.float32
        _check_pairs(split, arrays["train_x"][:, None], arrays["train_y"], split[0])
    # the test split is the test file, in file order
    test_x, test_y = splits.test
    torch.testing.assert_close(test_x[:, 0], torch.from_numpy(arrays["test_x"]).float() / 255)
    assert torch.equal(test_y, torch.from_numpy(arrays["test_y"]).long())


def test_mnist_files_directly_in_data_dir(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path, 120, 30, gz=True)
    with pytest.warns(UserWarning):
        splits = load_splits("mnist", data_dir=tmp_path, download=False)
    assert splits.sizes["test"] == 30
    assert torch.equal(splits.test[1], torch.from_numpy(arrays["test_y"]).long())


def test_fashion_mnist_layout(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "FashionMNIST" / "raw", 120, 30, seed=5)
    with pytest.warns(UserWarning):
        splits = load_splits("fmnist", data_dir=tmp_path, download=False)
    _check_pairs(splits.train, arrays["train_x"][:, None], arrays["train_y"], splits.train[0])


def test_smnist_is_mnist_pooled_to_7x7_rows_as_steps(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "MNIST" / "raw", 120, 30)
    with pytest.warns(UserWarning):
        splits = load_splits("smnist", data_dir=tmp_path, download=False)
    x, y = splits.test
    assert x.shape == (30, 7, 7)
    # independent reference: 4x4 block means, row-major; step t is pooled row t
    blocks = arrays["test_x"].reshape(30, 7, 4, 7, 4).astype(np.float64) / 255
    torch.testing.assert_close(x.double(), torch.from_numpy(blocks.mean(axis=(2, 4))))
    assert torch.equal(y, torch.from_numpy(arrays["test_y"]).long())


def test_cifar10_batches(tmp_path: Path) -> None:
    arrays = write_cifar10(tmp_path, per_batch=40, n_test=30)
    with pytest.warns(UserWarning):
        splits = load_splits("cifar10", data_dir=tmp_path, download=False)
    assert splits.sizes["train"] + splits.sizes["valid"] == 200
    for name in ("train", "valid"):
        split = splits.split(name)
        _check_pairs(split, arrays["train_x"], arrays["train_y"], _pixels("cifar10", split[0]))
    test_pixels = _pixels("cifar10", splits.test[0])
    assert torch.equal(index_of(test_pixels), torch.arange(30))
    _check_pairs(splits.test, arrays["test_x"], arrays["test_y"], test_pixels)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    arrays = write_cifar100(tmp_path, n_train=150, n_test=40)
    with pytest.warns(UserWarning):
        splits = load_splits("cifar100", data_dir=tmp_path, download=False)
    _check_pairs(
        splits.test, arrays["test_x"], arrays["test_y"], _pixels("cifar100", splits.test[0])
    )
    assert int(splits.train[1].max()) >= 10  # fine (0..99), not coarse or CIFAR-10 labels


def test_svhn_mat_layout_and_zero_label(tmp_path: Path) -> None:
    arrays = write_svhn(tmp_path, n_train=100, n_test=30)
    with pytest.warns(UserWarning):
        splits = load_splits("svhn", data_dir=tmp_path, download=False)
    _check_pairs(splits.test, arrays["test_x"], arrays["test_y"], _pixels("svhn", splits.test[0]))
    assert set(splits.test[1].tolist()) == set(range(10))  # the stored 10s came back as 0


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:  # what a malicious pickle does
        return (os.mkdir, (self.path,))


def test_cifar_unpickler_refuses_anything_but_arrays(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Exploit(str(marker)), "labels": [0]}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_cifar_batch(tmp_path / "data_batch_1")
    assert not marker.exists()


def test_cifar_reader_opens_only_standard_member_names(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=2, n_test=2)
    renamed = tmp_path / "cifar-10-batches-py" / "my_batch.pkl"
    (tmp_path / "cifar-10-batches-py" / "test_batch").rename(renamed)
    with pytest.raises(ValueError, match="not a standard CIFAR batch file name"):
        read_cifar_batch(renamed)


def test_corrupt_idx_file_is_a_clear_error(tmp_path: Path) -> None:
    write_mnist(tmp_path, 20, 10, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="IDX header says"):
        load_splits("mnist", data_dir=tmp_path, download=False)
