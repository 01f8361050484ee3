"""``build_report``: results folders -> leaderboard.md, index.html, tables/*.csv, figures/*.png.

The one entry point the CLI calls. It reads result files only (load.py), aggregates (aggregate.py,
profiles.py), draws (figures.py), lays the page out once (document.py) and renders it twice
(markdown.py, page.py). Every file is written atomically.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import __version__
from . import figures, markdown, page, tables
from ._atomic import write_bytes, write_text
from .aggregate import curvature_table, setting_table, summary_table
from .baselines import CITATION, LABEL, baselines_for, load_baselines
from .document import Document, Image
from .load import LoadedResults, SkippedFile, load_results
from .profiles import (
    PROFILE_TIMES,
    performance_profile,
    performance_ratios,
    profile_scores,
    profile_taus,
    time_matrix,
)

LEADERBOARD = "leaderboard.md"
HTML = "index.html"
FIGURES = "figures"
TABLES = "tables"
RULES_DOC = "docs/report.md"


class ReportInputError(ValueError):
    """Bad input to the report (missing folder, nothing loadable, bad baselines): one line."""


@dataclass
class ReportSummary:
    """What a report run wrote and what it left out."""

    out_dir: Path
    leaderboard: Path
    html: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    reduced: list[SkippedFile] = field(default_factory=list)
    n_runs: int = 0
    problems: list[str] = field(default_factory=list)
    optimizers: list[str] = field(default_factory=list)
    baselines: Path | None = None
    notes: list[str] = field(default_factory=list)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


class _Writer:
    """Writes files under the report folder and remembers them."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.written: list[Path] = []

    def bytes(self, rel: str, data: bytes) -> Path:
        path = write_bytes(self.out_dir / rel, data)
        self.written.append(path)
        return path

    def text(self, rel: str, text: str) -> Path:
        path = write_text(self.out_dir / rel, text)
        self.written.append(path)
        return path

    def csv(self, name: str, frame: pd.DataFrame) -> str:
        rel = f"{TABLES}/{name}.csv"
        self.text(rel, frame.to_csv(index=frame.index.name is not None))
        return rel


def _load(results_dirs: Sequence[str | os.PathLike[str]]) -> LoadedResults:
    if not results_dirs:
        raise ReportInputError("no results folder given")
    try:
        loaded = load_results(results_dirs)
    except FileNotFoundError as err:
        raise ReportInputError(str(err)) from None
    if loaded.runs.empty:
        where = ", ".join(str(d) for d in results_dirs)
        first = (
            f"; first: {loaded.skipped[0].path}: {loaded.skipped[0].reason}"
            if loaded.skipped
            else ""
        )
        raise ReportInputError(
            f"nothing loadable in {where} ({len(loaded.skipped)} files skipped{first})"
        )
    return loaded


def _problem_target(summary: pd.DataFrame) -> dict | None:
    rows = summary.dropna(subset=["target_value"])
    rows = rows[rows["target_metric"].notna()]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return {
        "metric": row["target_metric"],
        "split": row["target_split"],
        "value": row["target_value"],
    }


class _Builder:
    """Holds the frames of one report while its sections are laid out."""

    def __init__(self, loaded: LoadedResults, baselines: pd.DataFrame | None, out: _Writer) -> None:
        self.loaded = loaded
        self.baselines = baselines
        self.out = out
        self.notes: list[str] = []
        self.settings = setting_table(loaded.runs)
        self.summary = summary_table(self.settings)
        self.curvature = curvature_table(self.settings)
        self.colors = figures.palette(list(loaded.runs["optimizer"].astype(str)))
        self.doc = Document("bdhf-bench leaderboard")

    def figure(self, name: str, alt: str, draw, *args, **kwargs) -> Image | None:
        """Draw and write ``figures/<name>.png``; a failure becomes a note, not a traceback."""
        try:
            data = draw(*args, **kwargs)
        except Exception as err:  # a figure must not take the whole report down
            self.notes.append(f"figure {name} not drawn: {type(err).__name__}: {err}")
            return None
        rel = f"{FIGURES}/{name}.png"
        self.out.bytes(rel, data)
        return Image(rel, alt, data)

    def intro(self, results_dirs: Sequence[str | os.PathLike[str]]) -> None:
        runs = self.loaded.runs
        self.doc.add(
            "About",
            f"{len(runs)} runs ({int((runs['status'] == 'diverged').sum())} diverged) of "
            f"{runs['problem'].nunique()} problems and {runs['optimizer'].nunique()} optimizers, "
            f"read from {', '.join(str(d) for d in results_dirs)} by bdhf-bench {__version__}. "
            f"{len(self.loaded.skipped)} files skipped (listed at the end).",
            "Rules (details in docs/report.md): for each problem and optimizer the setting "
            "shown is the one with the best mean final VALIDATION metric over seeds (test is "
            "never used to select); the final test metric is mean ± population std over the "
            "finished seeds; times to target are medians over all seeds where a run that never "
            "reached the target counts as infinite (AlgoPerf's rule), so a median is finite only "
            "when more than half the seeds reached it; the overhead column is the ratio of "
            "median seconds per step to Adam's on the same problem.",
        )

    def leaderboard(self) -> None:
        self.doc.add(
            "Leaderboard", tables.leaderboard(self.summary), tables.selected_settings(self.summary)
        )

    def profiles(self) -> None:
        section = self.doc.add("Performance profiles")
        section.blocks.append(
            "AlgoPerf style: for each problem, r = an optimizer's median time to target divided "
            "by the best optimizer's; the curve is the fraction of problems with r <= tau, tau "
            "from 1 to 4; a miss (or no run) never counts as solved. Score: the normalised area "
            "under the curve (1 is best on every problem). Time: training seconds "
            "(device-synchronised, evaluations excluded); also gradient-equivalents."
        )
        for name, column in PROFILE_TIMES.items():
            times = time_matrix(self.summary, column)
            if times.empty:
                section.blocks.append(f"No targets recorded: no {name} profile.")
                continue
            ratios = performance_ratios(times)
            profile = performance_profile(ratios, profile_taus(ratios))
            ratios.index.name = "problem"
            self.out.csv(f"profile_ratios_{name}", ratios)
            frame = profile.copy()
            frame.index.name = "optimizer"
            self.out.csv(f"profile_{name}", frame)
            label = name.replace("_", "-")
            image = self.figure(
                f"profile_{name}",
                f"performance profile ({label})",
                figures.profile_figure,
                profile,
                label,
                self.colors,
            )
            if image:
                section.blocks.append(image)
            section.blocks.append(tables.scores(ratios, profile_scores(ratios), label))

    def curvature_sweep(self) -> None:
        if self.curvature.empty:
            return
        section = self.doc.add("BDHF vs HF over curvature batch size")
        section.blocks.append(tables.curvature(self.curvature))
        for problem, rows in self.curvature.groupby("problem", sort=True):
            image = self.figure(
                f"curvature_{_slug(str(problem))}",
                f"{problem}: BDHF vs HF by curvature batch",
                figures.curvature_figure,
                rows,
                str(problem),
                self.colors,
                _problem_target(self.summary[self.summary["problem"] == problem]),
            )
            if image:
                section.blocks.append(image)

    def problem(self, problem: str) -> None:
        summary = self.summary[self.summary["problem"] == problem]
        chosen = set(zip(summary["optimizer"], summary["setting"]))
        evals = self.loaded.evaluations
        evals = evals[evals["problem"] == problem]
        keep = [pair in chosen for pair in zip(evals["optimizer"], evals["setting"])]
        evals = evals[keep]
        base = baselines_for(self.baselines, problem)
        target = _problem_target(summary)
        kind = "accuracy" if (summary["metric_kind"] == "accuracy").any() else "loss"
        section = self.doc.add(f"Problem: {problem}")
        slug = _slug(problem)
        for image in (
            self.figure(
                f"curves_{slug}",
                f"{problem}: learning curves",
                figures.learning_curves,
                evals,
                problem,
                kind,
                self.colors,
                target,
                base,
            ),
            self.figure(
                f"time_to_target_{slug}",
                f"{problem}: time to target",
                figures.time_to_target_bars,
                summary,
                problem,
                self.colors,
                base,
            )
            if target
            else None,
        ):
            if image:
                section.blocks.append(image)
        if len(base):
            section.blocks.append(tables.baselines(base, f"{LABEL} — {CITATION}"))

    def deepobs(self) -> None:
        if self.baselines is None:
            return
        covered = self.baselines[self.baselines["testproblem"].isin(self.summary["problem"])]
        text = (
            f"{LABEL}: DeepOBS's published baselines (SGD, Momentum, Adam; best learning rate of "
            f"its grid, 10 seeds), shown for reference beside our PyTorch runs, not to be "
            f"compared to the third digit. Source: {CITATION}."
        )
        if covered.empty:
            text += " None of the problems in this report has a published baseline."
        section = self.doc.add(LABEL, text)
        if len(covered):
            section.blocks.append(tables.baselines(covered, LABEL))
            self.out.csv("deepobs_baselines", covered)

    def skipped(self) -> None:
        section = self.doc.add("Skipped files")
        if self.loaded.skipped:
            section.blocks.append(tables.skipped(self.loaded.skipped))
        else:
            section.blocks.append("None.")
        if self.loaded.reduced:
            section.blocks.append("Read in a reduced form (DeepOBS-only files):")
            section.blocks.append(tables.skipped(self.loaded.reduced, reduced=True))
        if self.notes:
            section.blocks.append("Notes: " + "; ".join(self.notes))

    def tables_csv(self) -> None:
        self.out.csv("summary", self.summary)
        self.out.csv("settings", self.settings)
        self.out.csv("runs", self.loaded.runs)
        self.out.csv("evaluations", self.loaded.evaluations)
        if not self.curvature.empty:
            self.out.csv("curvature", self.curvature)
        skipped = pd.DataFrame(
            [(f.path, f.reason) for f in self.loaded.skipped], columns=["path", "reason"]
        )
        self.out.csv("skipped", skipped)


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
) -> ReportSummary:
    """Read every result file under ``results_dirs`` and write the report into ``out_dir``.

    Raises :class:`ReportInputError` for a missing results folder, nothing loadable, or a
    baselines file that is missing or malformed. Unusable result files are not errors: they are
    listed in ``ReportSummary.skipped`` and on the page.
    """
    loaded = _load(results_dirs)
    base = _baselines(baselines)
    out = _Writer(Path(out_dir))
    builder = _Builder(loaded, base, out)
    builder.intro(results_dirs)
    builder.leaderboard()
    builder.profiles()
    builder.curvature_sweep()
    for problem in sorted(loaded.runs["problem"].unique()):
        builder.problem(str(problem))
    builder.deepobs()
    builder.tables_csv()
    builder.skipped()
    leaderboard = out.text(LEADERBOARD, markdown.render(builder.doc))
    html = out.text(HTML, page.render(builder.doc))
    runs = loaded.runs
    return ReportSummary(
        out_dir=Path(out_dir),
        leaderboard=leaderboard,
        html=html,
        written=out.written,
        skipped=loaded.skipped,
        reduced=loaded.reduced,
        n_runs=len(runs),
        problems=sorted(str(p) for p in runs["problem"].unique()),
        optimizers=sorted(str(o) for o in runs["optimizer"].unique()),
        baselines=None if baselines is None else Path(baselines),
        notes=builder.notes,
    )
