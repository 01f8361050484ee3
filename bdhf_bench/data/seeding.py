"""Random streams as pure functions of (seed, purpose, epoch, batch index).

Each stream gets its own ``torch.Generator`` seeded from a stable hash of its coordinates, so any
batch of any epoch can be reproduced without replaying the ones before it: a resumed run needs only
(epoch, batch index). The hash is BLAKE2b, stable across processes, platforms and Python versions
(unlike ``hash()``).
"""

from __future__ import annotations

import hashlib

import torch


def stream_seed(*parts: int | str) -> int:
    """A 63-bit seed determined by ``parts`` (ints and short labels)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(device: torch.device | str, *parts: int | str) -> torch.Generator:
    """A generator on ``device`` seeded from ``parts``."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(stream_seed(*parts))
    return gen
