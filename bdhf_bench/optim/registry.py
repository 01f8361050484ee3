"""Optimizer entries, DeepOBS-style: a class, a hyperparameter schema, a grid, a step protocol.

An ``OptimizerEntry`` is plain data. The runner needs nothing else to build, tune and drive an
optimizer: ``entry.resolve(overrides)`` types and checks hyperparameters against the schema,
``entry.build(model, hps)`` makes the optimizer, ``entry.grid`` is the default tuning grid and
``entry.step_protocol`` says what ``step`` takes (every entry here takes a ``ModelClosure``,
which is also a plain torch closure).

Built in: ``bdhf``, ``hf``, and DeepOBS's baselines ``adam``, ``sgd``, ``momentum`` (36
log-spaced learning rates in [1e-5, 1e2]; momentum 0.99). Third-party packages add entries
through the entry-point group ``bdhf_bench.optimizers``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..curvature import check_scheme, partition
from ..plugins import load_entry_points, unknown_name_message
from .hf import (
    DAMPING_MODES,
    DAMPING_RANGE,
    STEP_RULES,
    BlockDiagonalHF,
    HessianFree,
    param_groups_from_blocks,
)

STEP_PROTOCOLS = ("closure", "model_closure")
"""``closure``: step(closure) calls closure() (forward + backward) like any torch optimizer;
``model_closure``: step needs a ``ModelClosure`` (curvature and extra evaluations)."""

DEEPOBS_LR_GRID = [float(f"{v:.6g}") for v in np.logspace(-5, 2, 36)]
"""DeepOBS's learning-rate grid: 36 log-spaced values in [1e-5, 1e2]."""


@dataclass(frozen=True)
class HyperParameter:
    """One hyperparameter: its type, default and valid range."""

    type: type
    default: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """Whether ``low`` itself is excluded."""
    choices: tuple[Any, ...] | None = None
    log: bool = False
    """Sample on a log scale in random search."""
    help: str = ""
    parse: Callable[[Any], Any] | None = None
    """For values a fixed list of choices cannot describe (a block scheme of globs): returns
    the value in canonical form, so equal settings are equal runs, or raises ValueError with
    a one-line reason."""

    def valid_range(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type is bool:
            return "true or false"
        lo = "(" if self.low_open or self.low is None else "["
        hi = ")" if self.high is None else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        article = "an" if self.type is int else "a"
        return f"{article} {self.type.__name__} in {lo}{low}, {high}{hi}"

    def coerce(self, name: str, value: Any) -> Any:
        """The value as this type (strings are parsed), or ValueError naming the valid range."""
        try:
            if self.type is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    value = low in ("true", "1", "yes")
                elif not isinstance(value, (bool, int)):
                    raise ValueError
                value = bool(value)
            elif self.type is int:
                if isinstance(value, bool):
                    raise ValueError
                if isinstance(value, str):
                    value = value.strip()
                as_float = float(value)
                if not as_float.is_integer():
                    raise ValueError
                value = int(as_float)
            elif self.type is float:
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
            else:
                value = self.type(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"hyperparameter {name}={value!r} is not valid: must be {self.valid_range()}"
            ) from None
        self.check(name, value)
        return self.parse(value) if self.parse is not None else value

    def check(self, name: str, value: Any) -> None:
        if self.parse is not None:
            try:
                self.parse(value)
            except ValueError as exc:
                raise ValueError(f"hyperparameter {name}={value!r} is not valid: {exc}") from None
        bad = False
        if self.choices is not None:
            bad = value not in self.choices
        elif self.type in (int, float):
            bad = not math.isfinite(value)
            if self.low is not None:
                bad = bad or value < self.low or (self.low_open and value == self.low)
            if self.high is not None:
                bad = bad or value > self.high
        if bad:
            raise ValueError(
                f"hyperparameter {name}={value!r} is out of range: must be {self.valid_range()}"
            )


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer."""

    name: str
    description: str
    optimizer_class: type
    hyperparameters: Mapping[str, HyperParameter]
    build_fn: Callable[[nn.Module, dict[str, Any]], torch.optim.Optimizer]
    grid: Mapping[str, list[Any]] = field(default_factory=dict)
    step_protocol: str = "model_closure"

    def __post_init__(self) -> None:
        if self.step_protocol not in STEP_PROTOCOLS:
            raise ValueError(f"step_protocol must be one of {STEP_PROTOCOLS}")
        for key, values in self.grid.items():
            if key not in self.hyperparameters:
                raise ValueError(f"{self.name}: grid names unknown hyperparameter {key!r}")
            for v in values:
                self.hyperparameters[key].check(key, v)

    def schema(self) -> dict[str, dict[str, Any]]:
        """DeepOBS's form: ``{name: {"type": type, "default": value}}``."""
        return {k: {"type": h.type, "default": h.default} for k, h in self.hyperparameters.items()}

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated by ``overrides`` (strings are parsed), typed and range-checked."""
        overrides = dict(overrides or {})
        unknown = [k for k in overrides if k not in self.hyperparameters]
        if unknown:
            raise ValueError(
                unknown_name_message(
                    f"hyperparameter of {self.name}", unknown[0], self.hyperparameters
                )
            )
        out = {}
        for k, h in self.hyperparameters.items():
            out[k] = h.coerce(k, overrides[k]) if k in overrides else h.default
        return out

    def build(self, model: nn.Module, hyperparameters: Mapping[str, Any] | None = None):
        """The optimizer for ``model`` with resolved hyperparameters."""
        return self.build_fn(model, self.resolve(hyperparameters))


# -- built-in entries ---------------------------------------------------------------------------

_LR = HyperParameter(float, 1e-3, low=0.0, low_open=True, log=True, help="learning rate")


def _sgd(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=hp["lr"])


def _momentum(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=hp["lr"], momentum=hp["momentum"], nesterov=hp["nesterov"]
    )


def _adam(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        model.parameters(), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"]
    )


_HF_COMMON = {
    "curvature_fraction": HyperParameter(
        float, 0.25, low=0.0, high=1.0, low_open=True, help="curvature sub-batch / mini-batch"
    ),
    "damping": HyperParameter(
        float,
        0.1,
        low=DAMPING_RANGE[0],
        high=DAMPING_RANGE[1],
        log=True,
        help="initial Levenberg-Marquardt lambda",
    ),
    "cg_min_iters": HyperParameter(int, 1, low=0, help="CG iterations before the progress test"),
    "cg_tol": HyperParameter(float, 5e-4, low=0.0, low_open=True, log=True, help="Martens' eps"),
    "warm_start": HyperParameter(float, 0.95, low=0.0, high=1.0, help="decay of the CG start"),
    "step_rule": HyperParameter(str, "armijo", choices=STEP_RULES, help="step length rule"),
    "lr": HyperParameter(float, 1.0, low=0.0, low_open=True, log=True, help="fixed step length"),
    "precondition": HyperParameter(bool, False, help="Martens' squared-gradient preconditioner"),
    "rescale": HyperParameter(bool, True, help="scale the step to the full-GGN minimiser"),
}

_HF_KEYS = (
    "curvature_fraction",
    "damping",
    "cg_max_iters",
    "cg_min_iters",
    "cg_tol",
    "warm_start",
    "step_rule",
    "lr",
    "precondition",
    "backtrack",
    "rescale",
)


def _bdhf(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    groups = param_groups_from_blocks(partition(model, hp["blocks"]))
    kwargs = {k: hp[k] for k in _HF_KEYS}
    return BlockDiagonalHF(groups, damping_mode=hp["damping_mode"], **kwargs)


def _hf(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    return HessianFree(model.parameters(), **{k: hp[k] for k in _HF_KEYS})


_HF_GRID = {"damping": [0.1, 1.0, 10.0], "curvature_fraction": [0.125, 0.25]}

BUILTIN = (
    OptimizerEntry(
        "bdhf",
        "Block-diagonal Hessian-free (Zhang et al. 2017): one CG run per layer block",
        BlockDiagonalHF,
        {
            **_HF_COMMON,
            "cg_max_iters": HyperParameter(int, 50, low=1, help="CG iterations per block"),
            "backtrack": HyperParameter(bool, False, help="CG-backtracking"),
            "blocks": HyperParameter(
                str,
                "module",
                parse=check_scheme,
                help="block partition: module, tensor, all, pairs, halves or name=glob,..;..",
            ),
            "damping_mode": HyperParameter(str, "global", choices=DAMPING_MODES, help="lambdas"),
        },
        _bdhf,
        grid=_HF_GRID,
    ),
    OptimizerEntry(
        "hf",
        "Hessian-free (Martens 2010): full GGN, one CG run, CG-backtracking",
        HessianFree,
        {
            **_HF_COMMON,
            "cg_max_iters": HyperParameter(int, 250, low=1, help="CG iterations"),
            "backtrack": HyperParameter(bool, True, help="CG-backtracking"),
        },
        _hf,
        grid=_HF_GRID,
    ),
    OptimizerEntry(
        "adam",
        "Adam (Kingma & Ba 2015), DeepOBS baseline",
        torch.optim.Adam,
        {
            "lr": _LR,
            "beta1": HyperParameter(float, 0.9, low=0.0, high=1.0),
            "beta2": HyperParameter(float, 0.999, low=0.0, high=1.0),
            "eps": HyperParameter(float, 1e-8, low=0.0, low_open=True, log=True),
        },
        _adam,
        grid={"lr": DEEPOBS_LR_GRID},
        step_protocol="closure",
    ),
    OptimizerEntry(
        "sgd",
        "Stochastic gradient descent, DeepOBS baseline",
        torch.optim.SGD,
        {"lr": HyperParameter(float, 1e-2, low=0.0, low_open=True, log=True)},
        _sgd,
        grid={"lr": DEEPOBS_LR_GRID},
        step_protocol="closure",
    ),
    OptimizerEntry(
        "momentum",
        "SGD with heavy-ball momentum 0.99, DeepOBS baseline",
        torch.optim.SGD,
        {
            "lr": HyperParameter(float, 1e-3, low=0.0, low_open=True, log=True),
            "momentum": HyperParameter(float, 0.99, low=0.0, high=1.0),
            "nesterov": HyperParameter(bool, False),
        },
        _momentum,
        grid={"lr": DEEPOBS_LR_GRID},
        step_protocol="closure",
    ),
)

_REGISTRY: dict[str, OptimizerEntry] = {e.name: e for e in BUILTIN}
_plugins_loaded = False


def register(entry: OptimizerEntry) -> None:
    """Add an entry (a name already taken is an error)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"an optimizer named {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in load_entry_points("bdhf_bench.optimizers", OptimizerEntry):
        if entry.name not in _REGISTRY:
            _REGISTRY[entry.name] = entry


def optimizer_names() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def get_optimizer(name: str) -> OptimizerEntry:
    """The entry called ``name``; ValueError with close matches when there is none."""
    _load_plugins()
    if name not in _REGISTRY:
        raise ValueError(unknown_name_message("optimizer", name, _REGISTRY))
    return _REGISTRY[name]
