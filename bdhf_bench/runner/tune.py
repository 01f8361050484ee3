"""Tuning, the DeepOBS protocol: search the hyperparameters with one seed, select on the
validation metric only (never test), then rerun the best setting with more seeds.

The search space is the optimizer's default grid, a TOML grid file, or random search with a
trial budget over the grid's range (log-uniform for hyperparameters marked ``log``). A grid file
may list settings one by one (``[[point]]`` tables) beside or instead of its cartesian ``[grid]``:
a design that spans many knobs in a few settings (one factor at a time around a known-good
configuration) is not a product.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..optim import OptimizerEntry
from ..problems import Problem
from .executors import Executor
from .run import RunOutcome
from .spec import Budget, RunSpec
from .store import ResultStore

DEFAULT_TUNING_SEED = 42
DEFAULT_FINAL_SEEDS = tuple(range(42, 52))


class GridFileError(ValueError):
    """A grid file that cannot be used."""


def load_grid_file(
    path: str | Path, entry: OptimizerEntry
) -> tuple[dict[str, list], dict, list[dict]]:
    """``(grid, fixed, points)`` from a TOML file with a ``[grid]`` table of lists and/or
    ``[[point]]`` tables (one setting each), and an optional ``[fixed]`` table; every name and
    value is checked against the optimizer's schema."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise GridFileError(f"cannot read grid file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise GridFileError(f"grid file {path} is not UTF-8 text (TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise GridFileError(f"grid file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"grid", "fixed", "point", "optimizer", "description"}
    if unknown:  # first: a misspelled [grid] is named, not reported as a missing grid
        raise GridFileError(
            f"grid file {path}: unknown key(s) {sorted(unknown)}; valid: [grid], [[point]], "
            "[fixed], optimizer, description"
        )
    grid, fixed = data.get("grid", {} if "point" in data else None), data.get("fixed", {})
    points = data.get("point", [])
    if not isinstance(grid, dict) or not (grid or points):
        raise GridFileError(
            f"grid file {path} needs a non-empty [grid] table of lists or [[point]] tables"
        )
    if not isinstance(points, list) or not all(isinstance(p, dict) and p for p in points):
        raise GridFileError(f"grid file {path}: each [[point]] must be a non-empty table")
    if not isinstance(fixed, dict):
        raise GridFileError(f"grid file {path}: [fixed] must be a table, got {fixed!r}")
    if data.get("optimizer") not in (None, entry.name):
        raise GridFileError(f"grid file {path} is for {data['optimizer']!r}, not {entry.name!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise GridFileError(f"grid file {path}: grid.{key} must be a non-empty list")
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise GridFileError(f"grid file {path}: grid.{key} lists {repeated[0]} twice")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise GridFileError(f"grid file {path}: {both[0]} is in both [grid] and [fixed]")
    for i, point in enumerate(points, 1):
        both = sorted(set(point) & set(fixed))
        if both:
            raise GridFileError(f"grid file {path}: {both[0]} is in both point {i} and [fixed]")
    try:
        for key, values in grid.items():
            for v in values:
                entry.resolve({key: v})
        for point in points:
            entry.resolve(point)
        entry.resolve(fixed)
    except ValueError as exc:
        raise GridFileError(f"grid file {path}: {exc}") from None
    return grid, dict(fixed), [dict(p) for p in points]


def _check_disjoint(grid: Mapping[str, Any], fixed: Mapping[str, Any]) -> None:
    """A hyperparameter is searched or fixed, never both (one would silently win)."""
    both = sorted(set(grid) & set(fixed))
    if both:
        raise ValueError(
            f"hyperparameter {both[0]} is both searched (in the grid) and fixed; "
            "fix it or search it, not both"
        )


def grid_settings(
    entry: OptimizerEntry,
    grid: Mapping[str, Sequence[Any]],
    fixed: Mapping[str, Any],
    points: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Every point of the grid (cartesian product, none for an empty grid), then the listed
    ``points``, resolved against the schema; a setting listed twice is an error."""
    _check_disjoint(grid, fixed)
    for point in points:
        _check_disjoint(point, fixed)
    keys = sorted(grid)
    product = itertools.product(*(grid[k] for k in keys)) if grid else iter(())
    settings = [entry.resolve({**fixed, **dict(zip(keys, values))}) for values in product]
    for point in points:
        setting = entry.resolve({**fixed, **point})
        if setting in settings:
            shown = ", ".join(f"{k}={v}" for k, v in point.items())
            raise ValueError(f"the setting {shown} is listed twice (a point, or the grid's)")
        settings.append(setting)
    return settings


def random_settings(
    entry: OptimizerEntry,
    grid: Mapping[str, Sequence[Any]],
    fixed: Mapping[str, Any],
    trials: int,
    seed: int,
) -> list[dict[str, Any]]:
    """``trials`` random points within the grid's range (log-uniform where the schema says)."""
    if trials < 1:
        raise ValueError(f"random search needs a positive number of trials, got {trials}")
    _check_disjoint(grid, fixed)
    rng = random.Random(seed)
    out = []
    for _ in range(trials):
        point = {}
        for key in sorted(grid):
            values, spec = list(grid[key]), entry.hyperparameters[key]
            numbers = not any(isinstance(v, str) for v in values)  # "auto" is a choice
            if spec.type in (int, float) and len(values) > 1 and numbers:
                lo, hi = min(values), max(values)
                if spec.log and lo > 0:
                    x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
                else:
                    x = rng.uniform(lo, hi)
                point[key] = round(x) if spec.type is int else float(f"{x:.6g}")
            else:
                point[key] = rng.choice(values)
        out.append(entry.resolve({**fixed, **point}))
    return out


def validation_score(problem: Problem, result: Mapping[str, Any] | None) -> float:
    """The selection score of a finished run (higher is better): the final validation accuracy,
    or minus the final validation loss; -inf for diverged or missing runs."""
    if not result or result.get("status") != "finished":
        return -math.inf
    if problem.correct is not None:
        value = result["valid_accuracies"][-1]
        return value if math.isfinite(value) else -math.inf
    value = result["valid_losses"][-1]
    return -value if math.isfinite(value) else -math.inf


@dataclass
class TunePlan:
    """The runs of a tuning job: the search, then the final seeds of the winner."""

    problem: Problem
    entry: OptimizerEntry
    settings: list[dict[str, Any]]
    batch_size: int
    budget: Budget
    data: str
    eval_every: int | None = None
    weight_decay: float | None = None
    tuning_seed: int = DEFAULT_TUNING_SEED
    final_seeds: Sequence[int] = field(default_factory=lambda: list(DEFAULT_FINAL_SEEDS))

    def spec(self, hps: Mapping[str, Any], seed: int) -> RunSpec:
        return RunSpec(
            problem=self.problem.name,
            optimizer=self.entry.name,
            hyperparameters=dict(hps),
            seed=seed,
            batch_size=self.batch_size,
            budget=self.budget,
            eval_every=self.eval_every,
            data=self.data,
            weight_decay=self.weight_decay,
        )

    def search_specs(self) -> list[RunSpec]:
        return [self.spec(hps, self.tuning_seed) for hps in self.settings]

    def select(self, outcomes: Sequence[RunOutcome]) -> tuple[dict[str, Any], float]:
        """The best setting on the validation metric (ties: the first in search order).

        Under a ``stop_at_target`` budget the runs end at the target, so their final values
        say little: the setting that reached the (validation) target in the fewest updates
        wins, and the final validation metric only ranks those that missed it.
        """
        best, best_key, best_score = None, None, -math.inf
        for hps, out in zip(self.settings, outcomes):
            result = out.load()
            score = validation_score(self.problem, result)
            key: tuple[float, ...] = (score,)
            if self.budget.stop_at_target:
                reached = (result or {}).get("target") or {}
                reached = reached.get("reached") if math.isfinite(score) else None
                key = (1.0, -reached["step"], score) if reached else (0.0, 0.0, score)
            if best_key is None or key > best_key:
                best, best_key, best_score = hps, key, score
        assert best is not None
        return best, best_score

    def score_label(self, score: float) -> str:
        """A ``select`` score as the metric it is: "valid accuracy 0.91", "valid loss 0.25"."""
        if self.problem.correct is not None:
            return f"valid accuracy {score:.4g}"
        return f"valid loss {-score:.4g}"

    def final_specs(self, best: Mapping[str, Any]) -> list[RunSpec]:
        return [self.spec(best, seed) for seed in self.final_seeds]


def run_tunings(
    plans: Sequence[TunePlan],
    store: ResultStore,
    executor: Executor,
    echo: Callable[[str], None] = lambda text: None,
    fixed: Sequence[RunSpec] = (),
) -> list[RunOutcome]:
    """Every tuning's runs through one queue, so that a pool of workers stays busy: every
    search (and the ``fixed`` runs: they are independent) from the start, and each tuning's
    selected setting with its final seeds as soon as that tuning's last search run has ended
    (not when the slowest search has). Outcomes: the searches in order, the fixed runs, then
    the final runs as they were added."""
    for plan in plans:
        echo(f"tuning {plan.entry.name} on {plan.problem.name}: {len(plan.settings)} settings")
    searches = [plan.search_specs() for plan in plans]
    flat = [spec for specs in searches for spec in specs]
    owner = [k for k, specs in enumerate(searches) for _ in specs]  # search index -> plan
    starts = list(itertools.accumulate((len(specs) for specs in searches), initial=0))
    ended: list[dict[int, RunOutcome]] = [{} for _ in searches]

    def follow_up(i: int, outcome: RunOutcome) -> list[RunSpec]:
        if i >= len(flat):
            return []  # a fixed run or a final one
        k = owner[i]
        ended[k][i] = outcome
        if len(ended[k]) < len(searches[k]):
            return []
        plan = plans[k]
        in_order = [ended[k][j] for j in range(starts[k], starts[k + 1])]
        best, score = plan.select(in_order)
        echo(
            f"selected on validation for {plan.entry.name} on {plan.problem.name} "
            f"({plan.score_label(score)}): {best}"
        )
        return plan.final_specs(best)

    # the final runs' stand-ins: their kind is known now, their setting after the search
    expected = [plan.spec(plan.settings[0], seed) for plan in plans for seed in plan.final_seeds]
    return executor.run(flat + list(fixed), store, follow_up, expected)
