"""One short line per run that ended, for the console: what it cost and how far it got.

The full spec (every hyperparameter) is ~300 characters; the line names only the
hyperparameters that differ from the optimizer's defaults (all of them with ``verbose``), and
adds the run's training seconds, gradient-equivalents and final validation metric. A run whose
result was already there reads "reused".
"""

from __future__ import annotations

import math
from typing import Any

from ..optim import get_optimizer
from .run import RunOutcome
from .spec import RunSpec

STATUS_WORDS = {"skipped": "reused"}


def short_label(spec: RunSpec, verbose: bool = False) -> str:
    """``problem / optimizer (changed hyperparameters) seed N``."""
    if verbose:
        return spec.label()
    try:
        defaults = get_optimizer(spec.optimizer).defaults()
    except (ValueError, TypeError):
        defaults = {}
    changed = {k: v for k, v in spec.hyperparameters.items() if defaults.get(k, object()) != v}
    hps = f" ({', '.join(f'{k}={v}' for k, v in sorted(changed.items()))})" if changed else ""
    return f"{spec.problem} / {spec.optimizer}{hps} seed {spec.seed}"


def _figures(result: dict[str, Any]) -> str:
    """Seconds, gradient-equivalents and the final value of the target's metric."""
    parts = []
    seconds = result.get("train_seconds")
    if isinstance(seconds, int | float):
        parts.append(f"{seconds:.3g} s")
    evaluations = result.get("evaluations") or [{}]
    last = evaluations[-1]
    geq = last.get("gradient_equivalents")
    if isinstance(geq, int | float):
        parts.append(f"{geq:.4g} grad-eq")
    target = result.get("target") or {}
    split = "train" if target.get("split") == "train_eval" else target.get("split", "valid")
    metric = target.get("metric", "loss")
    value = last.get(f"{split}_{metric}")
    if isinstance(value, int | float) and math.isfinite(value):
        parts.append(f"{split} {metric} {value:.4g}")
    reached = target.get("reached")
    if target:
        parts.append(f"target at step {reached['step']}" if reached else "target not reached")
    return ", ".join(parts)


def outcome_line(out: RunOutcome, verbose: bool = False) -> str:
    """``reused: mnist1d_cnn / adam (lr=0.01) seed 43: 1.2 s, 90 grad-eq, valid accuracy 0.61``."""
    word = STATUS_WORDS.get(out.status, out.status)
    line = f"{word}: {short_label(out.spec, verbose)}"
    if out.status == "failed":
        error = (out.error or "no error recorded").strip()
        return f"{line}: {error if verbose else error.splitlines()[0]}"
    result = out.load()
    figures = _figures(result) if result else ""
    return f"{line}: {figures}" if figures else line
