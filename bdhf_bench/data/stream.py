"""Mini-batches from tensors that already live on the run's device: no DataLoader, no host sync.

A ``BatchStream`` shuffles with a permutation drawn per epoch from (seed, epoch) and augments each
batch with a generator seeded from (seed, epoch, batch index), so batch i of epoch e is the same
whether the run got there directly or resumed at (e, i). As in DeepOBS, an incomplete last batch
is dropped. The permutation is drawn on the CPU (once per epoch), so the data order is the same on
every device; augmentation draws on the data's device, so its values depend on the device type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .seeding import generator

Batch = tuple[Tensor, Tensor]


class BatchStream:
    """Shuffled, optionally augmented training batches of one split."""

    def __init__(
        self,
        inputs: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        seed: int,
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    ) -> None:
        if len(inputs) != len(labels):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        if not 1 <= batch_size <= len(inputs):
            raise ValueError(
                f"batch size must be in 1..{len(inputs)} (the split), got {batch_size}"
            )
        self.inputs = inputs
        self.labels = labels
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augment = augment

    @property
    def batches_per_epoch(self) -> int:
        return len(self.inputs) // self.batch_size

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def permutation(self, epoch: int) -> Tensor:
        """The example order of ``epoch``, on the data's device."""
        perm = torch.randperm(
            len(self.inputs), generator=generator("cpu", self.seed, "shuffle", epoch)
        )
        if self.device.type == "cuda":
            return perm.pin_memory().to(self.device, non_blocking=True)
        return perm.to(self.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` from batch index ``start`` on."""
        if not 0 <= start <= self.batches_per_epoch:
            raise ValueError(f"start must be in 0..{self.batches_per_epoch}, got {start}")
        perm = self.permutation(epoch)
        bs = self.batch_size
        for i in range(start, self.batches_per_epoch):
            idx = perm[i * bs : (i + 1) * bs]
            x = self.inputs.index_select(0, idx)
            if self.augment is not None:
                x = self.augment(x, generator(self.device, self.seed, "augment", epoch, i))
            yield x, self.labels.index_select(0, idx)


def eval_batches(pair: Batch, batch_size: int) -> Iterator[Batch]:
    """A split in its fixed order, every example once (the last batch may be smaller)."""
    inputs, labels = pair
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    for i in range(0, len(inputs), batch_size):
        yield inputs[i : i + batch_size], labels[i : i + batch_size]
