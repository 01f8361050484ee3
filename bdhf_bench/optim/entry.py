"""A registry entry, as plain data: a class, a hyperparameter schema, a grid, a driver.

``HyperParameter`` types and range-checks one value; ``OptimizerEntry`` resolves a whole
setting against its schema once and builds the optimizer from it. ``registry`` holds the
entries; this module holds only their shape, so entry modules and plugins can import it.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..plugins import unknown_name_message
from .protocol import StepDriver

DEEPOBS_LR_GRID = [float(f"{v:.6g}") for v in np.logspace(-5, 2, 36)]
"""DeepOBS's learning-rate grid: 36 log-spaced values in [1e-5, 1e2]."""

STEP_PROTOCOLS = ("closure", "model_closure")
"""``closure``: step(closure) calls closure() (forward + backward) like any torch optimizer;
``model_closure``: step needs a ``ModelClosure`` (curvature and extra evaluations)."""


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
    words: tuple[str, ...] = ()
    """Words a number-typed hyperparameter also takes (``curvature_fraction="auto"``)."""

    def valid_range(self) -> str:
        if self.words:
            words = " or ".join(repr(w) for w in self.words)
            return f"{words} or {replace(self, words=()).valid_range()}"
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
        if isinstance(value, str) and value.strip() in self.words:
            return value.strip()
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
        if isinstance(value, str) and value in self.words:
            return
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
    optimizer_class: type | str
    """The class, or ``"package.Class"`` for one imported only when the entry is built."""
    hyperparameters: Mapping[str, HyperParameter]
    build_fn: Callable[..., torch.optim.Optimizer]
    """``build_fn(model, hps, **execution)``, ``execution`` holding ``execution_options``."""
    grid: Mapping[str, list[Any]] = field(default_factory=dict)
    step_protocol: str = "model_closure"
    driver: type[StepDriver] = StepDriver
    """How a training loop drives it (``protocol``): the default is ``step(closure)``."""
    execution_options: tuple[str, ...] = ()
    """Execution switches the optimizer takes as constructor arguments (as torch's
    ``foreach``): how it runs, not what it computes, so not hyperparameters."""
    refresh_period: str | None = None
    """The hyperparameter giving the steps between curvature refreshes (one step if None)."""
    requires: tuple[tuple[str, str], ...] = ()
    """(module, pip package) pairs the entry needs beyond bdhf-bench's own dependencies."""

    def __post_init__(self) -> None:
        if self.step_protocol not in STEP_PROTOCOLS:
            raise ValueError(f"step_protocol must be one of {STEP_PROTOCOLS}")
        if self.refresh_period is not None and self.refresh_period not in self.hyperparameters:
            raise ValueError(f"{self.name}: refresh_period names no hyperparameter")
        for key, h in self.hyperparameters.items():
            if h.coerce(key, h.default) != h.default:
                raise ValueError(f"{self.name}: the default of {key} is not in canonical form")
        for key, values in self.grid.items():
            if key not in self.hyperparameters:
                raise ValueError(f"{self.name}: grid names unknown hyperparameter {key!r}")
            for v in values:
                self.hyperparameters[key].check(key, v)

    def schema(self) -> dict[str, dict[str, Any]]:
        """DeepOBS's form: ``{name: {"type": type, "default": value}}``."""
        return {k: {"type": h.type, "default": h.default} for k, h in self.hyperparameters.items()}

    def defaults(self) -> dict[str, Any]:
        """The default setting (already resolved: every default is checked at registration)."""
        return {k: h.default for k, h in self.hyperparameters.items()}

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated by ``overrides`` (strings are parsed), typed and range-checked:
        the one place a setting is checked, done once where a run's spec is made."""
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

    def missing_package(self) -> str | None:
        """The pip package the entry needs and this environment lacks (None: none)."""
        for module, package in self.requires:
            if importlib.util.find_spec(module) is None:
                return package
        return None

    def build(
        self,
        model: nn.Module,
        hyperparameters: Mapping[str, Any],
        **execution: Any,
    ) -> torch.optim.Optimizer:
        """The optimizer for ``model`` from a resolved setting (``resolve``'s output, not
        overrides: it is not checked again); of ``execution``, the switches in
        ``execution_options`` are passed on and the rest ignored."""
        self.require_resolved(hyperparameters)
        missing = self.missing_package()
        if missing is not None:
            raise MissingPackageError(
                f"optimizer {self.name} needs the package {missing}: pip install {missing}"
            )
        options = {k: v for k, v in execution.items() if k in self.execution_options}
        return self.build_fn(model, dict(hyperparameters), **options)

    def require_resolved(self, hyperparameters: Mapping[str, Any]) -> None:
        """Refuse a setting that did not come from ``resolve``: one that names other keys than
        the schema's (a partial setting, or one from another optimizer or version)."""
        missing = sorted(set(self.hyperparameters) - set(hyperparameters))
        extra = sorted(set(hyperparameters) - set(self.hyperparameters))
        if missing or extra:
            what = f"lacks {', '.join(missing)}" if missing else f"has unknown {', '.join(extra)}"
            raise ValueError(
                f"the setting for {self.name} is not resolved (it {what}); "
                f"make it with get_optimizer({self.name!r}).resolve(overrides)"
            )

    def period(self, hyperparameters: Mapping[str, Any]) -> int:
        """Steps between curvature refreshes at these (resolved) hyperparameters."""
        return 1 if self.refresh_period is None else int(hyperparameters[self.refresh_period])


class MissingPackageError(ValueError):
    """An entry whose library is not installed (one line naming it)."""
