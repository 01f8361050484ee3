"""DeepOBS's training augmentation as batched torch ops on the data's device.

DeepOBS 1.2 (``deepobs.pytorch.datasets.cifar10``/``cifar100``/``svhn``) applies, per image,
torchvision's ``Pad(2)``, ``RandomCrop(32)``, ``RandomHorizontalFlip()`` (not for SVHN) and
``ColorJitter(brightness=63/255, contrast=[0.2, 1.8], saturation=[0.5, 1.5])``, then ``ToTensor``
and ``Normalize``. We do the same on a whole batch at once: undo the normalisation, crop and flip
with one gather, jitter with per-image factors applied in a per-image random order (as
``ColorJitter`` does), clamping to [0, 1] after each step (torchvision's float semantics), and
normalise again. The one difference: DeepOBS jitters uint8 PIL images and rounds after every
step; we stay in float.

Drawing the random parameters (``draw``) is separate from applying them (``apply``), so a test
can replay the same parameters through torchvision's own per-image functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .preprocess import normalisation
from .specs import DatasetSpec

PAD = 2
BRIGHTNESS = (1.0 - 63.0 / 255.0, 1.0 + 63.0 / 255.0)
CONTRAST = (0.2, 1.8)
SATURATION = (0.5, 1.5)
JITTER_OPS = ("brightness", "contrast", "saturation")
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)


@dataclass(frozen=True)
class AugmentParams:
    """Per-image random choices for one batch (all on the data's device)."""

    dy: Tensor
    """(N,) crop offset in rows of the padded image, 0..2*PAD."""
    dx: Tensor
    """(N,) crop offset in columns."""
    flip: Tensor
    """(N,) bool: mirror horizontally (after cropping)."""
    factors: Tensor
    """(N, 3) brightness, contrast and saturation factors."""
    order: Tensor
    """(N, 3) the order of the jitter steps, as indices into ``JITTER_OPS``."""


def _uniform(n: int, bounds: tuple[float, float], gen: torch.Generator, device) -> Tensor:
    low, high = bounds
    return torch.rand(n, generator=gen, device=device).mul_(high - low).add_(low)


def draw(n: int, gen: torch.Generator, device: torch.device, flip: bool) -> AugmentParams:
    """The random choices for a batch of ``n`` images."""
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=gen, device=device)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=gen, device=device)
    mirrored = torch.rand(n, generator=gen, device=device) < 0.5
    if not flip:
        mirrored = torch.zeros_like(mirrored)
    factors = torch.stack(
        [_uniform(n, b, gen, device) for b in (BRIGHTNESS, CONTRAST, SATURATION)], dim=1
    )
    order = torch.rand(n, 3, generator=gen, device=device).argsort(dim=1)
    return AugmentParams(dy, dx, mirrored, factors, order)


def crop_and_flip(x: Tensor, p: AugmentParams) -> Tensor:
    """Zero-pad by ``PAD``, crop the original size at (dy, dx), mirror where ``flip``."""
    n, c, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    rows = p.dy[:, None] + torch.arange(h, device=x.device)
    cols = p.dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(p.flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def _grayscale(x: Tensor) -> Tensor:
    """Luma (N, 1, H, W), from Python scalars: no host-to-device copy in the hot path."""
    r, g, b = _GRAY
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def color_jitter(x: Tensor, p: AugmentParams) -> Tensor:
    """Each step blends the image with a reference and clamps: ``clamp(f x + (1 - f) ref)``,
    ref = black (brightness), the mean grey level (contrast) or the grey image (saturation)."""
    n = x.shape[0]
    for step in range(3):
        op = p.order[:, step].view(n, 1, 1, 1)
        f = p.factors.gather(1, p.order[:, step : step + 1]).view(n, 1, 1, 1)
        gray = _grayscale(x)
        ref = torch.where(op == 2, gray, gray.mean(dim=(2, 3), keepdim=True))
        ref = torch.where(op == 0, torch.zeros_like(ref), ref)
        x = (f * x + (1 - f) * ref).clamp_(0.0, 1.0)
    return x


def apply(pixels: Tensor, p: AugmentParams) -> Tensor:
    """Crop, flip and jitter images with values in [0, 1]."""
    return color_jitter(crop_and_flip(pixels, p), p)


class Augmentation:
    """A data set's training augmentation on normalised inputs: ``aug(x, generator)``."""

    def __init__(self, spec: DatasetSpec, device: torch.device | str) -> None:
        if spec.augmentation not in ("cifar", "svhn"):
            raise ValueError(f"{spec.name} has no augmentation (DeepOBS uses none)")
        self.flip = spec.augmentation == "cifar"
        self.mean, self.std = normalisation(spec, torch.device(device))

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        params = draw(x.shape[0], gen, x.device, self.flip)
        return (apply(x * self.std + self.mean, params) - self.mean) / self.std


def augmentation_for(spec: DatasetSpec, device: torch.device | str) -> Augmentation | None:
    """The data set's DeepOBS augmentation, or None where DeepOBS has none."""
    return Augmentation(spec, device) if spec.augmentation != "none" else None
