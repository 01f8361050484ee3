"""Parameter blocks: how the parameters are partitioned, and one flat vector holding them all.

BDHF keeps only the curvature between parameters of the same block. The default block is a
parameter-owning module (a Linear's weight and bias, a BatchNorm's affine pair, one LSTM layer);
``"tensor"`` makes every tensor a block, ``"all"`` makes one block (full Hessian-free), and a
mapping ``{name: [glob, ...]}`` names groups of parameter names.

``BlockLayout`` lays the blocks end to end in one flat vector, so each block is one contiguous
segment that CG works on through views.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

SCHEMES = ("module", "tensor", "all")

_RNN_LAYER = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


@dataclass(frozen=True)
class ParamBlock:
    """A named block of parameters."""

    name: str
    params: tuple[Tensor, ...]


def partition(
    model: nn.Module, scheme: str | Mapping[str, Sequence[str]] = "module"
) -> list[ParamBlock]:
    """Split ``model``'s trainable parameters into blocks.

    ``scheme`` is ``"module"`` (default), ``"tensor"``, ``"all"`` or ``{block: [name globs]}``.
    Raises ValueError for an unknown scheme or a mapping that misses or repeats a parameter.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    if isinstance(scheme, Mapping):
        return _named_groups(named, scheme)
    if scheme == "all":
        return [ParamBlock("all", tuple(p for _, p in named))]
    if scheme == "tensor":
        return [ParamBlock(n, (p,)) for n, p in named]
    if scheme == "module":
        return _by_module(model)
    raise ValueError(f"unknown block scheme {scheme!r}; valid: {', '.join(SCHEMES)} or a mapping")


def _by_module(model: nn.Module) -> list[ParamBlock]:
    blocks: list[ParamBlock] = []
    for mod_name, module in model.named_modules():
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        prefix = mod_name or "<root>"
        if isinstance(module, nn.RNNBase):
            layers: dict[str, list[Tensor]] = {}
            for n, p in own:
                m = _RNN_LAYER.match(n)
                key = f"l{m.group(3)}{m.group(4) or ''}" if m else n
                layers.setdefault(key, []).append(p)
            blocks += [ParamBlock(f"{prefix}.{k}", tuple(ps)) for k, ps in layers.items()]
        else:
            blocks.append(ParamBlock(prefix, tuple(p for _, p in own)))
    return blocks


def _named_groups(
    named: list[tuple[str, Tensor]], groups: Mapping[str, Sequence[str]]
) -> list[ParamBlock]:
    owner: dict[str, str] = {}
    for block, patterns in groups.items():
        if isinstance(patterns, str):
            patterns = [patterns]
        for name, _ in named:
            if any(fnmatch.fnmatchcase(name, pat) for pat in patterns):
                if name in owner and owner[name] != block:
                    raise ValueError(
                        f"parameter {name!r} matches blocks {owner[name]!r} and {block!r}"
                    )
                owner[name] = block
    missing = [n for n, _ in named if n not in owner]
    if missing:
        raise ValueError(f"parameters in no block: {', '.join(missing)}")
    blocks = []
    for block in groups:
        params = tuple(p for n, p in named if owner[n] == block)
        if not params:
            raise ValueError(f"block {block!r} matches no parameter")
        blocks.append(ParamBlock(block, params))
    return blocks


class BlockLayout:
    """Blocks of tensors laid end to end in one flat vector.

    ``params`` lists every tensor in block order; a flat vector holds them in that order, so each
    block is one contiguous segment. Validates that no tensor appears twice and, when
    ``all_params`` is given, that every one of those is in some block.
    """

    def __init__(
        self,
        blocks: Sequence[Sequence[Tensor]],
        names: Sequence[str] | None = None,
        all_params: Sequence[Tensor] | None = None,
    ) -> None:
        if len(blocks) == 0:
            raise ValueError("a partition needs at least one block")
        if any(len(b) == 0 for b in blocks):
            raise ValueError("every block needs at least one parameter")
        seen: set[int] = set()
        for block in blocks:
            for p in block:
                if id(p) in seen:
                    raise ValueError(f"a parameter of shape {tuple(p.shape)} is in two blocks")
                seen.add(id(p))
        if all_params is not None:
            missing = [tuple(p.shape) for p in all_params if id(p) not in seen]
            if missing:
                raise ValueError(f"parameters in no block (shapes): {missing}")
            extra = len(seen) - len({id(p) for p in all_params})
            if extra > 0:
                raise ValueError(f"{extra} block tensors are not among the parameters")
        self.blocks = [tuple(b) for b in blocks]
        self.names = list(names) if names is not None else [f"block{i}" for i in range(len(blocks))]
        if len(self.names) != len(self.blocks):
            raise ValueError("one name per block")
        self.params = [p for b in self.blocks for p in b]
        self.numels = [p.numel() for p in self.params]
        self.block_numels = [sum(p.numel() for p in b) for b in self.blocks]
        self.numel = sum(self.numels)
        bounds = [0]
        for n in self.block_numels:
            bounds.append(bounds[-1] + n)
        self.block_bounds = list(itertools.pairwise(bounds))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def pack(self, tensors: Sequence[Tensor | None]) -> Tensor:
        """One flat vector from per-parameter tensors (None counts as zeros)."""
        if len(tensors) != len(self.params):
            raise ValueError(f"expected {len(self.params)} tensors, got {len(tensors)}")
        parts = []
        for t, p in zip(tensors, self.params):
            if t is None:
                parts.append(p.new_zeros(p.numel()))
            elif t.shape != p.shape:
                raise ValueError(
                    f"shape {tuple(t.shape)} does not match parameter {tuple(p.shape)}"
                )
            else:
                parts.append(t.reshape(-1))
        return torch.cat(parts)

    def unpack(self, flat: Tensor) -> list[Tensor]:
        """Per-parameter views into a flat vector (no copy)."""
        if flat.shape != (self.numel,):
            raise ValueError(f"flat vector of shape {tuple(flat.shape)}, expected ({self.numel},)")
        return [c.view_as(p) for c, p in zip(flat.split(self.numels), self.params)]

    def unpack_blocks(self, flat: Tensor) -> list[list[Tensor]]:
        """Per-block lists of per-parameter views into a flat vector."""
        views = iter(self.unpack(flat))
        return [[next(views) for _ in b] for b in self.blocks]

    def block_dot(self, a: Tensor, b: Tensor, active: Sequence[bool] | None = None) -> Tensor:
        """Per-block inner products, shape (num_blocks,) in float64; 0 for inactive blocks.

        Each is a BLAS dot on the block's segment (accurate, deterministic): CG's recurrences
        are sensitive to summation error, and a sequential scatter-add measurably delays its
        convergence on ill-conditioned blocks.
        """
        active = active if active is not None else [True] * self.num_blocks
        zero = a.new_zeros(())
        parts = [
            torch.dot(a_k, b_k) if on else zero
            for on, a_k, b_k in zip(active, a.split(self.block_numels), b.split(self.block_numels))
        ]
        return torch.stack(parts).to(torch.float64)
