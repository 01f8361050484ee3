"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

The format (LeCun's "idx"): two zero bytes, a type code (0x08 for unsigned bytes), the number of
dimensions, then that many big-endian 32-bit sizes, then the data in C order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """The unsigned-byte array stored in an IDX file (``.gz`` files are decompressed)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    if data[2] != _UBYTE:
        raise ValueError(f"{path}: IDX type 0x{data[2]:02x} is not unsigned bytes (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(data) - header != count:
        raise ValueError(
            f"{path}: IDX header says {shape} ({count} bytes) but the file holds "
            f"{len(data) - header} bytes of data"
        )
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an unsigned-byte array as an IDX file (gzip when the name ends in ``.gz``).

    For test fixtures and the benchmark's generated data set.
    """
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
