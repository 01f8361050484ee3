"""``build_report``: results folders -> leaderboard.md, index.html, tables/*.csv, figures/*.png.

The one entry point the CLI calls. It reads result files only (load.py), lays the page out once
(sections.py, from aggregate.py, profiles.py and figures.py) and renders it twice (markdown.py,
page.py). Every file is written atomically (writer.py).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..levels import Level
from . import markdown, page
from .baselines import load_baselines
from .load import LoadedResults, SkippedFile, default_workers, load_results
from .sections import ReportSections
from .writer import ReportWriter

LEADERBOARD = "leaderboard.md"
HTML = "index.html"


class ReportInputError(ValueError):
    """Bad input to the report (missing folder, nothing loadable, bad baselines): one line."""


@dataclass
class ReportSummary:
    """What a report run wrote and what it left out."""

    out_dir: Path
    leaderboard: Path
    html: Path
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    """Figures/CSVs of an earlier report in the same folder that this one replaced."""
    skipped: list[SkippedFile] = field(default_factory=list)
    reduced: list[SkippedFile] = field(default_factory=list)
    n_runs: int = 0
    problems: list[str] = field(default_factory=list)
    optimizers: list[str] = field(default_factory=list)
    baselines: Path | None = None
    notes: list[str] = field(default_factory=list)


def _load(results_dirs: Sequence[str | os.PathLike[str]]) -> LoadedResults:
    if not results_dirs:
        raise ReportInputError("no results folder given")
    try:
        loaded = load_results(results_dirs)
    except FileNotFoundError as err:
        raise ReportInputError(str(err)) from None
    if loaded.runs.empty:
        where = ", ".join(str(d) for d in results_dirs)
        first = ""
        if loaded.skipped:
            first = f"; first: {loaded.skipped[0].path}: {loaded.skipped[0].reason}"
        raise ReportInputError(
            f"nothing loadable in {where} ({len(loaded.skipped)} files skipped{first})"
        )
    return loaded


def _baselines(path: str | os.PathLike[str] | None) -> pd.DataFrame | None:
    if path is None:
        return None
    try:
        return load_baselines(path)
    except ValueError as err:
        raise ReportInputError(str(err)) from None


def build_report(
    results_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    baselines: str | os.PathLike[str] | None = None,
    milestones: Sequence[Level] = (),
    tuned_dirs: Sequence[str | os.PathLike[str]] = (),
    figure_workers: int | None = None,
) -> ReportSummary:
    """Read every result file under ``results_dirs`` and write the report into ``out_dir``.

    With ``tuned_dirs`` the results are AlgoPerf's self-tuning track (every optimizer at its
    defaults) and the page compares them with the tuned runs found there. Figures are drawn in
    ``figure_workers`` processes (default: up to 2 from ``load.PARALLEL_FROM`` runs on, where
    drawing them costs about as much as loading the folder; in turn below that, where starting
    processes would cost more than it saves).

    Raises :class:`ReportInputError` for a missing results folder, nothing loadable, or a
    baselines file that is missing or malformed. Unusable result files are not errors: they are
    listed in ``ReportSummary.skipped`` and on the page.
    """
    loaded = _load(results_dirs)
    tuned = _load(tuned_dirs) if tuned_dirs else None
    reference = _baselines(baselines)
    out = ReportWriter(Path(out_dir))
    workers = figure_workers if figure_workers is not None else default_workers(len(loaded.runs))
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:
            context = multiprocessing.get_context("spawn")  # no state of ours is inherited
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
        sections = ReportSections(loaded, reference, out, milestones, tuned, pool)
        document = sections.build(results_dirs)
    leaderboard = out.text(LEADERBOARD, markdown.render(document))
    html = out.text(HTML, page.render(document))
    removed = out.remove_stale()
    runs = loaded.runs
    return ReportSummary(
        out_dir=Path(out_dir),
        leaderboard=leaderboard,
        html=html,
        written=out.written,
        removed=removed,
        skipped=loaded.skipped,
        reduced=loaded.reduced,
        n_runs=len(runs),
        problems=sorted(str(p) for p in runs["problem"].unique()),
        optimizers=sorted(str(o) for o in runs["optimizer"].unique()),
        baselines=None if baselines is None else Path(baselines),
        notes=sections.notes,
    )
