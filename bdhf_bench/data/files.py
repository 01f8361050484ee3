"""Where each data set's standard files live (DeepOBS/torchvision layout) and how to get them.

The layout is torchvision's, which DeepOBS 1.2 uses, so an existing ``data_deepobs`` folder works:

- MNIST: ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
- Fashion-MNIST: the same under ``<data_dir>/FashionMNIST/raw/``
- CIFAR-10: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch}``
- CIFAR-100: ``<data_dir>/cifar-100-python/{train,test}``
- SVHN: ``<data_dir>/{train,test}_32x32.mat``

MNIST-style files are also found directly in ``<data_dir>`` (a plain folder of IDX files). Missing
files are downloaded from torchvision's sources and checked against torchvision's MD5 values. A
file that is there but cannot be read (truncated, corrupt, or a download archive whose MD5 is
wrong) raises ``CorruptDataError`` naming it, and is never downloaded over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cifar import CIFAR10_TEST, CIFAR10_TRAIN, CIFAR100_TEST, CIFAR100_TRAIN, read_cifar_batch
from .download import CorruptDataError, MissingDataError, extract_members, fetch, gunzip, md5_of
from .idx import read_idx
from .svhn import read_svhn_mat


@dataclass(frozen=True)
class RawData:
    """A data set's standard files as arrays: uint8 images (N, C, H, W) or float32 feature
    vectors (N, D), int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


_MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_MNIST_SOURCES = {
    "mnist": (
        "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
    "fmnist": (
        "FashionMNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
}
_CIFAR_SOURCES = {
    "cifar10": (
        "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        CIFAR10_TRAIN,
        CIFAR10_TEST,
        ("batches.meta",),
    ),
    "cifar100": (
        "cifar-100-python",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        CIFAR100_TRAIN,
        CIFAR100_TEST,
        ("meta",),
    ),
}
_SVHN_FILES = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def _missing(dataset: str, folder: Path, files: tuple[str, ...], why: str) -> MissingDataError:
    why = " ".join(str(why).split())
    return MissingDataError(
        f"{dataset}: data files not found in {folder} (expected {', '.join(files)}); {why}"
    )


def _read_file(dataset: str, path: Path, reader: Callable[[Path], Any]) -> Any:
    """``reader(path)``, with any failure turned into one line naming the file (the readers
    below it, gzip, pickle and scipy's MATLAB reader, raise a zoo of types for damaged input)."""
    try:
        return reader(path)
    except FileNotFoundError:
        raise
    except (PermissionError, IsADirectoryError) as err:
        raise CorruptDataError(f"{dataset}: cannot read {path}: {err.strerror}") from None
    except Exception as err:
        reason = " ".join(str(err).replace(str(path), "").strip(" :").split())
        raise CorruptDataError(
            f"{dataset}: {path} is truncated or corrupt ({reason or type(err).__name__}); "
            "delete it to download it again, or replace it"
        ) from None


def _check_archive(dataset: str, path: Path, md5: str) -> bool:
    """Whether a downloaded file is already there and intact; one with another MD5 is refused
    rather than downloaded over."""
    if not path.is_file():
        return False
    actual = md5_of(path)
    if actual != md5:
        raise CorruptDataError(
            f"{dataset}: {path} is truncated or corrupt (md5 {actual}, expected {md5}); "
            "delete it to download it again"
        )
    return True


def _find_idx(folders: list[Path]) -> list[Path] | None:
    """The four MNIST files (plain or .gz) in the first folder that holds all of them."""
    for folder in folders:
        found = []
        for name in _MNIST_NAMES:
            hit = next((folder / n for n in (name, name + ".gz") if (folder / n).is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found
    return None


def _read_mnist(dataset: str, data_dir: Path, download: bool) -> RawData:
    sub, mirrors, md5s = _MNIST_SOURCES[dataset]
    folder = data_dir / sub / "raw"
    paths = _find_idx([folder, data_dir])
    if paths is None:
        if not download:
            raise _missing(dataset, folder, _MNIST_NAMES, "downloading is disabled")
        try:
            for name, md5 in zip(_MNIST_NAMES, md5s):
                if not (folder / name).is_file():
                    gz = folder / f"{name}.gz"
                    if not _check_archive(dataset, gz, md5):
                        fetch([m + name + ".gz" for m in mirrors], gz, md5)
                    gunzip(gz, folder / name)
        except OSError as err:
            raise _missing(dataset, folder, _MNIST_NAMES, f"download failed: {err}") from None
        paths = [folder / name for name in _MNIST_NAMES]
    tx, ty, vx, vy = (_read_file(dataset, p, read_idx) for p in paths)
    for (x, y), names in (((tx, ty), paths[:2]), ((vx, vy), paths[2:])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise CorruptDataError(
                f"{dataset}: {names[0]} and {names[1]} do not match (images {x.shape}, "
                f"labels {y.shape}); replace them"
            )
    return RawData(tx[:, None], ty.astype(np.int64), vx[:, None], vy.astype(np.int64))


def _read_cifar(dataset: str, data_dir: Path, download: bool) -> RawData:
    sub, url, md5, train, test, extra = _CIFAR_SOURCES[dataset]
    folder = data_dir / sub
    names = train + test
    if not all((folder / n).is_file() for n in names):
        if not download:
            raise _missing(dataset, folder, names, "downloading is disabled")
        archive = data_dir / url.rsplit("/", 1)[1]
        try:
            if not _check_archive(dataset, archive, md5):
                fetch([url], archive, md5)
            extract_members(archive, folder, names + extra)
        except (OSError, KeyError) as err:
            raise _missing(dataset, folder, names, f"download failed: {err}") from None
    tx, ty = _batches(dataset, folder, train)
    vx, vy = _batches(dataset, folder, test)
    return RawData(tx, ty, vx, vy)


def _batches(dataset: str, folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_file(dataset, folder / name, read_cifar_batch) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _read_svhn(dataset: str, data_dir: Path, download: bool) -> RawData:
    names = tuple(_SVHN_FILES)
    missing = [n for n in names if not (data_dir / n).is_file()]
    if missing:
        if not download:
            raise _missing(dataset, data_dir, names, "downloading is disabled")
        try:
            for name in missing:
                fetch([_SVHN_URL + name], data_dir / name, _SVHN_FILES[name])
        except OSError as err:
            raise _missing(dataset, data_dir, names, f"download failed: {err}") from None
    tx, ty = _read_file(dataset, data_dir / "train_32x32.mat", read_svhn_mat)
    vx, vy = _read_file(dataset, data_dir / "test_32x32.mat", read_svhn_mat)
    return RawData(tx, ty, vx, vy)


_READERS: dict[str, Callable[[str, Path, bool], RawData]] = {
    "mnist": _read_mnist,
    "fmnist": _read_mnist,
    "cifar10": _read_cifar,
    "cifar100": _read_cifar,
    "svhn": _read_svhn,
}
FILE_DATASETS = tuple(_READERS)


def read_raw(dataset: str, data_dir: str | Path, download: bool = True) -> RawData:
    """The standard files of a file-backed data set as arrays, downloading missing ones."""
    if dataset not in _READERS:
        raise ValueError(f"{dataset!r} has no files; file-backed: {', '.join(FILE_DATASETS)}")
    return _READERS[dataset](dataset, Path(data_dir), download)


def file_set(dataset: str) -> str | None:
    """The file-backed data set whose files ``dataset`` reads (smnist reads MNIST's), or None
    for a data set that is generated rather than read."""
    name = "mnist" if dataset == "smnist" else dataset
    return name if name in _READERS else None


def loose_files(dataset: str) -> tuple[str, ...]:
    """The file names of a data set whose files sit directly in the data folder (SVHN's), so a
    listing can name them where the others name their own folder."""
    return tuple(_SVHN_FILES) if dataset == "svhn" else ()


def expected_folder(dataset: str, data_dir: str | Path) -> Path:
    """Where the files of a file-backed data set go under ``data_dir``."""
    data_dir = Path(data_dir)
    if dataset in _MNIST_SOURCES:
        return data_dir / _MNIST_SOURCES[dataset][0] / "raw"
    if dataset in _CIFAR_SOURCES:
        return data_dir / _CIFAR_SOURCES[dataset][0]
    return data_dir


def locate(dataset: str, data_dir: str | Path) -> list[Path] | None:
    """The files ``read_raw`` would read for ``dataset`` (no download), or None when any is
    missing."""
    data_dir = Path(data_dir)
    if dataset in _MNIST_SOURCES:
        return _find_idx([expected_folder(dataset, data_dir), data_dir])
    if dataset in _CIFAR_SOURCES:
        _, _, _, train, test, _ = _CIFAR_SOURCES[dataset]
        paths = [expected_folder(dataset, data_dir) / n for n in train + test]
    elif dataset == "svhn":
        paths = [data_dir / n for n in _SVHN_FILES]
    else:
        raise ValueError(f"{dataset!r} has no files; file-backed: {', '.join(FILE_DATASETS)}")
    return paths if all(p.is_file() for p in paths) else None


def probe_url(dataset: str) -> str:
    """One URL of ``dataset``'s download, to ask whether it can be fetched now."""
    if dataset in _MNIST_SOURCES:
        return _MNIST_SOURCES[dataset][1][0] + _MNIST_NAMES[0] + ".gz"
    if dataset in _CIFAR_SOURCES:
        return _CIFAR_SOURCES[dataset][1]
    if dataset == "svhn":
        return _SVHN_URL + "test_32x32.mat"
    raise ValueError(f"{dataset!r} has no files; file-backed: {', '.join(FILE_DATASETS)}")
