"""The report's sections, in page order: aggregates -> tables, figures and text of one Document.

Figures are written as they are drawn (through the ReportWriter) and kept in the document with
their bytes, so the HTML can embed exactly what the markdown links to.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

from .. import __version__
from . import batch_size, figures, level_times, tables
from .aggregate import curvature_table, mixed_budgets, setting_table, summary_table
from .baselines import CITATION, LABEL, baselines_for
from .document import Bullets, Document, Image
from .headline import headline
from .load import LoadedResults
from .profiles import (
    PROFILE_TIMES,
    performance_profile,
    performance_ratios,
    profile_scores,
    profile_taus,
    solved_any,
    time_matrix,
)
from .tracks import track_block, track_table
from .winners import winner_table
from .writer import FIGURES, ReportWriter

TITLE = "bdhf-bench leaderboard"
TRACKS_TEXT = (
    "AlgoPerf's self-tuning track: these runs use every optimizer's defaults on every problem "
    "(no per-problem tuning) with 1.5x the tuned runs' budget, to the same targets; the tuned "
    "runs are each optimizer's validation-selected setting from the tuned folder. An optimizer "
    "that needs no tuning has a ratio near 1 and reaches the target on as many seeds."
)
HEADLINE = "Headline"
RULES = (
    "Rules (details in docs/report.md): runs are compared only within one budget; for each "
    "problem, budget and optimizer the setting shown is the "
    "one with the best mean final VALIDATION metric over the seeds all its settings ran (under a "
    "budget that stops at the target: the fewest updates to it; test is never used to select); "
    "the final test metric is mean ± population std over the finished seeds; times to target "
    "are medians over all seeds where a run that never reached the target counts as infinite "
    "(AlgoPerf's rule), so a median is finite only when more than half the seeds reached it; "
    "the step cost column is the ratio of median seconds per update to Adam's on the same "
    "problem and budget."
)
PROFILE_TEXT = (
    "AlgoPerf style: for each problem, r = an optimizer's median time to target divided by the "
    "best optimizer's; the curve is the fraction of problems with r <= tau, tau from 1 to the "
    "largest finite ratio on a log axis; a miss (or no run) never counts as solved. Score: "
    "AlgoPerf's normalised area under the curve from 1 to 4 (1 is best on every problem). Time: "
    "updates, training seconds (device-synchronised, evaluations excluded) and "
    "gradient-equivalents."
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


def render_png(draw: Callable[..., Any], *args: Any) -> bytes:
    """A figure drawn and encoded as PNG (module level: a pool's worker calls it), from
    matplotlib's own defaults whatever the calling process set before (another library's
    style, a notebook's theme): the same bytes in any process."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        return figures.as_png(draw(*args))


class ReportSections:
    """Aggregates once, then adds each section to ``doc`` (and its files to the writer)."""

    def __init__(
        self,
        loaded: LoadedResults,
        baselines: pd.DataFrame | None,
        out: ReportWriter,
        milestones: Sequence[level_times.Level] = (),
        tuned: LoadedResults | None = None,
        pool: Executor | None = None,
    ) -> None:
        self.loaded = loaded
        self.pool = pool
        """Where figures are drawn (None: here, in turn)."""
        self.pending: list[tuple[str, Image, Future[bytes]]] = []
        self.tuned = None if tuned is None else summary_table(setting_table(tuned.runs))
        self.milestones = list(milestones)
        self.baselines = baselines
        self.out = out
        self.notes: list[str] = []
        self.settings = setting_table(loaded.runs)
        self.summary = summary_table(self.settings)
        self.curvature = curvature_table(self.settings)
        self.colors = figures.palette(list(loaded.runs["optimizer"].astype(str)))
        self.mixed = mixed_budgets(self.settings)
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

    def figure(self, name: str, alt: str, draw: Callable[..., Any], *args: Any) -> Image | None:
        """Draw and write ``figures/<name>.png``; a failure becomes a note, not a traceback.

        With a pool (``figure_pool``) the drawing runs there and the image's bytes arrive in
        ``finish_figures``: a large report's figures take as long as its loading, and they are
        independent of each other."""
        rel = f"{FIGURES}/{name}.png"
        if self.pool is not None:
            image = Image(rel, alt, b"")
            self.pending.append((name, image, self.pool.submit(render_png, draw, *args)))
            return image
        try:
            data = render_png(draw, *args)
        except Exception as err:  # one bad figure must not take the whole report down
            self.notes.append(f"figure {name} not drawn: {type(err).__name__}: {err}")
            return None
        self.out.bytes(rel, data)
        return Image(rel, alt, data)

    def finish_figures(self) -> None:
        """Collect the pool's figures in the order they were asked for; a failed one becomes a
        note and leaves the page."""
        for name, image, future in self.pending:
            try:
                image.data = future.result()
            except Exception as err:  # as in ``figure``
                self.notes.append(f"figure {name} not drawn: {type(err).__name__}: {err}")
                for section in self.doc.sections:
                    section.blocks = [b for b in section.blocks if b is not image]
                continue
            self.out.bytes(image.path, image.data)
        self.pending = []

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

    def workloads(self) -> list[tuple[str, pd.DataFrame]]:
        """(workload, its summary rows) per problem and budget, in page order."""
        return [
            (str(rows["workload"].iloc[0]), rows)
            for _, rows in self.summary.groupby(["problem", "budget"], sort=True)
        ]

    def _resolution(self, rows: pd.DataFrame) -> float:
        """Median updates between evaluations of the selected runs: the granularity of a time
        to target (the target is checked at evaluations only)."""
        runs = self.loaded.runs
        chosen = set(zip(rows["problem"], rows["budget"], rows["optimizer"], rows["setting"]))
        keys = zip(runs["problem"], runs["budget"], runs["optimizer"], runs["setting"])
        mine = runs[[key in chosen for key in keys]]
        gaps = mine["final_step"].astype(float) / (mine["n_evaluations"].astype(float) - 1)
        return float(gaps.median()) if gaps.notna().any() else float("nan")

    def headline(self) -> None:
        """First on the page: per problem and budget, who gets to the target first in each unit
        and whether it exceeds the seeds' spread, in sentences computed from the numbers."""
        section = self.doc.add(HEADLINE)
        workloads = self.workloads()
        if any(rows["n_with_target"].gt(0).any() for _, rows in workloads):
            section.blocks.append(winner_table(workloads, self.loaded.runs))
        reached = [
            np.isfinite(rows["steps_to_target"].astype(float)).any() for _, rows in workloads
        ]
        if any(reached):
            image = self.figure(
                "time_to_target_overview",
                "every problem's median time to target",
                figures.time_to_target_overview,
                workloads,
                self.colors,
                tables.machines(self.summary),
            )
            section.blocks.extend([image] if image else [])
        if self.mixed:
            listed = "; ".join(f"{p}: {', '.join(b)}" for p, b in self.mixed.items())
            section.blocks.append(
                f"These results mix budgets ({listed}). Runs are compared, and settings "
                "selected, only within one budget: each budget has its own rows."
            )
        for _, rows in self.workloads():
            opening, lines = headline(
                rows, self.loaded.runs, tables.machines(rows), self._resolution(rows)
            )
            section.blocks.extend([opening, Bullets(lines)])

    def leaderboard(self) -> None:
        self.doc.add("Leaderboard", tables.leaderboard(self.summary))

    def tracks(self) -> None:
        """AlgoPerf's self-tuning track against the tuned one (``--tuned``)."""
        if self.tuned is None:
            return
        table = track_table(self.summary, self.tuned)
        self.out.csv("tracks", table)
        self.doc.add("Untuned against tuned", TRACKS_TEXT, track_block(table))

    def levels(self) -> None:
        """Time to each milestone level asked for (``--level``), beside the target's."""
        if not self.milestones:
            return
        table = level_times.level_table(self.loaded.evaluations, self.summary, self.milestones)
        if table.empty:
            self.doc.add("Time to each level", "No selected runs on the problems of the levels.")
            return
        self.out.csv("levels", table)
        self.doc.add("Time to each level", level_times.table_block(table))

    def details(self) -> None:
        self.doc.add(
            "Details of the leaderboard rows",
            tables.details(self.summary),
            tables.selected_settings(self.summary),
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
            note = f"seconds on {tables.machines(self.summary)}" if name == "seconds" else ""
            if not solved_any(ratios):
                n = len(ratios)
                where = "its one problem" if n == 1 else f"any of its {n} problems"
                section.blocks.append(
                    f"No optimizer reached the target on {where}: every {label} ratio is "
                    f"infinite, so there is no {label} profile to draw."
                )
                continue
            image = self.figure(
                f"profile_{name}",
                f"performance profile ({label})",
                figures.profile_figure,
                profile,
                label,
                self.colors,
                note,
            )
            section.blocks.extend([image] if image else [])
            section.blocks.append(tables.scores(ratios, profile_scores(ratios), label, note))

    def curvature_sweep(self) -> None:
        if self.curvature.empty:
            return
        section = self.doc.add("BDHF vs HF over curvature batch size")
        section.blocks.append(tables.curvature(self.curvature))
        for (problem, budget), rows in self.curvature.groupby(["problem", "budget"], sort=True):
            mine = self.summary[
                (self.summary["problem"] == problem) & (self.summary["budget"] == budget)
            ]
            name = str(mine["workload"].iloc[0]) if len(mine) else str(problem)
            target = problem_target(mine)
            image = self.figure(
                f"curvature_{slug(name)}",
                f"{name}: BDHF vs HF by curvature batch",
                figures.curvature_figure,
                rows,
                name,
                self.colors,
                target,
            )
            section.blocks.extend([image] if image else [])

    def batch_size_study(self) -> None:
        """Updates to the target against batch size (report/batch_size.py), each point tuned."""
        for problem in batch_size.studied_problems(self.loaded.evaluations):
            target = problem_target(self.summary[self.summary["problem"] == problem])
            if target is None:
                continue
            relation = ">=" if target["metric"] == "accuracy" else "<="
            level = f"{target['split']} {target['metric']} {relation} {target['value']:g}"
            table = batch_size.batch_size_table(
                self.loaded.evaluations,
                problem,
                str(target["metric"]),
                str(target["split"]),
                float(target["value"]),
            )
            section = self.doc.add(f"{problem}: updates to target vs batch size")
            image = self.figure(
                f"batch_size_{slug(problem)}",
                f"{problem}: updates to {level} against batch size",
                batch_size.batch_size_figure,
                table,
                f"{problem}: updates to {level}",
                self.colors,
            )
            section.blocks.extend([image] if image else [])
            section.blocks.append(batch_size.table_block(table, level))

    def _selected(self, frame: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` (evaluations or steps) that belong to the selected settings."""
        keys = ["problem", "optimizer", "setting"]
        if frame.empty:
            return frame
        chosen = pd.MultiIndex.from_frame(summary[keys])
        return frame[pd.MultiIndex.from_frame(frame[keys]).isin(chosen)]

    def problem(self, workload: str, summary: pd.DataFrame) -> None:
        problem = str(summary["problem"].iloc[0])
        evals = self._selected(self.loaded.evaluations, summary)
        steps = self.loaded.steps_for(self._selected(self.loaded.runs, summary)["run_id"])
        base = baselines_for(self.baselines, problem)
        target = problem_target(summary)
        machine = tables.machines(summary)
        kind = "accuracy" if (summary["metric_kind"] == "accuracy").any() else "loss"
        section = self.doc.add(f"Problem: {workload}")
        name = slug(workload)
        curves = self.figure(
            f"curves_{name}",
            f"{workload}: learning curves against updates, seconds and gradient-equivalents",
            figures.learning_curves,
            evals,
            steps,
            workload,
            kind,
            self.colors,
            target,
            base,
            machine,
        )
        section.blocks.extend([curves] if curves else [])
        reached = summary["steps_to_target"].astype(float).map(math.isfinite).any()
        if target and reached:
            bars = self.figure(
                f"time_to_target_{name}",
                f"{workload}: time to target",
                figures.time_to_target_bars,
                summary,
                workload,
                self.colors,
                base,
                machine,
            )
            section.blocks.extend([bars] if bars else [])
        elif target:
            section.blocks.append(
                f"No optimizer reached the target on {workload} (the median over seeds is "
                "infinite for every optimizer): no time-to-target figure."
            )
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
        """Every section in page order: the answer first, then its evidence, then the rest."""
        self.headline()
        self.leaderboard()
        self.tracks()
        self.levels()
        self.about(results_dirs)
        for workload, rows in self.workloads():
            self.problem(workload, rows)
        self.profiles()
        self.curvature_sweep()
        self.batch_size_study()
        self.details()
        self.all_settings()
        self.deepobs()
        self.csv_tables()
        self.finish_figures()
        self.skipped()
        return self.doc
