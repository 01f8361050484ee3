"""The curvature methods a user compares BDHF with, as registry entries.

Each is taken from a maintained library, not rewritten: K-FAC from curvlinops' Kronecker
factors (``kfac.py``), SOAP, Shampoo, AdaHessian and SophiaH from kozistr's
``pytorch-optimizer``, schedule-free AdamW from Meta's ``schedulefree``, and torch's L-BFGS.
An entry imports its library only when it is built; a missing one is a one-line error naming
the package.

Defaults are each library's (or its paper's) except where noted; weight decay is off
everywhere, as for Adam (the problems carry DeepOBS's L2 in their objective). Each default
grid is DeepOBS's 36 learning rates, Adam's grid size. Refresh periods are hyperparameters
(``refresh_period``), so a run's cost is measured over one whole period.

- ``kfac``: momentum 0.9, damping 1e-3, factors every 10 steps with running average 0.95,
  KL-clip 1e-3 (the settings of widely used K-FAC code, e.g. Wang's KFAC-PyTorch).
- ``soap``: betas (0.95, 0.95), eigenbases every 10 steps (SOAP's paper).
- ``shampoo``: Gupta et al.'s Shampoo, inverse roots by SVD every 10 steps (the library
  default, every step, costs an SVD per tensor per step), no momentum (the library keeps the
  preconditioned update as its momentum buffer and preconditions it again: it diverged).
- ``adahessian``, ``sophia``: Hutchinson estimates of the Hessian diagonal (one
  Hessian-vector product through a second backward; AdaHessian every step, Sophia every 10).
- ``sfadamw``: schedule-free AdamW; evaluated (and checkpointed) at its averaged point.
- ``lbfgs``: one L-BFGS iteration per mini-batch with a strong-Wolfe line search (each of its
  function evaluations is a counted forward and backward pass), history 10.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .entry import DEEPOBS_LR_GRID, HyperParameter, OptimizerEntry
from .kfac import FISHER_TYPES, KFAC
from .protocol import SecondBackwardDriver, TrainEvalDriver

_PYTORCH_OPTIMIZER = (("pytorch_optimizer", "pytorch-optimizer"),)


def _library_class(path: str) -> Any:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _lr(default: float) -> HyperParameter:
    return HyperParameter(float, default, low=0.0, low_open=True, log=True, help="learning rate")


def _beta(default: float, text: str = "") -> HyperParameter:
    return HyperParameter(float, default, low=0.0, high=1.0, low_open=False, help=text)


def _period(default: int, text: str) -> HyperParameter:
    return HyperParameter(int, default, low=1, help=text)


def _grid() -> dict[str, list[float]]:
    return {"lr": DEEPOBS_LR_GRID}


# -- builders -----------------------------------------------------------------------------------


def _kfac(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    return KFAC(model, **hp)


def _library(
    path: str, rename: Mapping[str, str] | None = None, **fixed: Any
) -> Callable[[nn.Module, dict[str, Any]], torch.optim.Optimizer]:
    """A builder for the library class at ``path``: our hyperparameters under the library's
    names (``rename``; ``beta1``/``beta2`` become ``betas``), plus ``fixed`` arguments."""
    rename = dict(rename or {})

    def build(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
        kwargs = {rename.get(k, k): v for k, v in hp.items() if k not in ("beta1", "beta2")}
        if "beta1" in hp:
            kwargs["betas"] = (hp["beta1"], hp["beta2"])
        return _library_class(path)(_trainable(model), **kwargs, **fixed)

    return build


_soap = _library(
    "pytorch_optimizer.SOAP", {"update_period": "precondition_frequency"}, weight_decay=0.0
)
_shampoo = _library("pytorch_optimizer.Shampoo", {"update_period": "preconditioning_compute_steps"})
_adahessian = _library("pytorch_optimizer.AdaHessian", weight_decay=0.0)
_sophia = _library("pytorch_optimizer.SophiaH", {"clip": "p"}, weight_decay=0.0)
_sfadamw = _library("schedulefree.AdamWScheduleFree", weight_decay=0.0)
_lbfgs = _library("torch.optim.LBFGS", max_iter=1, line_search_fn="strong_wolfe")


# -- the entries --------------------------------------------------------------------------------


def _kfac_entry() -> OptimizerEntry:
    return OptimizerEntry(
        "kfac",
        "K-FAC (Martens & Grosse 2015) on curvlinops' Kronecker factors, SGD momentum",
        KFAC,
        {
            "lr": _lr(1e-3),
            "momentum": _beta(0.9, "SGD momentum on the preconditioned gradient"),
            "damping": HyperParameter(
                float, 1e-3, low=0.0, low_open=True, log=True, help="Tikhonov lambda"
            ),
            "update_period": _period(10, "steps between factor refreshes and inversions"),
            "factor_decay": _beta(0.95, "running average of the factors"),
            "kl_clip": HyperParameter(float, 1e-3, low=0.0, log=True, help="0: no clip"),
            "fisher_type": HyperParameter(str, "mc", choices=FISHER_TYPES),
            "heuristic_damping": HyperParameter(bool, True, help="factored damping"),
        },
        _kfac,
        grid=_grid(),
        refresh_period="update_period",
        requires=(("curvlinops", "curvlinops-for-pytorch"),),
    )


def _soap_entry() -> OptimizerEntry:
    return OptimizerEntry(
        "soap",
        "SOAP (Vyas et al. 2024): Adam in Shampoo's eigenbasis (pytorch-optimizer)",
        "pytorch_optimizer.SOAP",
        {
            "lr": _lr(3e-3),
            "beta1": _beta(0.95),
            "beta2": _beta(0.95),
            "eps": HyperParameter(float, 1e-8, low=0.0, low_open=True, log=True),
            "update_period": _period(10, "steps between eigenbasis refreshes"),
        },
        _soap,
        grid=_grid(),
        step_protocol="closure",
        refresh_period="update_period",
        requires=_PYTORCH_OPTIMIZER,
    )


def _shampoo_entry() -> OptimizerEntry:
    return OptimizerEntry(
        "shampoo",
        "Shampoo (Gupta et al. 2018): Kronecker-factored matrix roots (pytorch-optimizer)",
        "pytorch_optimizer.Shampoo",
        {
            "lr": _lr(1e-3),
            "momentum": _beta(0.0, "0: the library feeds the preconditioned update back"),
            "matrix_eps": HyperParameter(float, 1e-6, low=0.0, low_open=True, log=True),
            "update_period": _period(10, "steps between inverse-root refreshes"),
        },
        _shampoo,
        grid=_grid(),
        step_protocol="closure",
        refresh_period="update_period",
        requires=_PYTORCH_OPTIMIZER,
    )


def _adahessian_entry() -> OptimizerEntry:
    return OptimizerEntry(
        "adahessian",
        "AdaHessian (Yao et al. 2021): Adam on a Hutchinson Hessian diagonal",
        "pytorch_optimizer.AdaHessian",
        {
            "lr": _lr(0.1),
            "beta1": _beta(0.9),
            "beta2": _beta(0.999),
            "hessian_power": HyperParameter(float, 1.0, low=0.0, high=1.0),
            "update_period": _period(1, "steps between Hessian estimates"),
        },
        _adahessian,
        grid=_grid(),
        step_protocol="closure",
        driver=SecondBackwardDriver,
        refresh_period="update_period",
        requires=_PYTORCH_OPTIMIZER,
    )


def _sophia_entry() -> OptimizerEntry:
    return OptimizerEntry(
        "sophia",
        "Sophia-H (Liu et al. 2023): clipped Newton on a Hutchinson Hessian diagonal",
        "pytorch_optimizer.SophiaH",
        {
            "lr": _lr(0.06),
            "beta1": _beta(0.96),
            "beta2": _beta(0.99),
            "clip": HyperParameter(float, 0.01, low=0.0, low_open=True, log=True),
            "update_period": _period(10, "steps between Hessian estimates"),
        },
        _sophia,
        grid=_grid(),
        step_protocol="closure",
        driver=SecondBackwardDriver,
        refresh_period="update_period",
        requires=_PYTORCH_OPTIMIZER,
    )


def _sfadamw_entry() -> OptimizerEntry:
    return OptimizerEntry(
        "sfadamw",
        "Schedule-free AdamW (Defazio et al. 2024), evaluated at its averaged point",
        "schedulefree.AdamWScheduleFree",
        {
            "lr": _lr(2.5e-3),
            "beta1": _beta(0.9),
            "beta2": _beta(0.999),
            "warmup_steps": HyperParameter(int, 0, low=0),
        },
        _sfadamw,
        grid=_grid(),
        step_protocol="closure",
        driver=TrainEvalDriver,
        requires=(("schedulefree", "schedulefree"),),
    )


def _lbfgs_entry() -> OptimizerEntry:
    return OptimizerEntry(
        "lbfgs",
        "L-BFGS (torch), one iteration per mini-batch, strong-Wolfe line search",
        torch.optim.LBFGS,
        {
            "lr": _lr(1.0),
            "history_size": HyperParameter(int, 10, low=1),
        },
        _lbfgs,
        grid=_grid(),
        step_protocol="closure",
    )


def peer_entries() -> tuple[OptimizerEntry, ...]:
    """The entries, built on call (the registry adds them to the built-in ones)."""
    return (
        _kfac_entry(),
        _soap_entry(),
        _shampoo_entry(),
        _adahessian_entry(),
        _sophia_entry(),
        _sfadamw_entry(),
        _lbfgs_entry(),
    )
