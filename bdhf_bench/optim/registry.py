"""Optimizer entries, DeepOBS-style: a class, a hyperparameter schema, a grid, a step protocol.

An ``OptimizerEntry`` is plain data. The runner needs nothing else to build, tune and drive an
optimizer: ``entry.resolve(overrides)`` types and checks hyperparameters against the schema
(once, into the run's spec), ``entry.build(model, resolved)`` makes the optimizer from that
setting, ``entry.grid`` is the default tuning grid, ``entry.step_protocol`` says what
``step`` takes (every entry here takes a ``ModelClosure``, which is also a plain torch
closure) and ``entry.driver`` how a training loop drives it (``protocol.StepDriver``).
``entry.refresh_period`` names the hyperparameter that sets how often a method refreshes its
curvature, so its cost is measured over a whole period.

Built in: ``bdhf``, ``hf``, DeepOBS's baselines ``adam``, ``sgd``, ``momentum`` (36 log-spaced
learning rates in [1e-5, 1e2]; momentum 0.99), and the curvature methods of ``peers``.
Third-party packages add entries through the entry-point group ``bdhf_bench.optimizers``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..curvature import check_scheme, partition
from ..plugins import load_entry_points, skip_taken_name, unknown_name_message
from .entry import (
    DEEPOBS_LR_GRID,
    HyperParameter,
    OptimizerEntry,
)
from .hf import (
    COMBINE_RULES,
    DAMPING_MODES,
    DAMPING_RANGE,
    DAMPING_STARTS,
    STEP_RULES,
    BlockDiagonalHF,
    HessianFree,
    param_groups_from_blocks,
)
from .peers import peer_entries
from .protocol import HessianFreeDriver

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


def constructor_defaults(cls: type) -> dict[str, Any]:
    """The keyword defaults of ``cls``'s constructor, a subclass's over its base's: HF's and
    BDHF's defaults are written once, in ``optim/hf.py``, and read from there."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for name, p in inspect.signature(init).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out[name] = p.default
    return out


_BDHF_DEFAULTS = constructor_defaults(BlockDiagonalHF)
_HF_DEFAULTS = constructor_defaults(HessianFree)

_HF_COMMON = {
    "curvature_fraction": HyperParameter(
        float,
        _BDHF_DEFAULTS["curvature_fraction"],
        low=0.0,
        high=1.0,
        low_open=True,
        help="curvature sub-batch / mini-batch; auto: 1/4 or 1 by the gradient's noise scale",
        words=("auto",),
    ),
    "damping": HyperParameter(
        float,
        _BDHF_DEFAULTS["damping"],
        low=DAMPING_RANGE[0],
        high=DAMPING_RANGE[1],
        log=True,
        help="Levenberg-Marquardt's initial lambda, or its factor over g'Gg/g'g (damping_start)",
    ),
    "damping_start": HyperParameter(
        str,
        _BDHF_DEFAULTS["damping_start"],
        choices=DAMPING_STARTS,
        help="curvature: lambda starts at damping x g'Gg/g'g (scale-covariant); fixed: at damping",
    ),
    "cg_min_iters": HyperParameter(
        int, _BDHF_DEFAULTS["cg_min_iters"], low=0, help="CG iterations before the progress test"
    ),
    "cg_tol": HyperParameter(
        float, _BDHF_DEFAULTS["cg_tol"], low=0.0, low_open=True, log=True, help="Martens' eps"
    ),
    "warm_start": HyperParameter(
        float, _BDHF_DEFAULTS["warm_start"], low=0.0, high=1.0, help="decay of the CG start"
    ),
    "step_rule": HyperParameter(
        str, _BDHF_DEFAULTS["step_rule"], choices=STEP_RULES, help="step length rule"
    ),
    "lr": HyperParameter(
        float, _BDHF_DEFAULTS["lr"], low=0.0, low_open=True, log=True, help="fixed step length"
    ),
    "precondition": HyperParameter(
        bool, _BDHF_DEFAULTS["precondition"], help="Martens' squared-gradient preconditioner"
    ),
    "rescale": HyperParameter(
        bool, _BDHF_DEFAULTS["rescale"], help="scale the step to the full-GGN minimiser"
    ),
}

_HF_KEYS = (
    "curvature_fraction",
    "damping",
    "damping_start",
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


def _bdhf(model: nn.Module, hp: dict[str, Any], **execution: Any) -> torch.optim.Optimizer:
    groups = param_groups_from_blocks(partition(model, hp["blocks"]))
    kwargs = {k: hp[k] for k in _HF_KEYS}
    return BlockDiagonalHF(
        groups,
        damping_mode=hp["damping_mode"],
        combine=hp["combine"],
        combine_damping=hp["combine_damping"],
        **kwargs,
        **execution,
    )


def _hf(model: nn.Module, hp: dict[str, Any], **execution: Any) -> torch.optim.Optimizer:
    return HessianFree(model.parameters(), **{k: hp[k] for k in _HF_KEYS}, **execution)


_HF_EXECUTION = ("cg_check_every", "cg_compiled")


_HF_GRID = {"damping": [0.1, 1.0, 10.0], "curvature_fraction": [0.125, 0.25]}

BUILTIN = (
    OptimizerEntry(
        "bdhf",
        "Block-diagonal Hessian-free (Zhang et al. 2017): one CG run per layer block",
        BlockDiagonalHF,
        {
            **_HF_COMMON,
            "cg_max_iters": HyperParameter(
                int, _BDHF_DEFAULTS["cg_max_iters"], low=1, help="CG iterations per block"
            ),
            "backtrack": HyperParameter(bool, _BDHF_DEFAULTS["backtrack"], help="CG-backtracking"),
            "blocks": HyperParameter(
                str,
                "module",
                parse=check_scheme,
                help="block partition: module, tensor, all, pairs, halves or name=glob,..;..",
            ),
            "damping_mode": HyperParameter(
                str, _BDHF_DEFAULTS["damping_mode"], choices=DAMPING_MODES, help="lambdas"
            ),
            "combine": HyperParameter(
                str,
                _BDHF_DEFAULTS["combine"],
                choices=COMBINE_RULES,
                help="the full-GGN correction of the block step: a factor per block or one",
            ),
            "combine_damping": HyperParameter(
                float,
                _BDHF_DEFAULTS["combine_damping"],
                low=0.0,
                low_open=True,
                log=True,
                help="the block coefficients' damping, as a multiple of lambda",
            ),
        },
        _bdhf,
        grid=_HF_GRID,
        driver=HessianFreeDriver,
        execution_options=_HF_EXECUTION,
    ),
    OptimizerEntry(
        "hf",
        "Hessian-free (Martens 2010): full GGN, one CG run, CG-backtracking",
        HessianFree,
        {
            **_HF_COMMON,
            "cg_max_iters": HyperParameter(
                int, _HF_DEFAULTS["cg_max_iters"], low=1, help="CG iterations"
            ),
            "backtrack": HyperParameter(bool, _HF_DEFAULTS["backtrack"], help="CG-backtracking"),
        },
        _hf,
        grid=_HF_GRID,
        driver=HessianFreeDriver,
        execution_options=_HF_EXECUTION,
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

_REGISTRY: dict[str, OptimizerEntry] = {e.name: e for e in (*BUILTIN, *peer_entries())}
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
        if entry.name in _REGISTRY:
            skip_taken_name("bdhf_bench.optimizers", entry.name)
            continue
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
