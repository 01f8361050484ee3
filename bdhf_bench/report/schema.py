"""The result-file contract (docs/results.md) as the report reads it: one document -> one record.
The names come from ``results_schema``, which the runner writes with.

Everything a file may get wrong is turned into :class:`Foreign` with a one-line reason, so the
loader can list the file as skipped instead of failing. Keys the report relies on are required;
keys it only displays are optional. A file without ``schema_version`` but with DeepOBS's own keys
(what DeepOBS's StandardRunner writes) is read in a reduced form: its curves, no timing, no
pass counts and no target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..results_schema import (
    ACCURACY_KEYS,
    COUNTER_KEYS,
    DEEPOBS_ACCURACY_LISTS,
    DEEPOBS_KEYS,
    EVAL_KEYS,
    KIND_DEEPOBS,
    KIND_OURS,
    LOSS_KEYS,
    METRICS,
    REACHED_KEYS,
    RUN_KEYS,
    SCHEMA_VERSIONS,
    STATUSES,
)
from ..results_schema import TARGET_SPLITS as SPLITS

NUMBER_TYPES = (int, float, type(None))
NUMBER_TYPES_SET = frozenset(NUMBER_TYPES)
"""Exact JSON value types of a nullable number (``bool`` is not one)."""


class Foreign(ValueError):
    """A file the report cannot use; ``str(err)`` is the one-line reason."""


@dataclass
class RunRecord:
    """One run, normalised: what the loader turns into frame rows."""

    kind: str
    problem: str
    optimizer: str
    hyperparameters: dict[str, Any]
    batch_size: int
    num_epochs: float
    weight_decay: float | None
    seed: int
    status: str
    steps: float
    train_seconds: float
    evaluations: list[dict[str, float]]
    target: dict[str, Any] | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    data_source: str = "unknown"
    data_scaled: bool | None = None
    device_name: str = ""
    version: str = ""
    threads: int | None = None
    """torch's intra-op thread count (``environment.threads``); None where not recorded."""
    cpu: str = ""
    """The CPU model (``environment.cpu``); empty where not recorded."""
    runs_at_once: int | None = None
    """Runs that shared the machine by design (``environment.runs_at_once``); None: unknown."""
    minibatch_losses: list[float] = field(default_factory=list)
    """``minibatch_train_losses``: entry i is the loss of the mini-batch after i updates."""


def _number(value: Any, where: str, *, nullable: bool = False) -> float:
    """A JSON number as float (null -> NaN where allowed); booleans are not numbers."""
    if value is None and nullable:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Foreign(f"{where} is not a number ({value!r:.40})")
    return float(value)


def _integer(value: Any, where: str) -> int:
    number = _number(value, where)
    if not number.is_integer():
        raise Foreign(f"{where} is not an integer ({value!r:.40})")
    return int(number)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Foreign(f"{where} is not a JSON object")
    return value


def _require(doc: dict[str, Any], keys: tuple[str, ...], where: str = "") -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        names = ", ".join(f"{where}{k}" for k in missing)
        raise Foreign(f"missing key{'s' if len(missing) > 1 else ''} {names}")


def _hyperparameters(value: Any) -> dict[str, Any]:
    return dict(_mapping(value, "optimizer_hyperparams"))


_EVAL_NUMBERS = ("epoch", "step", "train_seconds", *COUNTER_KEYS)
_EVAL_NULLABLE = (*LOSS_KEYS, *ACCURACY_KEYS, "minibatch_loss")


def _evaluation(record: Any, index: int) -> dict[str, float]:
    """One evaluation record's numbers; a JSON int or float passes straight through (a result
    file has tens of thousands of them), anything else goes to ``_number`` for its verdict."""
    where = f"evaluations[{index}]"
    record = _mapping(record, where)
    _require(record, EVAL_KEYS, f"{where}.")
    row = {}
    for key in _EVAL_NUMBERS:
        value = record[key]
        kind = type(value)
        row[key] = (
            float(value) if kind is float or kind is int else _number(value, f"{where}.{key}")
        )
    for key in _EVAL_NULLABLE:
        value = record.get(key)
        kind = type(value)
        row[key] = (
            float(value)
            if kind is float or kind is int
            else _number(value, f"{where}.{key}", nullable=True)
        )
    return row


def _minibatch_losses(doc: dict[str, Any]) -> list[float]:
    """The per-step training losses (optional; null entries read as NaN)."""
    values = doc.get("minibatch_train_losses")
    if values is None:
        return []
    if not isinstance(values, list):
        raise Foreign("minibatch_train_losses is not a list")
    if not set(map(type, values)) <= NUMBER_TYPES_SET:  # one C-speed pass when all is well
        bad = next(i for i, v in enumerate(values) if type(v) not in NUMBER_TYPES)
        raise Foreign(f"minibatch_train_losses[{bad}] is not a number ({values[bad]!r:.40})")
    return [math.nan if v is None else float(v) for v in values]


def _threads(env: dict[str, Any], key: str = "threads") -> int | None:
    value = env.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def _target(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    target = _mapping(value, "target")
    _require(target, ("metric", "split", "value"), "target.")
    if target["metric"] not in METRICS:
        raise Foreign(f"target.metric {target['metric']!r} is not one of {METRICS}")
    if target["split"] not in SPLITS:
        raise Foreign(f"target.split {target['split']!r} is not one of {SPLITS}")
    out = {
        "metric": target["metric"],
        "split": target["split"],
        "value": _number(target["value"], "target.value"),
        "source": str(target.get("source") or ""),
        "reached": None,
    }
    reached = target.get("reached")
    if reached is not None:
        reached = _mapping(reached, "target.reached")
        _require(reached, REACHED_KEYS, "target.reached.")
        out["reached"] = {k: _number(reached[k], f"target.reached.{k}") for k in REACHED_KEYS}
    return out


def _common(doc: dict[str, Any]) -> dict[str, Any]:
    """The DeepOBS keys both kinds share, checked."""
    problem, optimizer = doc["testproblem"], doc["optimizer_name"]
    if not isinstance(problem, str) or not problem:
        raise Foreign("testproblem is not a name")
    if not isinstance(optimizer, str) or not optimizer:
        raise Foreign("optimizer_name is not a name")
    weight_decay = doc.get("weight_decay")
    out = {
        "problem": problem,
        "optimizer": optimizer,
        "hyperparameters": _hyperparameters(doc["optimizer_hyperparams"]),
        "batch_size": _integer(doc["batch_size"], "batch_size"),
        "num_epochs": _integer(doc["num_epochs"], "num_epochs"),
        "weight_decay": None if weight_decay is None else _number(weight_decay, "weight_decay"),
        "seed": _integer(doc["random_seed"], "random_seed"),
    }
    for key, low in (("batch_size", 1), ("num_epochs", 0), ("seed", 0), ("weight_decay", 0)):
        if out[key] is not None and not out[key] >= low:
            raise Foreign(f"{'random_seed' if key == 'seed' else key} {out[key]} is below {low}")
    return out


def _deepobs_lists(doc: dict[str, Any], n: int) -> None:
    """A schema-1 file's DeepOBS lists, which DeepOBS's analyzer reads: present, one number (or
    null) per evaluation."""
    _require(doc, ("train_losses", "valid_losses", "test_losses", "training_params"))
    for key in ("train_losses", "valid_losses", "test_losses", *DEEPOBS_ACCURACY_LISTS):
        values = doc.get(key)
        if values is None and key in DEEPOBS_ACCURACY_LISTS:
            continue
        if not isinstance(values, list) or len(values) != n:
            raise Foreign(f"{key} is not a list of {n} values (one per evaluation)")
        for i, value in enumerate(values):
            _number(value, f"{key}[{i}]", nullable=True)


def parse_ours(doc: dict[str, Any], *, under_diverged: bool = False) -> RunRecord:
    """A schema-1 document -> record; a file under ``_diverged/`` is diverged whatever it says."""
    version = doc["schema_version"]
    if isinstance(version, bool) or version not in SCHEMA_VERSIONS:
        raise Foreign(f"schema_version {version!r} is not one this report knows {SCHEMA_VERSIONS}")
    _require(doc, RUN_KEYS)
    status = doc["status"]
    if status not in STATUSES:
        raise Foreign(f"status {status!r} is not one of {STATUSES}")
    evaluations = doc["evaluations"]
    if not isinstance(evaluations, list):
        raise Foreign("evaluations is not a list")
    if not evaluations:
        raise Foreign("evaluations is empty")
    _deepobs_lists(doc, len(evaluations))
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    env = doc.get("environment") if isinstance(doc.get("environment"), dict) else {}
    budget = doc.get("budget") if isinstance(doc.get("budget"), dict) else {}
    scaled = data.get("scaled")
    return RunRecord(
        kind=KIND_OURS,
        status="diverged" if under_diverged else status,
        steps=_number(doc["steps"], "steps"),
        train_seconds=_number(doc["train_seconds"], "train_seconds"),
        evaluations=[_evaluation(r, i) for i, r in enumerate(evaluations)],
        target=_target(doc.get("target")),
        budget=dict(budget),
        data_source=str(data.get("source") or "unknown"),
        data_scaled=scaled if isinstance(scaled, bool) else None,
        device_name=str(env.get("device_name") or env.get("device") or ""),
        version=str(env.get("bdhf_bench") or ""),
        threads=_threads(env),
        runs_at_once=_threads(env, "runs_at_once"),
        cpu=str(env.get("cpu") or ""),
        minibatch_losses=_minibatch_losses(doc),
        **_common(doc),
    )


def parse_deepobs(doc: dict[str, Any], *, under_diverged: bool = False) -> RunRecord:
    """A DeepOBS-only document (no ``schema_version``) -> reduced record: epochs and metrics."""
    _require(doc, DEEPOBS_KEYS)
    lists = {k: doc[k] for k in ("train_losses", "valid_losses", "test_losses")}
    lists.update({k: doc[k] for k in DEEPOBS_ACCURACY_LISTS if doc.get(k) is not None})
    lengths = set()
    for key, values in lists.items():
        if not isinstance(values, list):
            raise Foreign(f"{key} is not a list")
        lengths.add(len(values))
    if len(lengths) != 1 or 0 in lengths:
        raise Foreign("DeepOBS metric lists are empty or of different lengths")
    n = lengths.pop()
    evaluations = []
    for i in range(n):
        row = dict.fromkeys(("step", "train_seconds", *COUNTER_KEYS, "minibatch_loss"), math.nan)
        row["epoch"] = float(i)  # DeepOBS's runner evaluates once per epoch, the first at 0
        for short, key in zip(
            ("train", "valid", "test"), ("train_losses", "valid_losses", "test_losses")
        ):
            row[f"{short}_loss"] = _number(lists[key][i], f"{key}[{i}]", nullable=True)
        for short in ("train", "valid", "test"):
            values = lists.get(f"{short}_accuracies")
            value = None if values is None else values[i]
            row[f"{short}_accuracy"] = _number(value, f"{short}_accuracies[{i}]", nullable=True)
        evaluations.append(row)
    return RunRecord(
        kind=KIND_DEEPOBS,
        status="diverged" if under_diverged else "finished",
        steps=math.nan,
        train_seconds=math.nan,
        evaluations=evaluations,
        **_common(doc),
    )


def parse_document(doc: Any, *, under_diverged: bool = False) -> RunRecord:
    """Any parsed JSON value -> record, or :class:`Foreign` saying why not."""
    if not isinstance(doc, dict):
        raise Foreign("not a JSON object")
    if "schema_version" in doc:
        return parse_ours(doc, under_diverged=under_diverged)
    if all(k in doc for k in DEEPOBS_KEYS):
        return parse_deepobs(doc, under_diverged=under_diverged)
    if "testproblem" in doc:
        missing = ", ".join(k for k in DEEPOBS_KEYS if k not in doc)
        raise Foreign(f"no schema_version and not a complete DeepOBS file (missing {missing})")
    raise Foreign("not a result file (no schema_version, no DeepOBS keys)")
