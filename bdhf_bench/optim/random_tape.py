"""One set of random numbers per example per step, whatever sub-batch a pass runs on.

An HF step runs the model several times on one mini-batch: the gradient pass on all N examples,
the curvature pass on the first m, and extra evaluations on either. Replaying the global RNG
state gives a pass the random numbers of an earlier pass on the *same* rows only: a Dropout
mask drawn for m rows is not the first m rows of one drawn for N. ``RandomTape`` records what
the gradient pass draws (Dropout masks; ``rand``, ``randn`` and ``normal`` without tensor
arguments; ``*_like`` draws; in-place fills such as ``normal_``) and hands every later pass the
same numbers, cut to its leading rows, so the quadratic model, rho and the line search all see
one random function.

A pass replays through the mode only when the recorded pass called a random function at all:
a model without one (most) runs its later passes without the mode, whose Python hook costs
0.5-0.9 ms per forward of the sequential-MNIST LSTM on 32 sequences (about 20%). Such a pass
takes the same code path as the recorded one, so it draws nothing either way.

A draw whose recorded shape does not fit (another code path, a draw whose leading dimension is
not the batch) is drawn afresh, which is what happens without the tape. A draw that takes
tensors of values (``torch.normal(mean, std)``, ``bernoulli(p)``) must follow those values when
the parameters move, so it is not taped (the RNG state replay still covers it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

# Dropout functions -> the number of feature dimensions whose elements share a mask entry.
_DROPOUTS: dict[Callable[..., Any], int] = {
    F.dropout: 0,
    F.dropout1d: 1,
    F.dropout2d: 2,
    F.dropout3d: 3,
}
# Draws whose numbers do not depend on any tensor's values (a ``*_like`` input gives only the
# shape). A draw that takes tensors of values (``torch.normal(mean, std)``, ``bernoulli(p)``)
# must follow those values when the parameters move, so it is not taped.
_DRAWS = {torch.rand, torch.randn, torch.normal}
_LIKE_DRAWS = {torch.rand_like, torch.randn_like, torch.randint_like}
_IN_PLACE_DRAWS = {
    Tensor.bernoulli_,
    Tensor.normal_,
    Tensor.uniform_,
    Tensor.exponential_,
    Tensor.random_,
    Tensor.cauchy_,
    Tensor.log_normal_,
    Tensor.geometric_,
}

_TAPED = _DRAWS | _LIKE_DRAWS | _IN_PLACE_DRAWS


def _takes_values(func: Callable[..., Any], args: tuple, kwargs: dict) -> bool:
    """Whether a draw's numbers depend on a tensor argument's values."""
    values = args if func in _DRAWS else args[1:]
    return any(isinstance(a, Tensor) for a in (*values, *kwargs.values()))


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


class RandomTape(TorchFunctionMode):
    """Records the random numbers of one forward pass and replays them on leading rows."""

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[Tensor] = []
        self.batch_size = 0
        self.saw_random = True
        """Whether the recorded pass called a random function (Dropout or a draw); before any
        recording, unknown, so a replay keeps the mode."""
        self._replaying = False
        self._rows = 0
        self._next = 0

    @contextlib.contextmanager
    def recording(self, batch_size: int) -> Iterator[None]:
        """Record a fresh tape during a pass over ``batch_size`` examples."""
        self.draws, self.batch_size, self._replaying = [], batch_size, False
        self.saw_random = False
        with self:
            yield

    @contextlib.contextmanager
    def replaying(self, rows: int) -> Iterator[None]:
        """Replay the tape during a pass over the first ``rows`` examples of the batch (without
        the mode when the recorded pass called nothing random: there is nothing to replay)."""
        if not self.saw_random:
            yield
            return
        self._replaying, self._rows, self._next = True, rows, 0
        try:
            with self:
                yield
        finally:
            self._replaying = False

    def _take(self, shape: torch.Size, draw: Callable[[], Tensor]) -> Tensor:
        if not self._replaying:
            value = draw()
            self.draws.append(value)
            return value
        if self._next < len(self.draws):
            value = self.draws[self._next]
            self._next += 1
            if value.shape == shape:
                return value
            if (
                value.dim() > 0
                and len(shape) == value.dim()
                and value.shape[0] == self.batch_size
                and shape[0] == self._rows
                and value.shape[1:] == shape[1:]
            ):
                return value[: self._rows]
        return draw()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DROPOUTS:
            self.saw_random = True
            return self._dropout(func, args, kwargs)
        if func not in _TAPED:
            return func(*args, **kwargs)
        self.saw_random = True
        if _takes_values(func, args, kwargs):
            return func(*args, **kwargs)
        if func not in _IN_PLACE_DRAWS:
            fresh = func(*args, **kwargs)
            return self._take(fresh.shape, lambda: fresh)
        target = args[0]
        if not self._replaying:
            return self._take(target.shape, lambda: func(*args, **kwargs).clone())
        value = self._take(target.shape, lambda: func(*args, **kwargs))
        return target if value is target else target.copy_(value)

    def _dropout(self, func: Callable[..., Tensor], args: tuple, kwargs: dict) -> Tensor:
        x = args[0]
        p = float(_arg(args, kwargs, 1, "p", 0.5))
        training = _arg(args, kwargs, 2, "training", True)
        inplace = _arg(args, kwargs, 3, "inplace", False)
        features = _DROPOUTS[func]
        if not training or p == 0.0 or (features and x.dim() != features + 2):
            return func(*args, **kwargs)
        shape = x.shape if not features else torch.Size(x.shape[:2] + (1,) * features)

        def draw() -> Tensor:
            if p >= 1.0:
                return x.new_zeros(shape)
            return x.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)

        mask = self._take(shape, draw)
        return x.mul_(mask) if inplace else x * mask
