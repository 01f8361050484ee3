"""What a run is: problem, optimizer, resolved hyperparameters, seed, batch size, budget, data.

A ``RunSpec`` is the identity of a run. Its ``run_id`` (a hash of every field) names the run's
checkpoint, lock and finished-record, so the same command finds its own unfinished run again
and two processes never run the same one twice. Where and how a run executes (device, data
folder, results folder) is not part of its identity.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..limits import MAX_SEED

DATA_SOURCES = ("real", "synthetic")


class RunInputError(ValueError):
    """A run that cannot start with what it was given (one line saying what and what is valid)."""


STALL_TOL = 0.01
"""A run "improves" when its target metric beats the best value of its last improvement by more
than this fraction of it (1%: on the autoencoder's BCE about 1 nat per image near 100)."""


@dataclass(frozen=True)
class Budget:
    """When a run stops: after ``epochs``, after ``steps``, or after ``seconds`` of training
    time, whichever comes first (at least one must be set).

    Two early stops, for time-to-target studies where the budget is sized for the slowest
    optimizer: ``stop_at_target`` ends a run at the evaluation that meets its problem's target,
    ``patience`` ends one whose target metric (on the target's split) has not improved by
    ``STALL_TOL`` in that many steps. Both look at evaluations only, so a resumed run stops
    where an uninterrupted one would.
    """

    epochs: int | None = None
    steps: int | None = None
    seconds: float | None = None
    patience: int | None = None
    stop_at_target: bool = False

    EARLY_STOPS = ("patience", "stop_at_target")
    """Left out of a run's identity when unset, so the runs made before they existed keep
    their ids (and finished results are found again)."""

    def __post_init__(self) -> None:
        if self.epochs is None and self.steps is None and self.seconds is None:
            raise ValueError("a budget needs epochs, steps or seconds")
        patience = self.patience
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            raise ValueError(f"patience must be a positive number of steps, got {patience!r}")
        if not isinstance(self.stop_at_target, bool):
            raise ValueError(f"stop_at_target must be true or false, got {self.stop_at_target!r}")
        for name in ("epochs", "steps"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"budget {name} must be a positive integer, got {value!r}")
        seconds = self.seconds
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not (seconds > 0 and math.isfinite(seconds))
        ):
            raise ValueError(f"time budget must be a positive number of seconds, got {seconds!r}")


@dataclass(frozen=True)
class RunSpec:
    """One training run."""

    problem: str
    optimizer: str
    hyperparameters: Mapping[str, Any]
    seed: int
    batch_size: int
    budget: Budget
    eval_every: int | None = None
    """Evaluate every this many steps (None: at epoch boundaries)."""
    data: str = "real"
    weight_decay: float | None = None
    """None: the problem's default."""
    tags: Mapping[str, Any] = field(default_factory=dict)
    """Free-form labels that are part of the identity (e.g. a suite name)."""

    def __post_init__(self) -> None:
        if self.data not in DATA_SOURCES:
            raise ValueError(f"data must be one of {DATA_SOURCES}, got {self.data!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise ValueError(f"batch size must be an integer, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        if self.eval_every is not None and (
            isinstance(self.eval_every, bool)
            or not isinstance(self.eval_every, int)
            or self.eval_every < 1
        ):
            raise ValueError(
                f"eval_every must be a positive number of steps, got {self.eval_every!r}"
            )
        wd = self.weight_decay
        if wd is not None and (
            isinstance(wd, bool) or not isinstance(wd, int | float) or not 0 <= wd < math.inf
        ):
            raise ValueError(f"weight decay must be a finite number >= 0, got {wd!r}")

    def identity(self) -> dict[str, Any]:
        out = asdict(self)
        for key in Budget.EARLY_STOPS:
            if not out["budget"][key]:
                del out["budget"][key]
        out["hyperparameters"] = dict(sorted(self.hyperparameters.items()))
        out["tags"] = dict(sorted(self.tags.items()))
        return out

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @classmethod
    def from_identity(cls, data: Mapping[str, Any]) -> RunSpec:
        data = dict(data)
        data["budget"] = Budget(**data["budget"])
        return cls(**data)

    def label(self) -> str:
        hps = ", ".join(f"{k}={v}" for k, v in sorted(self.hyperparameters.items()))
        return f"{self.problem} / {self.optimizer} ({hps}) seed {self.seed}"


def float2str(x: float) -> str:
    """DeepOBS's float format for folder names (1e-3 -> "1.e-03")."""
    mantissa, exponent = f"{x:.10e}".split("e")
    return mantissa.rstrip("0") + "e" + exponent


MAX_FOLDER_NAME = 200
"""File systems allow 255 bytes per name; longer setting names end in a hash instead."""


def setting_folder(
    spec: RunSpec,
    num_epochs: int,
    weight_decay: float | None,
    defaults: Mapping[str, Any] | None = None,
) -> str:
    """DeepOBS's setting folder name: evaluations, batch size, then the budget unless it is
    DeepOBS's own (epochs, evaluated at epoch ends), weight decay, then the sorted
    hyperparameters. With ``defaults``, only hyperparameters that differ from them are named
    (an HF optimizer has a dozen; the result file lists them all), which keeps names short.

    ``num_epochs`` counts evaluation intervals, so ``--epochs 1`` and ``--steps 50`` (one
    interval each) would share a folder, and DeepOBS's analyzer would average them as two
    seeds; a step or time budget, or evaluations every N steps, is therefore always named.
    """
    name = f"num_epochs__{num_epochs}__batch_size__{spec.batch_size}"
    budget = spec.budget
    if budget.steps is not None or budget.seconds is not None or spec.eval_every is not None:
        for key, value in (
            ("budget_epochs", budget.epochs),
            ("budget_steps", budget.steps),
            ("budget_seconds", budget.seconds),
            ("eval_every", spec.eval_every),
            ("patience", budget.patience),
            ("stop_at_target", budget.stop_at_target or None),
        ):
            if value is not None:
                text = float2str(float(value)) if isinstance(value, float) else str(value)
                name += f"__{key}__{text}"
    if weight_decay is not None:
        name += f"__weight_decay__{float2str(float(weight_decay))}"
    for key, value in sorted(spec.hyperparameters.items()):
        if defaults is not None and key in defaults and defaults[key] == value:
            continue
        text = float2str(value) if isinstance(value, float) else str(value)
        name += f"__{key}__{text}"
    if len(name.encode()) > MAX_FOLDER_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = name.encode()[: MAX_FOLDER_NAME - 14].decode(errors="ignore") + "__" + digest
    return name
