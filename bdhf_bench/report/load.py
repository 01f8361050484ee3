"""Walk results folders into two tidy frames: one row per evaluation and one row per run.

Files the report cannot use are collected with a reason (never raised); ``_runs/`` is the runner's
bookkeeping and is not read; anything under ``_diverged/`` is a diverged run.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .schema import (
    ACCURACY_KEYS,
    COUNTER_KEYS,
    KIND_DEEPOBS,
    LOSS_KEYS,
    Foreign,
    RunRecord,
    parse_document,
)

BOOKKEEPING_DIR = "_runs"
DIVERGED_DIR = "_diverged"
HP_PREFIX = "hp_"

ID_COLUMNS = [
    "run_id",
    "path",
    "results_dir",
    "kind",
    "problem",
    "optimizer",
    "setting",
    "hyperparameters",
    "batch_size",
    "num_epochs",
    "weight_decay",
    "seed",
    "status",
    "budget",
]
"""Columns shared by the frames (``hp_<name>`` columns follow them)."""

EVAL_COLUMNS = [
    "epoch",
    "step",
    "train_seconds",
    *COUNTER_KEYS,
    *LOSS_KEYS,
    *ACCURACY_KEYS,
    "minibatch_loss",
]

STEP_COLUMNS = ["step", "minibatch_loss", "train_seconds", "gradient_equivalents"]
"""The per-update frame: every logged mini-batch loss, placed on the three time axes."""


@dataclass(frozen=True)
class SkippedFile:
    """A file under a results folder that was not used, and why (one line)."""

    path: str
    reason: str


@dataclass
class LoadedResults:
    """What :func:`load_results` found: the frames plus every file it did not use.

    The per-update losses are not held: a 30,000-run folder has tens of millions of them, and
    the page draws only the selected settings' runs. ``steps_for`` reads those runs' files
    again; ``steps`` reads every run's."""

    runs: pd.DataFrame
    evaluations: pd.DataFrame
    skipped: list[SkippedFile] = field(default_factory=list)
    reduced: list[SkippedFile] = field(default_factory=list)
    """DeepOBS-only files, loaded without timing, pass counts or target."""
    sources: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """run_id -> (its file, whether it lies under ``_diverged/``), to read its steps again."""

    def steps_for(self, run_ids: Iterable[str]) -> pd.DataFrame:
        """One row per logged update (``minibatch_train_losses``) of the runs ``run_ids``, in
        load order; see :func:`step_rows`."""
        wanted = set(run_ids)
        found = []
        for run_id, (path, under_diverged) in self.sources.items():
            if run_id in wanted:
                try:
                    record = _read(Path(path), under_diverged)
                except Foreign:  # changed or gone since it was loaded: no curve, no crash
                    continue
                found.append((record, _ids(run_id, record)))
        return _step_frame(found)

    @property
    def steps(self) -> pd.DataFrame:
        """Every run's per-update rows (reads every file again: for small folders and tests)."""
        return self.steps_for(self.sources)


def format_value(value: Any) -> str:
    """A hyperparameter value as a short, stable string (integral floats lose their '.0';
    lists and objects are written as sorted JSON)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def setting_key(record: RunRecord) -> str:
    """The stable string naming a run's setting: hyperparameters, then batch size and budget.

    Under a step or time budget the epochs a run happened to cover are an outcome, not part of
    its setting (seeds of a 60-second budget cover different numbers of epochs)."""
    hps = ", ".join(f"{k}={format_value(v)}" for k, v in sorted(record.hyperparameters.items()))
    run = [f"batch_size={record.batch_size}"]
    if record.budget.get("steps") is None and record.budget.get("time_budget") is None:
        run.append(f"num_epochs={format_value(record.num_epochs)}")
    if record.budget.get("stop_at_target"):
        run.append("stop_at_target")
    if record.weight_decay is not None:
        run.append(f"weight_decay={format_value(record.weight_decay)}")
    for key in ("steps", "time_budget", "eval_every", "patience"):
        if record.budget.get(key) is not None:
            run.append(f"{key}={format_value(record.budget[key])}")
    return " | ".join(part for part in (hps, ", ".join(run)) if part)


def budget_label(record: RunRecord) -> str:
    """What a run was allowed: "40 steps", "3 epochs", "60 s" (plus ", eval every N" when set).

    Runs compare only within one budget (docs/report.md). Files without a budget (DeepOBS's,
    older ones) get their number of epochs."""
    budget = record.budget
    parts = []
    for key, unit in (("epochs", "epochs"), ("steps", "steps"), ("time_budget", "s")):
        value = budget.get(key)
        if value is not None:
            parts.append(f"{format_value(value)} {unit}")
    if not parts:
        parts.append(f"{format_value(record.num_epochs)} epochs")
    if budget.get("eval_every") is not None:
        parts.append(f"eval every {format_value(budget['eval_every'])}")
    if budget.get("stop_at_target"):
        parts.append("stop at target")
    if budget.get("patience") is not None:
        parts.append(f"patience {format_value(budget['patience'])}")
    return ", ".join(parts)


def iter_result_files(root: Path, skipped: list[SkippedFile] | None = None) -> Iterator[Path]:
    """Every file below ``root`` in a stable order, ``_runs/`` folders left out; folders that
    cannot be listed go to ``skipped`` when given."""

    def unreadable(err: OSError) -> None:
        if skipped is not None:
            skipped.append(SkippedFile(str(err.filename), f"unreadable folder: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if d != BOOKKEEPING_DIR)
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _read(path: Path, under_diverged: bool) -> RunRecord:
    if path.suffix != ".json":
        raise Foreign("not a .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise Foreign(f"unreadable: {err}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise Foreign(f"not valid JSON ({err.msg}, line {err.lineno})") from None
    return parse_document(doc, under_diverged=under_diverged)


def _curvature_batch(record: RunRecord) -> float:
    """ceil(fraction * batch), at least 1: the sub-batch the HF closure uses."""
    fraction = record.hyperparameters.get("curvature_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        return math.nan
    return float(max(1, math.ceil(fraction * record.batch_size)))


def _best(values: list[float], kind: str) -> float:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan
    return max(finite) if kind == "accuracy" else min(finite)


def _to_target(record: RunRecord) -> dict[str, Any]:
    """Steps/epochs/seconds/gradient-equivalents to target: inf when missed, NaN without target."""
    names = ("step", "epoch", "train_seconds", "gradient_equivalents")
    columns = ("steps", "epochs", "seconds", "gradient_equivalents")
    target = record.target
    out: dict[str, Any] = {
        "target_metric": None,
        "target_split": None,
        "target_value": math.nan,
        "target_source": None,
        "reached": pd.NA,
    }
    if target is None:
        out.update({f"{c}_to_target": math.nan for c in columns})
        return out
    reached = target["reached"]
    out.update(
        target_metric=target["metric"],
        target_split=target["split"],
        target_value=target["value"],
        target_source=target["source"],
        reached=reached is not None,
    )
    for name, column in zip(names, columns):
        out[f"{column}_to_target"] = math.inf if reached is None else reached[name]
    return out


def _best_on_target(record: RunRecord) -> float:
    """The best value the run reached of its target's metric on its target's split (NaN
    without a target): what a miss is reported with ("not reached: best X")."""
    target = record.target
    if target is None:
        return math.nan
    split = "train" if target["split"] in ("train", "train_eval") else target["split"]
    key = f"{split}_{target['metric']}"
    return _best([e[key] for e in record.evaluations], target["metric"])


def run_row(record: RunRecord, base: dict[str, Any]) -> dict[str, Any]:
    """The one-row-per-run summary of a record (final and best metrics, target, speed)."""
    evals = record.evaluations
    last = evals[-1]
    kind = "accuracy" if any(not math.isnan(e["test_accuracy"]) for e in evals) else "loss"
    row = dict(base)
    row["metric_kind"] = kind
    row["n_evaluations"] = len(evals)
    row["steps"] = record.steps
    row["train_seconds"] = record.train_seconds
    row["final_epoch"] = last["epoch"]
    row["final_step"] = last["step"]
    for key in (*LOSS_KEYS, *ACCURACY_KEYS):
        row[f"final_{key}"] = last[key]
    for split in ("valid", "test"):
        row[f"best_{split}_loss"] = _best([e[f"{split}_loss"] for e in evals], "loss")
        row[f"best_{split}_accuracy"] = _best([e[f"{split}_accuracy"] for e in evals], "accuracy")
    row["final_metric"] = row[f"final_test_{kind}"]
    row["final_valid_metric"] = row[f"final_valid_{kind}"]
    row["best_valid_metric"] = row[f"best_valid_{kind}"]
    row.update(_to_target(record))
    row["best_target_metric"] = _best_on_target(record)
    epoch, seconds = last["epoch"], last["train_seconds"]
    row["seconds_per_epoch"] = seconds / epoch if epoch > 0 else math.nan
    row["seconds_per_step"] = record.train_seconds / record.steps if record.steps > 0 else math.nan
    row["curvature_fraction"] = record.hyperparameters.get("curvature_fraction", math.nan)
    row["curvature_batch_size"] = _curvature_batch(record)
    row["data_source"] = record.data_source
    row["data_scaled"] = record.data_scaled
    row["device_name"] = record.device_name
    row["threads"] = math.nan if record.threads is None else float(record.threads)
    row["runs_at_once"] = math.nan if record.runs_at_once is None else float(record.runs_at_once)
    row["cpu"] = record.cpu
    row["bdhf_bench_version"] = record.version
    return row


def step_rows(record: RunRecord) -> dict[str, np.ndarray]:
    """Every logged mini-batch loss on the three axes: entry i was computed after i updates;
    its training seconds and gradient-equivalents are interpolated linearly between the
    evaluation records around it (NaN past the last evaluation, e.g. after a divergence)."""
    losses = np.asarray(record.minibatch_losses, dtype=float)
    steps = np.arange(losses.size, dtype=float)
    at = np.asarray([e["step"] for e in record.evaluations], dtype=float)
    out = {"step": steps, "minibatch_loss": losses}
    for key in ("train_seconds", "gradient_equivalents"):
        known = np.asarray([e[key] for e in record.evaluations], dtype=float)
        usable = np.isfinite(at) & np.isfinite(known)
        if usable.sum() < 2:
            out[key] = np.full(steps.shape, math.nan)
            continue
        values = np.interp(steps, at[usable], known[usable])
        values[steps > at[usable].max()] = math.nan
        out[key] = values
    return out


def _base(record: RunRecord, path: Path, root: Path, rel: str) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": f"{root.name}/{rel}",
        "path": str(path),
        "results_dir": str(root),
        "kind": record.kind,
        "problem": record.problem,
        "optimizer": record.optimizer,
        "setting": setting_key(record),
        "hyperparameters": json.dumps(record.hyperparameters, sort_keys=True),
        "batch_size": record.batch_size,
        "num_epochs": record.num_epochs,
        "weight_decay": math.nan if record.weight_decay is None else record.weight_decay,
        "seed": record.seed,
        "status": record.status,
        "budget": budget_label(record),
        "stop_at_target": bool(record.budget.get("stop_at_target")),
    }
    for name, value in record.hyperparameters.items():
        base[f"{HP_PREFIX}{name}"] = (
            format_value(value) if isinstance(value, list | dict) else value
        )
    return base


def _frame(rows: list[dict[str, Any]], leading: list[str]) -> pd.DataFrame:
    return _frame_order(pd.DataFrame.from_records(rows), leading)


def _frame_order(frame: pd.DataFrame, leading: list[str]) -> pd.DataFrame:
    """``leading`` columns first, then the hyperparameter columns sorted, then the rest."""
    hp_columns = sorted(c for c in frame.columns if c.startswith(HP_PREFIX))
    rest = [c for c in frame.columns if c not in leading and c not in hp_columns]
    return frame[[c for c in leading if c in frame.columns] + hp_columns + rest]


def _empty_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame(columns=[*ID_COLUMNS, "metric_kind", "final_metric"])
    evaluations = pd.DataFrame(columns=[*ID_COLUMNS, "evaluation", *EVAL_COLUMNS])
    return runs, evaluations


def _roots(results_dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    roots = [Path(d) for d in results_dirs]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"results folder {str(root)!r} does not exist")
    return roots


def _walk(roots: list[Path], skipped: list[SkippedFile]) -> Iterator[tuple[Path, Path]]:
    """(root, file) pairs, each file once even when folders overlap; unreadable folders skipped."""
    seen: set[Path] = set()
    for root in roots:
        for path in iter_result_files(root, skipped):
            resolved = path.resolve()
            if resolved not in seen:  # a folder given twice, or inside another one given
                seen.add(resolved)
                yield root, path


@dataclass
class _Loaded:
    """One file's contribution, compact: its run row and its evaluations as columns (the
    record itself, with its per-update losses, is dropped as soon as these are made)."""

    base: dict[str, Any]
    row: dict[str, Any]
    evaluations: dict[str, np.ndarray]
    source: tuple[str, bool]

    @property
    def order(self) -> tuple[str, str]:
        """Newest last: the runner's file names end in a timestamp."""
        return (Path(self.base["path"]).name, self.base["path"])


def _compact(record: RunRecord, base: dict[str, Any], under_diverged: bool) -> _Loaded:
    evaluations = {
        key: np.asarray([e[key] for e in record.evaluations], dtype=float)
        for key in record.evaluations[0]
    }
    return _Loaded(base, run_row(record, base), evaluations, (base["path"], under_diverged))


def _newest_per_seed(found: Iterable[_Loaded], skipped: list[SkippedFile]) -> list[_Loaded]:
    """One file per (problem, optimizer, setting, seed): the one whose name sorts last; the
    others are listed as skipped, never double-counted. Older copies are dropped as they are
    met, so memory holds one file's numbers per run."""
    newest: dict[tuple, _Loaded] = {}
    older: dict[tuple, list[tuple[tuple[str, str], str]]] = {}
    for item in found:
        base = item.base
        key = (base["problem"], base["optimizer"], base["setting"], base["seed"])
        if key not in newest:
            newest[key], older[key] = item, []
            continue
        kept = newest[key]
        if item.order >= kept.order:
            older[key].append((kept.order, kept.base["path"]))
            newest[key] = item
        else:
            older[key].append((item.order, base["path"]))
    for key, item in newest.items():
        for _, path in sorted(older[key]):
            reason = f"same problem, optimizer, setting and seed as {item.base['path']} (newer)"
            skipped.append(SkippedFile(path, reason))
    return list(newest.values())


def _evaluation_frame(kept: Sequence[_Loaded]) -> pd.DataFrame:
    """One row per evaluation, built column by column (a dict per row costs ~2 KB, which a
    30,000-run folder cannot afford); a column a run lacks is NaN there, as in
    ``DataFrame.from_records``."""
    counts = [next(iter(item.evaluations.values())).size for item in kept]
    names: dict[str, None] = {}
    for item in kept:
        names.update(dict.fromkeys(item.base))
    names["evaluation"] = None
    for item in kept:
        names.update(dict.fromkeys(item.evaluations))
    columns: dict[str, Any] = {}
    for name in names:
        if name == "evaluation":
            columns[name] = np.concatenate([np.arange(n) for n in counts])
        elif name in kept[0].evaluations or any(name in item.evaluations for item in kept):
            columns[name] = np.concatenate(
                [item.evaluations.get(name, np.full(n, math.nan)) for item, n in zip(kept, counts)]
            )
        else:
            values: list[Any] = []
            for item, n in zip(kept, counts):
                values.extend([item.base.get(name, math.nan)] * n)
            columns[name] = values
    frame = pd.DataFrame(columns)
    return _frame_order(frame, [*ID_COLUMNS, "evaluation", *EVAL_COLUMNS])


PARALLEL_FROM = 2000
"""Files (or runs, for the figures) from which the report works in worker processes: below,
starting them costs more than they save."""


def default_workers(items: int) -> int:
    """Worker processes for ``items`` files or runs: up to 2 from ``PARALLEL_FROM`` on, else 1."""
    return min(2, os.cpu_count() or 1) if items >= PARALLEL_FROM else 1


def _load_file(root: Path, path: Path) -> tuple[_Loaded | None, SkippedFile | None, bool]:
    """One file: its compact form, or why it was skipped; and whether it is DeepOBS-only."""
    under_diverged = DIVERGED_DIR in Path(os.path.abspath(path)).parts
    try:
        record = _read(path, under_diverged)
    except Foreign as err:
        return None, SkippedFile(str(path), str(err)), False
    base = _base(record, path, root, path.relative_to(root).as_posix())
    return _compact(record, base, under_diverged), None, record.kind == KIND_DEEPOBS


def _load_files(pairs: Sequence[tuple[Path, Path]]) -> list[tuple[Any, ...]]:
    """``_load_file`` of each (module level: a pool's worker calls it on a chunk)."""
    return [_load_file(root, path) for root, path in pairs]


def _read_files(pairs: list[tuple[Path, Path]], workers: int | None) -> list[tuple[Any, ...]]:
    """Every file's ``_load_file``, in order: in worker processes for a large folder (parsing
    JSON is most of the report's reading time, and files are independent)."""
    if workers is None:
        workers = default_workers(len(pairs))
    if workers <= 1:
        return _load_files(pairs)
    size = max(1, math.ceil(len(pairs) / (4 * workers)))
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return [item for chunk in pool.map(_load_files, chunks) for item in chunk]


def load_results(
    results_dirs: Sequence[str | os.PathLike[str]], workers: int | None = None
) -> LoadedResults:
    """Every run under ``results_dirs`` as frames; unusable files listed in ``skipped``.

    Raises FileNotFoundError only for a results folder that does not exist. ``workers``:
    processes that parse the files (default: up to 2 from ``PARALLEL_FROM`` files on).
    """
    skipped: list[SkippedFile] = []
    reduced: list[SkippedFile] = []
    walked: list[SkippedFile] = []  # unreadable folders, listed where the walk met them
    files = []
    for root, path in _walk(_roots(results_dirs), walked):
        files.append((root, path, len(walked)))
    loaded = _read_files([(root, path) for root, path, _ in files], workers)

    def read_all() -> Iterator[_Loaded]:
        flushed = 0
        for (_, path, before), (item, skip, deepobs_only) in zip(files, loaded):
            skipped.extend(walked[flushed:before])
            flushed = before
            if skip is not None:
                skipped.append(skip)
                continue
            if deepobs_only:
                note = "DeepOBS-only file: curves only (no timing or target)"
                reduced.append(SkippedFile(str(path), note))
            yield item
        skipped.extend(walked[flushed:])

    kept = _newest_per_seed(read_all(), skipped)
    if not kept:
        runs, evaluations = _empty_frames()
        return LoadedResults(runs, evaluations, skipped, reduced)
    runs = _frame([item.row for item in kept], ID_COLUMNS)
    evaluations = _evaluation_frame(kept)
    for frame in (runs, evaluations):
        frame["seed"] = frame["seed"].astype(np.int64)
    sources = {item.base["run_id"]: item.source for item in kept}
    return LoadedResults(runs, evaluations, skipped, reduced, sources)


def _ids(run_id: str, record: RunRecord) -> dict[str, Any]:
    """The identifying columns of a run's per-update rows."""
    return {
        "run_id": run_id,
        "problem": record.problem,
        "optimizer": record.optimizer,
        "setting": setting_key(record),
        "seed": record.seed,
    }


def _step_frame(found: list[tuple[RunRecord, dict[str, Any]]]) -> pd.DataFrame:
    """The per-update frame of every run that logged its mini-batch losses."""
    parts = []
    for record, base in found:
        if not record.minibatch_losses:
            continue
        columns = step_rows(record)
        n = columns["step"].size
        ids = {k: [base[k]] * n for k in ("run_id", "problem", "optimizer", "setting", "seed")}
        parts.append(pd.DataFrame({**ids, "status": record.status, **columns}))
    if not parts:
        ids = ["run_id", "problem", "optimizer", "setting", "seed", "status"]
        return pd.DataFrame(columns=[*ids, *STEP_COLUMNS])
    return pd.concat(parts, ignore_index=True)
