"""Missing files: checksum-verified downloads that never leave half-written files, and a clear
one-line error when offline. The network is always mocked: these tests never go online."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import pytest
import torch
from test_data_fixtures import MNIST_NAMES, write_cifar10, write_mnist

from bdhf_bench.data import MissingDataError, files, load_splits
from bdhf_bench.data import download as dl
from bdhf_bench.problems import get_problem


def _offline(url: str, timeout: float):
    raise urllib.error.URLError("[Errno 101] Network is unreachable")


def _serve(pages: dict[str, bytes], fail_after: int | None = None):
    """A fake ``urlopen`` serving ``pages``; optionally the connection drops mid-file."""

    class Response(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            if fail_after is not None and self.tell() >= fail_after:
                raise ConnectionResetError("connection reset by peer")
            return super().read(n if fail_after is None else min(n, fail_after))

    def urlopen(url: str, timeout: float):
        if url not in pages:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
        return Response(pages[url])

    return urlopen


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("dataset", "folder", "expected"),
    [
        ("mnist", "MNIST/raw", "train-images-idx3-ubyte, train-labels-idx1-ubyte"),
        ("fmnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
        ("cifar10", "cifar-10-batches-py", "data_batch_1, data_batch_2"),
        ("cifar100", "cifar-100-python", "train, test"),
        ("svhn", "", "train_32x32.mat, test_32x32.mat"),
    ],
)
def test_offline_missing_data_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, folder: str, expected: str
) -> None:
    monkeypatch.setattr(dl, "_urlopen", _offline)
    with pytest.raises(MissingDataError) as info:
        load_splits(dataset, data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / folder) in message and expected in message
    assert "Network is unreachable" in message
    assert _all_files(tmp_path) == []  # nothing half-written
    assert list(tmp_path.iterdir()) == []  # and no empty data folders left behind
    # nothing else breaks: synthetic data and the problems still work in this process
    splits = load_splits(dataset, source="synthetic", synthetic_sizes=(60, 20))
    assert splits.sizes["test"] == 20
    assert get_problem("tiny_mlp").make_model()(torch.zeros(2, 8)).shape == (2, 4)


def test_download_disabled_says_so(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="downloading is disabled"):
        load_splits("mnist", data_dir=tmp_path, download=False)


def test_fetch_verifies_checksum_and_renames_only_when_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b"x" * 3000
    target = tmp_path / "sub" / "file.bin"
    monkeypatch.setattr(dl, "_urlopen", _serve({"http://a/f": payload, "http://b/f": b"evil"}))
    with pytest.raises(OSError, match="checksum mismatch"):
        dl.fetch(["http://b/f"], target, _md5(payload))
    assert _all_files(tmp_path) == []
    dl.fetch(["http://missing/f", "http://b/f", "http://a/f"], target, _md5(payload))
    assert target.read_bytes() == payload
    assert _all_files(tmp_path) == ["sub/file.bin"]


def test_interrupted_download_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = bytes(range(256)) * 50
    monkeypatch.setattr(dl, "_urlopen", _serve({"http://a/f": payload}, fail_after=1000))
    with pytest.raises(OSError, match="connection reset"):
        dl.fetch(["http://a/f"], tmp_path / "f", _md5(payload))
    assert _all_files(tmp_path) == []


def test_mnist_download_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "server"
    arrays = write_mnist(source, 90, 30, gz=True)
    blobs = {name: (source / f"{name}.gz").read_bytes() for name in MNIST_NAMES.values()}
    pages = {f"http://mirror/{n}.gz": b for n, b in blobs.items()}
    md5s = tuple(_md5(blobs[n]) for n in files._MNIST_NAMES)
    monkeypatch.setitem(files._MNIST_SOURCES, "mnist", ("MNIST", ("http://mirror/",), md5s))
    monkeypatch.setattr(dl, "_urlopen", _serve(pages))
    data = tmp_path / "data"
    with pytest.warns(UserWarning):
        splits = load_splits("mnist", data_dir=data)
    assert torch.equal(splits.test[1], torch.from_numpy(arrays["test_y"]).long())
    # torchvision's layout: the archives and the decompressed files, both complete
    raw = data / "MNIST" / "raw"
    for name in MNIST_NAMES.values():
        assert gzip.decompress((raw / f"{name}.gz").read_bytes()) == (raw / name).read_bytes()
    assert not [p for p in _all_files(data) if p.endswith(".part")]


def test_cifar_download_extracts_only_the_standard_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = write_cifar10(tmp_path / "server", per_batch=20, n_test=20)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "server" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        evil = tarfile.TarInfo("../../escaped.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    archive = buffer.getvalue()
    url = files._CIFAR_SOURCES["cifar10"][1]
    patched = (
        *files._CIFAR_SOURCES["cifar10"][:2],
        _md5(archive),
        *files._CIFAR_SOURCES["cifar10"][3:],
    )
    monkeypatch.setitem(files._CIFAR_SOURCES, "cifar10", patched)
    monkeypatch.setattr(dl, "_urlopen", _serve({url: archive}))
    data = tmp_path / "data"
    with pytest.warns(UserWarning):
        splits = load_splits("cifar10", data_dir=data)
    assert torch.equal(splits.test[1], torch.from_numpy(arrays["test_y"]).long())
    assert sorted(_all_files(data)) == sorted(
        ["cifar-10-python.tar.gz", "cifar-10-batches-py/batches.meta"]
        + [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]
        + ["cifar-10-batches-py/test_batch"]
    )
    assert not (tmp_path / "escaped.txt").exists()
    # offline now: the files are there, so nothing is fetched
    monkeypatch.setattr(dl, "_urlopen", _offline)
    with pytest.warns(UserWarning):
        load_splits("cifar10", data_dir=data)
