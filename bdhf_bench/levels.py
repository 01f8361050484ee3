"""Milestone levels of a metric (``mnist_autoencoder:valid_loss<=125``): what a time-to-target
study times besides each problem's target. Parsing only, with no heavy imports, so that suites
(the runner) can check them when loaded; the report computes the times (report/level_times.py)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

LEVEL_PATTERN = re.compile(
    r"^(?P<problem>[^:\s]+):(?P<split>train|valid|test)_(?P<metric>loss|accuracy)"
    r"\s*(?P<relation><=|>=)\s*(?P<value>[-+0-9.eE]+)$"
)


class LevelError(ValueError):
    """A level that cannot be read (one line)."""


@dataclass(frozen=True)
class Level:
    """``problem:split_metric<=value`` (a loss) or ``>=value`` (an accuracy)."""

    problem: str
    split: str
    metric: str
    value: float

    @property
    def label(self) -> str:
        relation = ">=" if self.metric == "accuracy" else "<="
        return f"{self.split} {self.metric} {relation} {self.value:g}"

    def met(self, values: np.ndarray) -> np.ndarray:
        return values >= self.value if self.metric == "accuracy" else values <= self.value


def parse_level(text: str) -> Level:
    """``mnist_autoencoder:valid_loss<=125`` -> Level; a loss must be bounded from above and
    an accuracy from below."""
    match = LEVEL_PATTERN.match(text.strip())
    if match is None:
        raise LevelError(
            f"level {text!r} is not PROBLEM:SPLIT_METRIC<=VALUE (split train, valid or test; "
            "metric loss with <= or accuracy with >=), e.g. mnist_autoencoder:valid_loss<=125"
        )
    metric, relation = match["metric"], match["relation"]
    if (metric == "loss") != (relation == "<="):
        raise LevelError(f"level {text!r}: a loss level is <=, an accuracy level >=")
    try:
        value = float(match["value"])
    except ValueError:
        raise LevelError(f"level {text!r}: {match['value']!r} is not a number") from None
    if not math.isfinite(value):
        raise LevelError(f"level {text!r}: the value must be finite")
    return Level(match["problem"], match["split"], metric, value)
