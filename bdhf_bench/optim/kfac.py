"""K-FAC (Martens and Grosse 2015) on curvlinops' Kronecker factors.

The other block-diagonal curvature method beside BDHF: each layer's block of the Fisher (or
GGN) is approximated by a Kronecker product of its input covariance A and output-gradient
covariance G, and inverted directly, where BDHF solves the exact block with CG. One step:

1. the gradient on the mini-batch (``closure()``);
2. every ``update_period`` steps, new factors on the mini-batch from curvlinops'
   ``KFACLinearOperator`` (Monte-Carlo Fisher by default, one sampled label per example),
   averaged into the running ones (``factor_decay``), and their damped inverse from
   ``KFACInverseLinearOperator`` (Martens and Grosse's factored Tikhonov damping with
   ``heuristic_damping``: ``(A + pi sqrt(lambda))^-1 x (G + sqrt(lambda) / pi)^-1``, a bias
   taking its layer's damped ``G`` factor; else the exact ``(A x G + lambda I)^-1``);
3. the preconditioned gradient, scaled down if its step would move the model's predictions too
   far (``kl_clip``: Ba, Grosse and Martens 2017's bound ``lr^2 g.Pg <= kl_clip``);
4. the step through ``torch.optim.SGD`` with ``momentum``.

Only ``nn.Linear`` and ``nn.Conv2d`` layers have Kronecker factors in curvlinops. Any other
trainable parameter (an LSTM's recurrent weights, BatchNorm's scale) takes the plain gradient,
as a layer with no curvature information would under the damping; ``preconditioned()`` lists
which tensors K-FAC covers. The factors describe the data loss; an L2 term's gradient is in
the preconditioned gradient, its curvature is left to the damping.

The factors are curvlinops' for a torch loss; this package's losses differ from torch's by a
constant ``c`` (a per-image sum averaged over the batch is torch's sum over ``c = 1/N``), so the
curvature is ``c`` times curvlinops' and ``(c F + lambda)^-1 = (F + lambda / c)^-1 / c``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ..curvature.ggn import frozen_buffers
from ..curvature.losses import MSE, BCEWithLogits, CrossEntropy, OutputLoss
from .closure import ModelClosure

FISHER_TYPES = ("mc", "type-2", "empirical")
_KRONECKER_LAYERS = (nn.Linear, nn.Conv2d)


def torch_loss(loss: OutputLoss, batch_size: int) -> tuple[nn.Module, float]:
    """The torch loss curvlinops takes for ``loss``, and ``c`` with ``loss = c * torch_loss``."""
    kinds = {
        CrossEntropy: nn.CrossEntropyLoss,
        BCEWithLogits: nn.BCEWithLogitsLoss,
        MSE: nn.MSELoss,
    }
    for ours, theirs in kinds.items():
        if type(loss) is ours:
            if loss.reduction == "batch_mean":
                return theirs(reduction="sum"), 1.0 / batch_size
            return theirs(reduction=loss.reduction), 1.0
    raise ValueError(
        f"K-FAC has no Kronecker factors for the loss {type(loss).__name__} "
        "(curvlinops: cross-entropy, sigmoid cross-entropy and squared error)"
    )


class KFAC(torch.optim.Optimizer):
    """K-FAC over a model's Linear and Conv2d layers; ``step`` takes a ``ModelClosure``.

    Args:
        model: the network (K-FAC needs its layers, not just its parameters).
        lr, momentum: the SGD step applied to the preconditioned gradient.
        damping: lambda of the damped curvature ``F + lambda I`` (in the loss's own scale).
        update_period: steps between factor refreshes (and inversions).
        factor_decay: running-average weight of the old factors at a refresh (0: none).
        kl_clip: bound on ``lr^2 g.Pg`` per step (0: no clipping).
        fisher_type: "mc" (sampled labels), "type-2" (the exact GGN's factors; one backward
            per output) or "empirical" (the empirical Fisher).
        heuristic_damping: Martens and Grosse's factored damping, else the exact inverse.
        seed: seed of the sampled labels (each refresh draws from ``seed + refresh``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 1e-3,
        momentum: float = 0.9,
        damping: float = 1e-3,
        update_period: int = 10,
        factor_decay: float = 0.95,
        kl_clip: float = 1e-3,
        fisher_type: str = "mc",
        heuristic_damping: bool = True,
        seed: int = 0,
    ) -> None:
        if fisher_type not in FISHER_TYPES:
            raise ValueError(f"invalid fisher_type={fisher_type!r}: must be one of {FISHER_TYPES}")
        if update_period < 1:
            raise ValueError(f"invalid update_period={update_period!r}: must be >= 1")
        params = [p for p in model.parameters() if p.requires_grad]
        super().__init__(params, {"lr": lr, "momentum": momentum})
        self.model = model
        self.settings = {
            "damping": float(damping),
            "update_period": int(update_period),
            "factor_decay": float(factor_decay),
            "kl_clip": float(kl_clip),
            "fisher_type": fisher_type,
            "heuristic_damping": bool(heuristic_damping),
            "seed": int(seed),
        }
        covered = {
            id(p)
            for m in model.modules()
            if isinstance(m, _KRONECKER_LAYERS)
            for p in m.parameters(recurse=False)
        }
        self._kronecker = [p for p in params if id(p) in covered]
        self._sgd = torch.optim.SGD(params, lr=lr, momentum=momentum)
        self._factors: dict[str, dict[str, Tensor]] = {"input": {}, "gradient": {}}
        self._inverse: Any = None
        self._scale = 1.0
        self._steps = 0
        self._refreshes = 0

    def preconditioned(self) -> list[Tensor]:
        """The tensors K-FAC preconditions (the rest take the plain gradient)."""
        return list(self._kronecker)

    # -- curvature -----------------------------------------------------------------------------

    def _operator(self, closure: ModelClosure, torch_loss_fn: nn.Module) -> Any:
        from curvlinops import KFACLinearOperator

        return KFACLinearOperator(
            self.model,
            torch_loss_fn,
            self._kronecker,
            [(closure.inputs, closure.targets)],
            check_deterministic=False,
            seed=self.settings["seed"] + self._refreshes,
            fisher_type=self.settings["fisher_type"],
        )

    def _refresh(self, closure: ModelClosure) -> None:
        """New factors on the closure's batch, averaged into the old; a new inverse."""
        loss_fn, scale = torch_loss(closure.loss, closure.batch_size)
        operator = self._operator(closure, loss_fn)
        with torch.enable_grad(), frozen_buffers(self.model):
            operator.compute_kronecker_factors()
        fresh = operator.state_dict()
        decay = self.settings["factor_decay"] if self._refreshes else 0.0
        for kind in ("input", "gradient"):
            new = fresh[f"{kind}_covariances"]
            old = self._factors[kind]
            for name, factor in new.items():
                old[name] = factor if name not in old else old[name].lerp(factor, 1.0 - decay)
        self._refreshes += 1
        self._invert(operator, scale)

    def _invert(self, operator: Any, scale: float) -> None:
        from curvlinops import KFACInverseLinearOperator

        state = operator.state_dict()
        state["input_covariances"] = self._factors["input"]
        state["gradient_covariances"] = self._factors["gradient"]
        with warnings.catch_warnings():  # "loading overwrites the model": with its own values
            warnings.simplefilter("ignore")
            operator.load_state_dict(state)
        heuristic = self.settings["heuristic_damping"]
        self._inverse = KFACInverseLinearOperator(
            operator,
            damping=self.settings["damping"] / scale,
            use_heuristic_damping=heuristic,
            use_exact_damping=not heuristic,
        )
        self._scale = scale

    def precondition(self, grads: list[Tensor]) -> list[Tensor]:
        """``(c F + lambda)^-1`` applied to the Kronecker-covered gradients (same order)."""
        return [g / self._scale for g in self._inverse @ grads]

    # -- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: ModelClosure) -> Tensor:  # type: ignore[override]
        """One K-FAC step on the closure's mini-batch; returns the loss before it."""
        if not isinstance(closure, ModelClosure):
            raise TypeError(f"KFAC.step needs a ModelClosure, got {type(closure).__name__}")
        with torch.enable_grad():
            loss = closure()
        if self._kronecker:
            if self._steps % self.settings["update_period"] == 0:
                self._refresh(closure)
            elif self._inverse is None:  # resumed between refreshes: the saved factors
                loss_fn, scale = torch_loss(closure.loss, closure.batch_size)
                self._invert(self._operator(closure, loss_fn), scale)
            grads = [p.grad for p in self._kronecker]
            natural = self.precondition(grads)
            for p, d in zip(self._kronecker, natural):
                p.grad = d
            clip = self.settings["kl_clip"]
            if clip > 0:
                lr = self.param_groups[0]["lr"]
                vg = sum((d * g).sum() for d, g in zip(natural, grads))
                nu = torch.clamp(torch.sqrt(clip / (lr**2 * vg.abs().clamp_min(1e-30))), max=1.0)
                for p in self._kronecker:
                    p.grad.mul_(nu)
        for group, inner in zip(self.param_groups, self._sgd.param_groups):
            inner["lr"], inner["momentum"] = group["lr"], group["momentum"]
        self._sgd.step()
        self._steps += 1
        return loss

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["kfac"] = {
            "sgd": self._sgd.state_dict(),
            "factors": self._factors,
            "steps": self._steps,
            "refreshes": self._refreshes,
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("kfac")
        super().load_state_dict(state_dict)
        self._sgd.load_state_dict(extra["sgd"])
        self._factors = {k: dict(v) for k, v in extra["factors"].items()}
        self._steps = int(extra["steps"])
        self._refreshes = int(extra["refreshes"])
        self._inverse = None  # rebuilt from the factors at the next step
