"""Named scratch vectors that outlive one optimizer step.

An HF step needs a dozen vectors the size of the model (the gradient, CG's x, r and direction,
the iterates kept for CG-backtracking, ...). Allocated afresh each step, the large ones come
back from the allocator as new pages, and the kernel faults and zeroes every page on first
touch: on mnist_mlp (1.3M parameters) copying x into a fresh vector took 2.5 ms against 0.13 ms
into one already used, and an HF step faulted in about 60 MB. A ``Workspace`` hands out the
same tensors step after step, so a step writes into memory that is already mapped.

Whatever ``get`` returns holds stale values: it is storage, not a zeroed vector. A caller that
keeps a workspace tensor beyond the step must copy it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class Workspace:
    """Tensors by name, each reused while the requested shape, dtype and device stay."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, like: Tensor, shape: Sequence[int] | None = None) -> Tensor:
        """A contiguous tensor with ``like``'s dtype and device and its shape (or ``shape``),
        the same one at every call with this name (a new one when the shape, dtype or device
        changed). Its values are undefined."""
        size = torch.Size(like.shape if shape is None else shape)
        buf = self._buffers.get(name)
        if buf is None or buf.shape != size or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(size, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf

    def __len__(self) -> int:
        """How many tensors it holds (one per name)."""
        return len(self._buffers)
