"""L2 coefficients taken from DeepOBS's own regularization groups.

DeepOBS adds ``0.5 * sum_groups wd_g * sum_p ||p||^2`` for the groups its test problem class
returns from ``get_regularization_groups()`` (weights but not biases for most nets; only conv and
dense weights for the Wide ResNet). We ask the class itself: instantiate it WITHOUT ``set_up()``
(which would build DataLoaders and download data), hand it our model as ``.net``, and read each
parameter's factor from the groups. So the penalty is DeepOBS's by construction.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def deepobs_class(name: str) -> type:
    """The DeepOBS PyTorch test problem class called ``name``."""
    from deepobs.pytorch import testproblems

    cls = getattr(testproblems, name, None)
    if cls is None:
        raise ValueError(f"deepobs has no PyTorch test problem {name!r}")
    return cls


def deepobs_l2(name: str) -> Callable[[nn.Module, float], list[float]]:
    """``l2(model, wd)`` for DeepOBS problem ``name``: per-parameter factors, in
    ``model.parameters()`` order, from the class's regularization groups at weight decay ``wd``.

    Unregularized DeepOBS problems ignore ``wd`` (as DeepOBS does) and give zeros.
    """

    def l2(model: nn.Module, weight_decay: float) -> list[float]:
        from deepobs.pytorch.testproblems.testproblem import UnregularizedTestproblem

        cls = deepobs_class(name)
        if issubclass(cls, UnregularizedTestproblem):
            problem = cls(1)
        else:
            problem = cls(1, float(weight_decay))
        problem.net = model
        factor = {
            id(p): float(wd)
            for wd, group in problem.get_regularization_groups().items()
            for p in group
        }
        missing = [n for n, p in model.named_parameters() if id(p) not in factor]
        if missing:
            raise ValueError(f"{name}: DeepOBS's groups do not cover parameters {missing}")
        return [factor[id(p)] for p in model.parameters()]

    l2.__name__ = f"deepobs_l2_{name}"
    return l2
