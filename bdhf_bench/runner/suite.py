"""Suites: named sets of experiments, as TOML data files in ``runners/``.

A suite file::

    description = "what it is for"
    results = "results/ci"            # results folder (relative to the working directory)
    report = "reports"                # where the leaderboard goes
    device = "cuda"                   # optional: the device the suite is meant for (the
                                      # leaderboard refuses to start without it; --device
                                      # overrides)
    workers = 2                       # optional: runs at once it is sized for (one thread
                                      # each, capped at the cores here; --workers overrides)
    levels = ["mnist_mlp:valid_accuracy>=0.9"]  # optional: milestones the report also times
    tuned = "results/ci"              # optional: this suite is AlgoPerf's self-tuning track and
                                      # its report compares it with the tuned runs there

    [defaults]                        # any experiment key; experiments override it
    data = "synthetic"
    seeds = [42, 43, 44]

    [[experiment]]
    problem = "mnist_mlp"
    optimizers = ["adam", "bdhf", "hf"]
    steps = 30                        # a budget: epochs, steps and/or time_budget
    eval_every = 10
    stop_at_target = true             # optional early stops (see Budget): at the problem's
    patience = 100                    # target, or after 100 steps without a 1% improvement
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

from ..levels import Level, LevelError, parse_level
from ..optim import get_optimizer
from ..plugins import unknown_name_message
from ..problems import get_problem
from .executors import Executor
from .run import RunOutcome
from .spec import DATA_SOURCES, Budget, RunSpec
from .store import ResultStore
from .tune import TunePlan, grid_settings, load_grid_file, run_tunings

SUITE_DIRS = (Path("runners"), Path(__file__).resolve().parents[2] / "runners")
EXPERIMENT_KEYS = {
    "problem": "a string",
    "optimizers": "a non-empty list of strings",
    "seeds": "a non-empty list of integers",
    "data": "a string",
    "epochs": "an integer",
    "steps": "an integer",
    "time_budget": "a number",
    "eval_every": "an integer",
    "patience": "an integer",
    "stop_at_target": "a boolean",
    "batch_size": "an integer",
    "weight_decay": "a number",
    "hyperparameters": "a table of optimizer tables",
    "tune": "a table of optimizer = grid file",
    "tuning_seed": "an integer",
    "sweep": "a table of non-empty lists",
}
"""Every key an experiment (or ``[defaults]``) may have, and what its value must be."""
SUITE_KEYS = {
    "description",
    "results",
    "report",
    "device",
    "workers",
    "levels",
    "tuned",
    "defaults",
    "experiment",
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
    workers: int = 1
    """Runs at once the suite is sized for (the leaderboard's default for ``--workers``)."""
    levels: list[Level] = field(default_factory=list)
    """Milestone levels its report times besides each problem's target."""
    tuned: Path | None = None
    """The tuned track's results folder when this suite is the self-tuning track."""
    runs: list[RunSpec] = field(default_factory=list)
    """Runs with fixed hyperparameters."""
    tunings: list[TunePlan] = field(default_factory=list)

    def size(self) -> int:
        """Every run the suite makes: fixed runs, searches and final seeds."""
        return len(self.runs) + sum(len(t.settings) + len(t.final_seeds) for t in self.tunings)

    def known_specs(self) -> list[RunSpec]:
        """The runs known before any has ended: every fixed run, then every tuning's search
        (a final run's setting is chosen by its search)."""
        return [*self.runs, *(spec for plan in self.tunings for spec in plan.search_specs())]


def load_suite(name: str) -> Suite:
    path = find_suite(name)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"suite {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read suite {path}: {exc}") from None
    unknown = set(data) - SUITE_KEYS
    if unknown:
        raise SuiteError(
            f"suite {path}: unknown key(s) {sorted(unknown)}; valid: {sorted(SUITE_KEYS)}"
        )
    experiments = data.get("experiment")
    if not isinstance(experiments, list) or not experiments:
        raise SuiteError(f"suite {path} needs at least one [[experiment]]")
    for key in ("description", "results", "report"):
        if not isinstance(data.get(key, ""), str):
            raise SuiteError(f"suite {path}: {key} must be a string, got {data[key]!r}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SuiteError(f"suite {path}: [defaults] must be a table, got {defaults!r}")
    suite = Suite(
        name=path.stem,
        path=path,
        description=data.get("description", ""),
        results=Path(data.get("results") or f"results/{path.stem}"),
        report=Path(data.get("report") or f"reports/{path.stem}"),
        device=data.get("device"),
    )
    if suite.device not in (None, "cpu", "cuda"):
        raise SuiteError(f'suite {path}: device must be "cpu" or "cuda", got {suite.device!r}')
    workers = data.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SuiteError(f"suite {path}: workers must be a positive integer, got {workers!r}")
    suite.workers = workers
    texts = data.get("levels", [])
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SuiteError(f"suite {path}: levels must be a list of strings, got {texts!r}")
    try:
        suite.levels = [parse_level(text) for text in texts]
    except LevelError as exc:
        raise SuiteError(f"suite {path}: {exc}") from None
    tuned = data.get("tuned")
    if tuned is not None and not isinstance(tuned, str):
        raise SuiteError(f"suite {path}: tuned must be a results folder, got {tuned!r}")
    suite.tuned = None if tuned is None else Path(tuned)
    for i, raw in enumerate(experiments, 1):
        try:
            _add_experiment(suite, {**defaults, **raw})
        except (ValueError, KeyError, TypeError) as exc:
            raise SuiteError(f"suite {path}, experiment {i}: {exc}") from None
    return suite


def _check_types(exp: Mapping[str, Any]) -> None:
    """Each key's TOML type, so that a wrong one is named rather than coerced or crashed on."""
    unknown = set(exp) - set(EXPERIMENT_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; valid: {sorted(EXPERIMENT_KEYS)}")
    for key in ("problem", "optimizers"):
        if key not in exp:
            raise ValueError(f"missing key {key!r}")
    for key, value in exp.items():
        expected = EXPERIMENT_KEYS[key]
        if not _is(value, expected):
            raise ValueError(f"{key} must be {expected}, got {value!r}")
    for key in ("optimizers", "seeds"):
        values = exp.get(key, [])
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{key} lists {repeated[0]} twice")


def _is(value: Any, expected: str) -> bool:
    """Whether a TOML value is of the kind ``EXPERIMENT_KEYS`` describes."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    integer = isinstance(value, int) and not isinstance(value, bool)
    if expected == "a string":
        return isinstance(value, str)
    if expected == "an integer":
        return integer
    if expected == "a boolean":
        return isinstance(value, bool)
    if expected == "a number":
        return number
    if expected == "a non-empty list of strings":
        return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
    if expected == "a non-empty list of integers":
        return (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
    if expected == "a table of optimizer tables":
        return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())
    if expected == "a table of optimizer = grid file":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if expected == "a table of non-empty lists":
        return isinstance(value, dict) and all(isinstance(v, list) and v for v in value.values())
    raise AssertionError(expected)


def _add_experiment(suite: Suite, exp: Mapping[str, Any]) -> None:
    _check_types(exp)
    problem = get_problem(exp["problem"])
    data = exp.get("data", "real")
    if data not in DATA_SOURCES:
        raise ValueError(f"data must be one of {DATA_SOURCES}, got {data!r}")
    budget_keys = ("epochs", "steps", "time_budget")
    stops = {"patience": exp.get("patience"), "stop_at_target": exp.get("stop_at_target", False)}
    if not any(k in exp for k in budget_keys):
        budget = Budget(epochs=problem.num_epochs, **stops)
    else:
        budget = Budget(exp.get("epochs"), exp.get("steps"), exp.get("time_budget"), **stops)
    early = stops["patience"] is not None or stops["stop_at_target"]
    if early and problem.target is None:
        raise ValueError(f"patience and stop_at_target need a target; {problem.name} has none")
    seeds = list(exp.get("seeds", [42]))
    common = {
        "batch_size": exp.get("batch_size", problem.batch_size),
        "budget": budget,
        "eval_every": exp.get("eval_every"),
        "data": data,
        "weight_decay": exp.get("weight_decay"),
    }
    fixed_hps = exp.get("hyperparameters", {})
    tune = exp.get("tune", {})
    sweep = exp.get("sweep", {})
    points = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())] or [{}]
    for opt in exp["optimizers"]:
        entry = get_optimizer(opt)
        if opt in tune:
            grid_path = suite.path.parent / tune[opt]
            grid, fixed, grid_points = load_grid_file(grid_path, entry)
            settings = grid_settings(entry, grid, {**fixed, **fixed_hps.get(opt, {})}, grid_points)
            plan = TunePlan(
                problem=problem,
                entry=entry,
                settings=settings,
                tuning_seed=exp.get("tuning_seed", seeds[0]),
                final_seeds=seeds,
                **common,
            )
            for seed in (plan.tuning_seed, *seeds):
                plan.spec(settings[0], seed)  # every seed checked now, not when it runs
            suite.tunings.append(plan)
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
    """Every run of the suite (finished ones are skipped): ``run_tunings`` of its tunings,
    with its fixed runs in the same queue."""
    return run_tunings(suite.tunings, store, executor, echo, fixed=suite.runs)
