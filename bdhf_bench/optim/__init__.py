"""Optimizers: BlockDiagonalHF and HessianFree on one engine, K-FAC on curvlinops, the step
protocol and the drivers that carry it, the registry (with the library-backed peers)."""

from .closure import ModelClosure, PassCounts
from .entry import MissingPackageError
from .hf import BlockDiagonalHF, HessianFree, StepStats, param_groups_from_blocks
from .kfac import KFAC
from .protocol import ProductCounts, ProductProbes, StepDriver
from .registry import (
    DEEPOBS_LR_GRID,
    HyperParameter,
    OptimizerEntry,
    get_optimizer,
    optimizer_names,
    register,
)

__all__ = [
    "DEEPOBS_LR_GRID",
    "KFAC",
    "BlockDiagonalHF",
    "HessianFree",
    "HyperParameter",
    "MissingPackageError",
    "ModelClosure",
    "OptimizerEntry",
    "PassCounts",
    "ProductCounts",
    "ProductProbes",
    "StepDriver",
    "StepStats",
    "get_optimizer",
    "optimizer_names",
    "param_groups_from_blocks",
    "register",
]
