"""The numerical core: output-space loss Hessians, exact GGN products (full and per block) and
the GGN as an operator, parameter blocks, and block-batched conjugate gradient. Knows nothing
of problems or the CLI."""

from .blocks import SCHEMES, BlockLayout, ParamBlock, check_scheme, parse_groups, partition
from .cg import STOP_REASONS, CGResult, all_finite, backtracking_schedule, block_cg
from .ggn import GGNContext
from .losses import (
    MSE,
    BCEWithLogits,
    ConvexOutputLoss,
    CrossEntropy,
    OutputHessian,
    OutputLoss,
    as_output_loss,
)
from .lstm_rop import lstm_recurrence
from .operator import BlockOperator, FunctionOperator, GGNOperator
from .workspace import Workspace

__all__ = [
    "MSE",
    "SCHEMES",
    "STOP_REASONS",
    "BCEWithLogits",
    "BlockLayout",
    "BlockOperator",
    "CGResult",
    "ConvexOutputLoss",
    "CrossEntropy",
    "FunctionOperator",
    "GGNContext",
    "GGNOperator",
    "OutputHessian",
    "OutputLoss",
    "ParamBlock",
    "Workspace",
    "all_finite",
    "as_output_loss",
    "backtracking_schedule",
    "block_cg",
    "check_scheme",
    "lstm_recurrence",
    "parse_groups",
    "partition",
]
