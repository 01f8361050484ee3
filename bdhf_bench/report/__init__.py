"""Reports: result files -> tidy frames -> aggregates, figures and a leaderboard page.

Reads result files only (docs/results.md); imports nothing from the runner, the optimizers or the
problems. Rules are documented in docs/report.md.
"""

from .aggregate import curvature_table, median_with_misses, setting_table, summary_table
from .baselines import load_baselines
from .build import ReportInputError, ReportSummary, build_report
from .load import LoadedResults, SkippedFile, load_results
from .profiles import performance_profile, performance_ratios, profile_scores, time_matrix

__all__ = [
    "LoadedResults",
    "ReportInputError",
    "ReportSummary",
    "SkippedFile",
    "build_report",
    "curvature_table",
    "load_baselines",
    "load_results",
    "median_with_misses",
    "performance_profile",
    "performance_ratios",
    "profile_scores",
    "setting_table",
    "summary_table",
    "time_matrix",
]
