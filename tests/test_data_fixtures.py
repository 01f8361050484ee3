"""Tiny data sets in the REAL file formats, written into temporary folders (helpers), and checks
that the formats we write are the ones torchvision (DeepOBS's reader) reads."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torchvision

from bdhf_bench.data.idx import read_idx, write_idx

MNIST_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def tagged_images(n: int, shape: tuple[int, ...], seed: int, offset: int = 0) -> np.ndarray:
    """Random uint8 images whose first two values spell their index (offset + i) in base 256,
    so a loaded example can be traced back to its row in the file."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    index = np.arange(offset, offset + n)
    flat[:, 0] = index // 256
    flat[:, 1] = index % 256
    return images


def index_of(inputs: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """The file row of each loaded image written by ``tagged_images`` (inputs in [0, 1])."""
    flat = (inputs.reshape(len(inputs), -1)[:, :2] * scale).round().long()
    return flat[:, 0] * 256 + flat[:, 1]


def write_mnist(
    folder: Path, n_train: int, n_test: int, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """MNIST-format IDX files in ``folder``; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": tagged_images(n_train, (28, 28), seed),
        "train_y": (np.arange(n_train) % 10).astype(np.uint8),
        "test_x": tagged_images(n_test, (28, 28), seed + 1),
        "test_y": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    for key, name in MNIST_NAMES.items():
        write_idx(folder / (name + (".gz" if gz else "")), arrays[key])
    return arrays


def _pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-py`` with five training batches, a test batch and the meta file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    n_train = 5 * per_batch
    train_x = tagged_images(n_train, (3, 32, 32), seed)
    train_y = (np.arange(n_train) * 7) % 10
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        _pickle(
            folder / f"data_batch_{b + 1}",
            {
                "batch_label": f"training batch {b + 1} of 5",
                "labels": [int(v) for v in train_y[rows]],
                "data": train_x[rows].reshape(per_batch, -1),
                "filenames": [f"img_{i}.png" for i in range(per_batch)],
            },
        )
    test_x = tagged_images(n_test, (3, 32, 32), seed + 1)
    test_y = np.arange(n_test) % 10
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch",
            "labels": list(map(int, test_y)),
            "data": test_x.reshape(n_test, -1),
        },
    )
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def write_cifar100(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/cifar-100-python`` with train, test and meta (fine and coarse labels)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        x = tagged_images(n, (3, 32, 32), s)
        fine = (np.arange(n) * 37 + s) % 100
        _pickle(
            folder / name,
            {
                "data": x.reshape(n, -1),
                "fine_labels": list(map(int, fine)),
                "coarse_labels": list(map(int, fine // 5)),
            },
        )
        out[f"{name}_x"], out[f"{name}_y"] = x, fine
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    return out


def write_svhn(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/{train,test}_32x32.mat`` in SVHN's layout: X (32, 32, 3, N), y (N, 1), 0 as 10."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        x = tagged_images(n, (3, 32, 32), s)  # (N, C, H, W)
        digits = np.arange(n) % 10
        stored = np.where(digits == 0, 10, digits).reshape(n, 1).astype(np.uint8)
        scipy.io.savemat(root / f"{name}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": stored})
        out[f"{name}_x"], out[f"{name}_y"] = x, digits
    return out


# -- the formats are the real ones: torchvision reads what we write -------------------------------


def test_idx_round_trip_and_torchvision_reads_it(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    arrays = write_mnist(raw, 30, 10, gz=False)
    for key, name in MNIST_NAMES.items():
        np.testing.assert_array_equal(read_idx(raw / name), arrays[key])
    reference = torchvision.datasets.MNIST(str(tmp_path), train=True, download=False)
    np.testing.assert_array_equal(reference.data.numpy(), arrays["train_x"])
    np.testing.assert_array_equal(reference.targets.numpy(), arrays["train_y"])


def test_gzip_idx_is_plain_idx_compressed(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path, 12, 5, gz=True)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "rb") as f:
        header = f.read(16)
    assert header[:4] == bytes([0, 0, 8, 3])
    assert int.from_bytes(header[4:8], "big") == 5
    np.testing.assert_array_equal(
        read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), arrays["test_x"]
    )


def test_tags_survive_normalisation() -> None:
    images = tagged_images(700, (28, 28), seed=3)
    tensor = torch.from_numpy(images).float() / 255
    assert torch.equal(index_of(tensor), torch.arange(700))
