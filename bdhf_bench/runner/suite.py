"""Suites: named sets of experiments, as TOML data files in ``runners/``.

A suite file::

    description = "what it is for"
    results = "results/ci"            # results folder (relative to the working directory)
    report = "reports"                # where the leaderboard goes
    device = "cuda"                   # optional: the device the suite is meant for (the
                                      # leaderboard refuses to start without it; --device
                                      # overrides)

    [defaults]                        # any experiment key; experiments override it
    data = "synthetic"
    seeds = [42, 43, 44]

    [[experiment]]
    problem = "mnist_mlp"
    optimizers = ["adam", "bdhf", "hf"]
    steps = 30                        # a budget: epochs, steps and/or time_budget
    eval_every = 10
    batch_size = 128
    hyperparameters = { adam = { lr = 1e-3 } }   # per optimizer, fixed
    tune = { adam = "grids/adam_lr.toml" }       # per optimizer: search this grid on
                                                 # tuning_seed, rerun the best with `seeds`
    sweep = { curvature_fraction = [0.125, 1.0] }  # fixed runs at every combination (for the
                                                   # optimizers not tuned here)

Every key is checked when the suite is loaded, so a mistake fails before any run starts.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..optim import get_optimizer
from ..plugins import unknown_name_message
from ..problems import get_problem
from .executors import Executor
from .run import RunOutcome
from .spec import DATA_SOURCES, Budget, RunSpec
from .store import ResultStore
from .tune import TunePlan, grid_settings, load_grid_file

SUITE_DIRS = (Path("runners"), Path(__file__).resolve().parents[2] / "runners")
EXPERIMENT_KEYS = {
    "problem",
    "optimizers",
    "seeds",
    "data",
    "epochs",
    "steps",
    "time_budget",
    "eval_every",
    "batch_size",
    "weight_decay",
    "hyperparameters",
    "tune",
    "tuning_seed",
    "sweep",
}


class SuiteError(ValueError):
    """A suite that cannot be used (one line)."""


def find_suite(name: str) -> Path:
    """A suite by name (``runners/<name>.toml`` here or beside the package) or by path."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    for folder in SUITE_DIRS:
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    known = {p.stem for d in SUITE_DIRS if d.is_dir() for p in d.glob("*.toml")}
    raise SuiteError(unknown_name_message("suite", name, known))


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    results: Path
    report: Path
    device: str | None = None
    """The device the suite is meant for ("cpu" or "cuda"), None: whatever is there."""
    runs: list[RunSpec] = field(default_factory=list)
    """Runs with fixed hyperparameters."""
    tunings: list[TunePlan] = field(default_factory=list)

    def size(self) -> int:
        return len(self.runs) + sum(len(t.settings) + len(t.final_seeds) for t in self.tunings)


def load_suite(name: str) -> Suite:
    path = find_suite(name)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"suite {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"description", "results", "report", "device", "defaults", "experiment"}
    if unknown:
        raise SuiteError(f"suite {path}: unknown key(s) {sorted(unknown)}")
    experiments = data.get("experiment")
    if not isinstance(experiments, list) or not experiments:
        raise SuiteError(f"suite {path} needs at least one [[experiment]]")
    suite = Suite(
        name=path.stem,
        path=path,
        description=str(data.get("description", "")),
        results=Path(data.get("results", f"results/{path.stem}")),
        report=Path(data.get("report", f"reports/{path.stem}")),
        device=data.get("device"),
    )
    if suite.device not in (None, "cpu", "cuda"):
        raise SuiteError(f'suite {path}: device must be "cpu" or "cuda", got {suite.device!r}')
    defaults = data.get("defaults", {})
    for i, raw in enumerate(experiments, 1):
        try:
            _add_experiment(suite, {**defaults, **raw})
        except (ValueError, KeyError, TypeError) as exc:
            raise SuiteError(f"suite {path}, experiment {i}: {exc}") from None
    return suite


def _add_experiment(suite: Suite, exp: Mapping[str, Any]) -> None:
    unknown = set(exp) - EXPERIMENT_KEYS
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; valid: {sorted(EXPERIMENT_KEYS)}")
    problem = get_problem(exp["problem"])
    data = exp.get("data", "real")
    if data not in DATA_SOURCES:
        raise ValueError(f"data must be one of {DATA_SOURCES}, got {data!r}")
    budget_keys = ("epochs", "steps", "time_budget")
    if not any(k in exp for k in budget_keys):
        budget = Budget(epochs=problem.num_epochs)
    else:
        budget = Budget(exp.get("epochs"), exp.get("steps"), exp.get("time_budget"))
    seeds = [int(s) for s in exp.get("seeds", [42])]
    common = {
        "batch_size": int(exp.get("batch_size", problem.batch_size)),
        "budget": budget,
        "eval_every": exp.get("eval_every"),
        "data": data,
        "weight_decay": exp.get("weight_decay"),
    }
    fixed_hps = exp.get("hyperparameters", {})
    tune = exp.get("tune", {})
    sweep = exp.get("sweep", {})
    if not all(isinstance(v, list) and v for v in sweep.values()):
        raise ValueError("sweep values must be non-empty lists")
    points = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())] or [{}]
    for opt in exp["optimizers"]:
        entry = get_optimizer(opt)
        if opt in tune:
            grid_path = suite.path.parent / tune[opt]
            grid, fixed = load_grid_file(grid_path, entry)
            settings = grid_settings(entry, grid, {**fixed, **fixed_hps.get(opt, {})})
            suite.tunings.append(
                TunePlan(
                    problem=problem,
                    entry=entry,
                    settings=settings,
                    tuning_seed=int(exp.get("tuning_seed", seeds[0])),
                    final_seeds=seeds,
                    **common,
                )
            )
        else:
            for point in points:
                hps = entry.resolve({**fixed_hps.get(opt, {}), **point})
                suite.runs += [
                    RunSpec(problem.name, entry.name, hps, seed, **common) for seed in seeds
                ]
    unknown_opts = (set(fixed_hps) | set(tune)) - set(exp["optimizers"])
    if unknown_opts:
        raise ValueError(f"hyperparameters or tune for optimizers not listed: {unknown_opts}")


def run_suite(
    suite: Suite,
    store: ResultStore,
    executor: Executor,
    echo: Callable[[str], None] = lambda text: None,
) -> list[RunOutcome]:
    """Every run of the suite (finished ones are skipped): tunings first (search, then the
    winner's seeds), then the fixed runs."""
    outcomes: list[RunOutcome] = []
    for plan in suite.tunings:
        echo(f"tuning {plan.entry.name} on {plan.problem.name}: {len(plan.settings)} settings")
        search = executor.run(plan.search_specs(), store)
        best, _ = plan.select(search)
        echo(f"selected on validation: {best}")
        outcomes += search + executor.run(plan.final_specs(best), store)
    if suite.runs:
        outcomes += executor.run(suite.runs, store)
    return outcomes
