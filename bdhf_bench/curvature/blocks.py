"""Parameter blocks: how the parameters are partitioned, and one flat vector holding them all.

BDHF keeps only the curvature between parameters of the same block. The default block is a
parameter-owning module (a Linear's weight and bias, a BatchNorm's affine pair, one LSTM layer);
``"tensor"`` makes every tensor a block, ``"all"`` makes one block (full Hessian-free),
``"pairs"`` joins adjacent module blocks two by two and ``"halves"`` makes two blocks, the first
and second half of the module blocks (an autoencoder's encoder and decoder). Coarser blocks keep
more of the curvature between layers at the price of bigger CG systems: the paper chose layers and
says nothing of the others, so these let the study measure the trade. A mapping
``{name: [glob, ...]}``, or the same written as a string ``"enc=0.*,2.*;dec=4.*"`` (what a
command line or a TOML grid can hold), names groups of parameter names.

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

SCHEMES = ("module", "tensor", "all", "pairs", "halves")
"""The named schemes; a string with ``=`` is a glob scheme (``parse_groups``)."""

_RNN_LAYER = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


@dataclass(frozen=True)
class ParamBlock:
    """A named block of parameters."""

    name: str
    params: tuple[Tensor, ...]


_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_GLOB = re.compile(r"^[A-Za-z0-9_.*?!\[\]-]+$")
"""Glob characters: parameter names are dotted identifiers, and a scheme string also names a
result folder, so nothing else (no ``/``, spaces or quotes) is allowed."""


def parse_groups(text: str) -> dict[str, list[str]]:
    """``"enc=0.*,2.*;dec=4.*"`` -> ``{"enc": ["0.*", "2.*"], "dec": ["4.*"]}``.

    Blocks are separated by ``;``, a block's name from its globs by ``=``, globs by ``,``;
    whitespace around the parts is ignored. Raises ValueError (one line) on a malformed string.
    """
    groups: dict[str, list[str]] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            raise ValueError(
                f"block scheme {text!r} has an empty block (two ';' or a trailing ';')"
            )
        name, sep, globs = (s.strip() for s in part.partition("="))
        if not sep:
            raise ValueError(f"block {part!r} of scheme {text!r} needs the form name=glob,glob")
        if not _NAME.match(name):
            raise ValueError(
                f"block name {name!r} in scheme {text!r} must be letters, digits, _ or -"
            )
        if name in groups:
            raise ValueError(f"block {name!r} appears twice in scheme {text!r}")
        patterns = [g.strip() for g in globs.split(",")]
        bad = [g for g in patterns if not _GLOB.match(g)]
        if bad:
            raise ValueError(
                f"glob {bad[0]!r} of block {name!r} in scheme {text!r} must be a non-empty "
                "pattern of letters, digits, . _ - and * ? [ ] !"
            )
        groups[name] = patterns
    return groups


def check_scheme(scheme: str) -> str:
    """The scheme in canonical form (a glob string with its whitespace removed), or ValueError
    (one line): what a hyperparameter parser calls before any model exists."""
    if not isinstance(scheme, str):
        raise ValueError(f"a block scheme is a string, got {scheme!r}")
    if "=" not in scheme:
        if scheme not in SCHEMES:
            raise ValueError(
                f"unknown block scheme {scheme!r}; valid: {', '.join(SCHEMES)} or globs "
                "such as 'enc=0.*,2.*;dec=4.*'"
            )
        return scheme
    groups = parse_groups(scheme)
    return ";".join(f"{name}={','.join(globs)}" for name, globs in groups.items())


def partition(
    model: nn.Module, scheme: str | Mapping[str, Sequence[str]] = "module"
) -> list[ParamBlock]:
    """Split ``model``'s trainable parameters into blocks.

    ``scheme`` is ``"module"`` (default), ``"tensor"``, ``"all"``, ``"pairs"``, ``"halves"``,
    ``{block: [name globs]}`` or that mapping as a string (``parse_groups``). Raises ValueError
    (one line) for an unknown scheme, or globs that miss or repeat a parameter or match nothing.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    if isinstance(scheme, str) and "=" in scheme:
        scheme = parse_groups(scheme)
    if isinstance(scheme, Mapping):
        return _named_groups(named, scheme)
    if scheme == "all":
        return [ParamBlock("all", tuple(p for _, p in named))]
    if scheme == "tensor":
        return [ParamBlock(n, (p,)) for n, p in named]
    if scheme == "module":
        return _by_module(model)
    if scheme == "pairs":
        layers = _by_module(model)
        return [_join(layers[i : i + 2]) for i in range(0, len(layers), 2)]
    if scheme == "halves":
        layers = _by_module(model)
        first = (len(layers) + 1) // 2
        return [_join(part) for part in (layers[:first], layers[first:]) if part]
    check_scheme(scheme)  # raises the one-line message for an unknown name
    raise AssertionError(scheme)


def _join(blocks: Sequence[ParamBlock]) -> ParamBlock:
    """One block of consecutive module blocks, named ``first+...+last``."""
    return ParamBlock("+".join(b.name for b in blocks), tuple(p for b in blocks for p in b.params))


def _by_module(model: nn.Module) -> list[ParamBlock]:
    """One block per parameter-owning module (an RNN: one per layer), in registration order."""
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
        for pat in patterns:
            if not any(fnmatch.fnmatchcase(name, pat) for name, _ in named):
                names = [n for n, _ in named]
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                raise ValueError(
                    f"glob {pat!r} of block {block!r} matches no trainable parameter "
                    f"(the names: {shown})"
                )
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
    # every glob matched a name and every matched name is its block's, so no block is empty
    return [ParamBlock(block, tuple(p for n, p in named if owner[n] == block)) for block in groups]


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

    def pack(self, tensors: Sequence[Tensor | None], out: Tensor | None = None) -> Tensor:
        """One flat vector from per-parameter tensors (None counts as zeros); with ``out``
        (shape ``(numel,)``) written there."""
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
        if out is None:
            return torch.cat(parts)
        if out.shape != (self.numel,):
            raise ValueError(f"out of shape {tuple(out.shape)}, expected ({self.numel},)")
        return torch.cat(parts, out=out)

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
