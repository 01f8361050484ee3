"""From file contents to model-ready tensors on the run's device, as DeepOBS's transforms do.

``ToTensor`` (uint8 -> float in [0, 1]) and ``Normalize`` for the colour data sets; smnist pools
MNIST 4x4 to 7x7 and reads it as 7 time steps (image rows) of 7 features (the pooled columns).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .specs import DatasetSpec


def to_inputs(spec: DatasetSpec, array: np.ndarray, device: torch.device) -> Tensor:
    """Model inputs for ``spec`` from raw file arrays (uint8 images, or float features)."""
    x = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    if x.dtype != torch.uint8:
        return x.float()
    x = x.float().div_(255.0)
    if spec.name == "smnist":
        return F.avg_pool2d(x, kernel_size=4).squeeze(1).contiguous()
    if spec.mean is not None and spec.std is not None:
        mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
        x = x.sub_(mean).div_(std)
    return x


def normalisation(spec: DatasetSpec, device: torch.device) -> tuple[Tensor, Tensor]:
    """(mean, std) shaped (1, C, 1, 1): pixels = inputs * std + mean (identity when unset)."""
    channels = spec.input_shape[0]
    mean = spec.mean if spec.mean is not None else (0.0,) * channels
    std = spec.std if spec.std is not None else (1.0,) * channels
    return (
        torch.tensor(mean, device=device).view(1, -1, 1, 1),
        torch.tensor(std, device=device).view(1, -1, 1, 1),
    )
