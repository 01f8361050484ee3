"""Reader for SVHN's cropped-digit MATLAB files (``train_32x32.mat``, ``test_32x32.mat``).

``X`` is (32, 32, 3, N) uint8 and ``y`` is (N, 1) with the digit 0 stored as 10; we return
(N, 3, 32, 32) images and labels 0..9, as torchvision does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one SVHN .mat file."""
    try:
        mat = scipy.io.loadmat(str(path))
    except scipy.io.matlab.MatReadError as err:
        raise ValueError(f"{path}: not a MATLAB file ({err})") from None
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: not an SVHN file (needs variables X and y)")
    x = np.asarray(mat["X"], dtype=np.uint8)
    y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
        raise ValueError(f"{path}: SVHN X must be (32, 32, 3, N) with N labels, got {x.shape}")
    y = np.where(y == 10, 0, y)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y
