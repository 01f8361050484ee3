"""Optimizers: BlockDiagonalHF and HessianFree on one engine, the step protocol, the registry."""

from .closure import ModelClosure, PassCounts
from .hf import BlockDiagonalHF, HessianFree, StepStats, param_groups_from_blocks
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
    "BlockDiagonalHF",
    "HessianFree",
    "HyperParameter",
    "ModelClosure",
    "OptimizerEntry",
    "PassCounts",
    "StepStats",
    "get_optimizer",
    "optimizer_names",
    "param_groups_from_blocks",
    "register",
]
