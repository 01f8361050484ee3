"""Runs: specs, the training loop, results files, resume, tuning and executors."""

from .environment import default_device
from .loop import Execution, Trainer
from .run import RunOutcome, run_one
from .spec import MAX_SEED, Budget, RunInputError, RunSpec
from .store import OutputFolderError, ResultStore

__all__ = [
    "MAX_SEED",
    "Budget",
    "Execution",
    "OutputFolderError",
    "ResultStore",
    "RunInputError",
    "RunOutcome",
    "RunSpec",
    "Trainer",
    "default_device",
    "run_one",
]
