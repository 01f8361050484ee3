"""The report's sections, in page order: aggregates -> tables, figures and text of one Document.

Figures are written as they are drawn (through the ReportWriter) and kept in the document with
their bytes, so the HTML can embed exactly what the markdown links to.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from .. import __version__
from . import figures, tables
from .aggregate import curvature_table, setting_table, summary_table
from .baselines import CITATION, LABEL, baselines_for
from .document import Document, Image
from .load import LoadedResults
from .profiles import (
    PROFILE_TIMES,
    performance_profile,
    performance_ratios,
    profile_scores,
    profile_taus,
    time_matrix,
)
from .writer import FIGURES, ReportWriter

TITLE = "bdhf-bench leaderboard"
RULES = (
    "Rules (details in docs/report.md): for each problem and optimizer the setting shown is the "
    "one with the best mean final VALIDATION metric over seeds (test is never used to select); "
    "the final test metric is mean ± population std over the finished seeds; times to target "
    "are medians over all seeds where a run that never reached the target counts as infinite "
    "(AlgoPerf's rule), so a median is finite only when more than half the seeds reached it; "
    "the overhead column is the ratio of median seconds per step to Adam's on the same problem."
)
PROFILE_TEXT = (
    "AlgoPerf style: for each problem, r = an optimizer's median time to target divided by the "
    "best optimizer's; the curve is the fraction of problems with r <= tau, tau from 1 to 4; a "
    "miss (or no run) never counts as solved. Score: the normalised area under the curve (1 is "
    "best on every problem). Time: training seconds (device-synchronised, evaluations "
    "excluded); also gradient-equivalents."
)


def slug(name: str) -> str:
    """A file-name-safe form of a problem name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def problem_target(summary: pd.DataFrame) -> dict[str, Any] | None:
    """The (first) target recorded for the problem whose summary rows are given."""
    rows = summary[summary["target_value"].notna() & summary["target_metric"].notna()]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return {
        "metric": row["target_metric"],
        "split": row["target_split"],
        "value": row["target_value"],
    }


class ReportSections:
    """Aggregates once, then adds each section to ``doc`` (and its files to the writer)."""

    def __init__(
        self, loaded: LoadedResults, baselines: pd.DataFrame | None, out: ReportWriter
    ) -> None:
        self.loaded = loaded
        self.baselines = baselines
        self.out = out
        self.notes: list[str] = []
        self.settings = setting_table(loaded.runs)
        self.summary = summary_table(self.settings)
        self.curvature = curvature_table(self.settings)
        self.colors = figures.palette(list(loaded.runs["optimizer"].astype(str)))
        self.doc = Document(TITLE)
        self._check_targets()

    def _check_targets(self) -> None:
        runs = self.loaded.runs[self.loaded.runs["target_value"].notna()]
        for problem, group in runs.groupby("problem", sort=True):
            targets = group[["target_metric", "target_split", "target_value"]].drop_duplicates()
            if len(targets) > 1:
                self.notes.append(
                    f"{problem}: runs recorded {len(targets)} different targets; each run's "
                    "time to target is against its own"
                )

    def figure(self, name: str, alt: str, draw: Callable[..., bytes], *args: Any) -> Image | None:
        """Draw and write ``figures/<name>.png``; a failure becomes a note, not a traceback."""
        try:
            data = draw(*args)
        except Exception as err:  # one bad figure must not take the whole report down
            self.notes.append(f"figure {name} not drawn: {type(err).__name__}: {err}")
            return None
        rel = f"{FIGURES}/{name}.png"
        self.out.bytes(rel, data)
        return Image(rel, alt, data)

    def about(self, results_dirs: Sequence[str | os.PathLike[str]]) -> None:
        runs = self.loaded.runs
        self.doc.add(
            "About",
            f"{len(runs)} runs ({int((runs['status'] == 'diverged').sum())} diverged) of "
            f"{runs['problem'].nunique()} problems and {runs['optimizer'].nunique()} optimizers, "
            f"read from {', '.join(str(d) for d in results_dirs)} by bdhf-bench {__version__}. "
            f"{len(self.loaded.skipped)} files skipped (listed at the end).",
            RULES,
        )

    def leaderboard(self) -> None:
        self.doc.add(
            "Leaderboard", tables.leaderboard(self.summary), tables.selected_settings(self.summary)
        )

    def profiles(self) -> None:
        section = self.doc.add("Performance profiles", PROFILE_TEXT)
        for name, column in PROFILE_TIMES.items():
            times = time_matrix(self.summary, column)
            if times.empty:
                section.blocks.append(f"No targets recorded: no {name} profile.")
                continue
            ratios = performance_ratios(times)
            profile = performance_profile(ratios, profile_taus(ratios))
            ratios.index.name = "problem"
            profile.index.name = "optimizer"
            self.out.csv(f"profile_ratios_{name}", ratios)
            self.out.csv(f"profile_{name}", profile)
            label = name.replace("_", "-")
            image = self.figure(
                f"profile_{name}",
                f"performance profile ({label})",
                figures.profile_figure,
                profile,
                label,
                self.colors,
            )
            section.blocks.extend([image] if image else [])
            section.blocks.append(tables.scores(ratios, profile_scores(ratios), label))

    def curvature_sweep(self) -> None:
        if self.curvature.empty:
            return
        section = self.doc.add("BDHF vs HF over curvature batch size")
        section.blocks.append(tables.curvature(self.curvature))
        for problem, rows in self.curvature.groupby("problem", sort=True):
            target = problem_target(self.summary[self.summary["problem"] == problem])
            image = self.figure(
                f"curvature_{slug(str(problem))}",
                f"{problem}: BDHF vs HF by curvature batch",
                figures.curvature_figure,
                rows,
                str(problem),
                self.colors,
                target,
            )
            section.blocks.extend([image] if image else [])

    def _selected_evaluations(self, problem: str, summary: pd.DataFrame) -> pd.DataFrame:
        chosen = set(zip(summary["optimizer"], summary["setting"]))
        evals = self.loaded.evaluations
        evals = evals[evals["problem"] == problem]
        keep = [pair in chosen for pair in zip(evals["optimizer"], evals["setting"])]
        return evals[keep]

    def problem(self, problem: str) -> None:
        summary = self.summary[self.summary["problem"] == problem]
        evals = self._selected_evaluations(problem, summary)
        base = baselines_for(self.baselines, problem)
        target = problem_target(summary)
        kind = "accuracy" if (summary["metric_kind"] == "accuracy").any() else "loss"
        section = self.doc.add(f"Problem: {problem}")
        name = slug(problem)
        curves = self.figure(
            f"curves_{name}",
            f"{problem}: learning curves",
            figures.learning_curves,
            evals,
            problem,
            kind,
            self.colors,
            target,
            base,
        )
        section.blocks.extend([curves] if curves else [])
        if target:
            bars = self.figure(
                f"time_to_target_{name}",
                f"{problem}: time to target",
                figures.time_to_target_bars,
                summary,
                problem,
                self.colors,
                base,
            )
            section.blocks.extend([bars] if bars else [])
        if len(base):
            section.blocks.append(tables.baselines(base, f"{LABEL} — {CITATION}"))

    def all_settings(self) -> None:
        self.doc.add("All settings, ranked on validation", tables.settings(self.settings))

    def deepobs(self) -> None:
        if self.baselines is None:
            return
        covered = self.baselines[self.baselines["testproblem"].isin(self.summary["problem"])]
        text = (
            f"{LABEL}: DeepOBS's published baselines (SGD, Momentum, Adam; best learning rate "
            "of its grid, 10 seeds), shown for reference beside our PyTorch runs, not to be "
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

    def csv_tables(self) -> None:
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

    def build(self, results_dirs: Sequence[str | os.PathLike[str]]) -> Document:
        """Every section in page order."""
        self.about(results_dirs)
        self.leaderboard()
        self.profiles()
        self.curvature_sweep()
        for problem in sorted(self.loaded.runs["problem"].astype(str).unique()):
            self.problem(problem)
        self.deepobs()
        self.all_settings()
        self.csv_tables()
        self.skipped()
        return self.doc
