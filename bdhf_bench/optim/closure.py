"""The step protocol: one mini-batch, handed to any optimizer's ``step(closure)``.

``ModelClosure`` is a plain torch.optim closure (calling it zeroes the gradients, runs forward and
backward on the mini-batch and returns the loss), so Adam, SGD or L-BFGS take it unchanged. A
Hessian-free step needs more from the same batch, and gets it here without knowing the problem:

- ``curvature(fraction)``: the GGN context on a sub-batch (the first ``ceil(fraction * N)``
  examples of the shuffled mini-batch), from one forward pass;
- ``evaluate(part)``: the objective at the current parameters on the whole batch or on that
  sub-batch, for line search, CG-backtracking and the reduction ratio;
- ``prefix_gradient(m)``: the loss's gradient on the first ``m`` examples, for the gradient's
  noise (the automatic curvature fraction).

Random layers (Dropout, a VAE's sampling) draw once per step: the gradient pass records its
random numbers (``RandomTape``) and every later pass, the curvature pass on the sub-batch
included, gets the same numbers for the same examples; anything else random replays the global
RNG state of that part's first pass. So the objective an HF step optimises is one deterministic
function. BatchNorm's running statistics move once per step (in the gradient pass, as with any
optimizer) and never in the curvature pass or the extra evaluations.

Only trainable parameters (``requires_grad=True``) take part; ``l2`` is given for all of
``model.parameters()`` and the frozen ones' coefficients are dropped (their penalty is a
constant of the objective, left out of it).

Every pass is counted in units of the mini-batch (a forward on a quarter of it counts 0.25).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..curvature import GGNContext, OutputLoss
from ..curvature.ggn import frozen_buffers
from ..curvature.losses import as_output_loss
from .random_tape import RandomTape


@dataclass
class PassCounts:
    """Passes over the network, in units of one mini-batch."""

    forward: float = 0.0
    backward: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"forward": self.forward, "backward": self.backward}


def _batch_size(obj: Any) -> int:
    if isinstance(obj, Tensor):
        return obj.shape[0]
    if isinstance(obj, (tuple, list)):
        return _batch_size(obj[0])
    if isinstance(obj, dict):
        return _batch_size(next(iter(obj.values())))
    raise ValueError(f"cannot find the batch dimension of {type(obj).__name__} inputs")


def rows(obj: Any, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of a batch (tensors, or tuples/lists/dicts of them)."""
    if isinstance(obj, Tensor):
        return obj[start:stop]
    if isinstance(obj, (tuple, list)):
        return type(obj)(rows(o, start, stop) for o in obj)
    if isinstance(obj, dict):
        return {k: rows(v, start, stop) for k, v in obj.items()}
    raise ValueError(f"cannot slice {type(obj).__name__} inputs")


class _RNGSnapshot:
    """The global RNG state (CPU, and the device's) at one moment, to replay random layers."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run with this state; leave the global state as it was found."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


class ModelClosure:
    """A mini-batch, the model and the objective, as an optimizer step needs them.

    Args:
        model: the network (its train/eval mode is left as the caller set it).
        loss: the loss on the model's outputs (an ``OutputLoss`` or a supported torch loss).
        inputs: the model's inputs for the mini-batch (batch dimension first).
        targets: the loss targets.
        l2: per-parameter L2 coefficients (``model.parameters()`` order) for a penalty
            ``0.5 * c * ||p||^2`` that is part of the objective, or None. Frozen parameters'
            coefficients are ignored.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: OutputLoss | nn.Module,
        inputs: Any,
        targets: Tensor,
        l2: Sequence[float] | None = None,
    ) -> None:
        self.model = model
        self.loss = as_output_loss(loss)
        self.inputs = inputs
        self.targets = targets
        every = list(model.parameters())
        trainable = [p.requires_grad for p in every]
        self.params = [p for p, t in zip(every, trainable) if t]
        """The trainable parameters (the ones an optimizer may move), in model order."""
        if not self.params:
            raise ValueError("the model has no parameter with requires_grad=True")
        if l2 is not None and len(l2) != len(every):
            raise ValueError(f"l2 needs one coefficient per parameter ({len(every)})")
        self.l2 = (
            [float(c) for c, t in zip(l2, trainable) if t]
            if l2 is not None
            else [0.0] * len(self.params)
        )
        """L2 coefficients aligned with ``params``."""
        self.batch_size = _batch_size(inputs)
        self.device = self.params[0].device
        self.counts = PassCounts()
        self.outputs: Any = None
        self._rng: dict[str, _RNGSnapshot] = {}
        self._tape = RandomTape()
        self._sub: tuple[Any, Tensor, float] | None = None
        self._rows = {"batch": self.batch_size}

    # -- the plain closure ------------------------------------------------------------------

    def objective(self, outputs: Any, targets: Tensor) -> Tensor:
        value = self.loss(outputs, targets)
        for p, c in zip(self.params, self.l2):
            if c:
                value = value + 0.5 * c * p.square().sum()
        return value

    def __call__(self, create_graph: bool = False) -> Tensor:
        """Zero the gradients, forward and backward on the mini-batch; the loss (with L2).
        ``create_graph`` keeps the backward's graph, for methods that differentiate the
        gradient again (Hessian-vector products inside their step)."""
        for p in self.params:
            p.grad = None
        self._rng["batch"] = _RNGSnapshot(self.device)
        with torch.enable_grad(), self._tape.recording(self.batch_size):
            outputs = self.model(self.inputs)
            value = self.objective(outputs, self.targets)
            value.backward(create_graph=create_graph)
        self.outputs = outputs
        self.counts.forward += 1.0
        self.counts.backward += 1.0
        return value.detach()

    # -- what an HF step adds -----------------------------------------------------------------

    def curvature(self, fraction: float) -> GGNContext:
        """The GGN context on the sub-batch of the first ``ceil(fraction * N)`` examples."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"curvature fraction must be in (0, 1], got {fraction}")
        m = max(1, math.ceil(fraction * self.batch_size))
        inputs, targets = rows(self.inputs, 0, m), rows(self.targets, 0, m)
        self._sub = (inputs, targets, m / self.batch_size)
        self._rows["curvature"] = m
        self._rng["curvature"] = _RNGSnapshot(self.device)
        with self._tape.replaying(m):
            ctx = GGNContext.from_model(
                self.model, inputs, targets, self.loss, self.params, self.l2
            )
        self.counts.forward += m / self.batch_size
        return ctx

    def prefix_gradient(self, m: int, params: Sequence[Tensor] | None = None) -> list[Tensor]:
        """The loss's gradient (without L2) on the first ``m`` examples w.r.t. ``params`` (the
        trainable parameters by default), with the gradient pass's random numbers for them
        and BatchNorm statistics untouched: with the whole batch's gradient it gives the
        gradient's noise (``noise_rules``). One forward and backward on ``m`` examples."""
        if "batch" not in self._rng:
            raise RuntimeError("the closure has not been called: there is no gradient pass")
        if not 0 < m <= self.batch_size:
            raise ValueError(f"m must be in [1, {self.batch_size}], got {m}")
        inputs, targets = rows(self.inputs, 0, m), rows(self.targets, 0, m)
        with self._rng["batch"].replay(), torch.enable_grad(), frozen_buffers(self.model):
            with self._tape.replaying(m):
                outputs = self.model(inputs)
            wrt = self.params if params is None else list(params)
            grads = torch.autograd.grad(self.loss(outputs, targets), wrt, allow_unused=True)
        share = m / self.batch_size
        self.counts.forward += share
        self.counts.backward += share
        return [torch.zeros_like(p) if g is None else g for p, g in zip(wrt, grads)]

    @property
    def curvature_share(self) -> float:
        """The curvature sub-batch's size as a fraction of the mini-batch."""
        if self._sub is None:
            raise RuntimeError("curvature() has not been called")
        return self._sub[2]

    def evaluate(self, part: str = "batch") -> Tensor:
        """The objective at the current parameters on ``"batch"`` or ``"curvature"``, with the
        gradient pass's random numbers for these examples (the RNG state of that part's first
        pass for anything else random) and BatchNorm statistics left untouched."""
        if part == "batch":
            inputs, targets, share = self.inputs, self.targets, 1.0
        elif part == "curvature":
            if self._sub is None:
                raise RuntimeError("curvature() has not been called")
            inputs, targets, share = self._sub
        else:
            raise ValueError(f"part must be 'batch' or 'curvature', got {part!r}")
        snapshot = self._rng.get(part)
        random_numbers = snapshot.replay() if snapshot is not None else contextlib.nullcontext()
        with random_numbers, torch.no_grad(), frozen_buffers(self.model):
            with self._tape.replaying(self._rows[part]):
                outputs = self.model(inputs)
            value = self.objective(outputs, targets)
        self.counts.forward += share
        return value
