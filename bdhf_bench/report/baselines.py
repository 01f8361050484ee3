"""DeepOBS's published baselines (baselines/deepobs_baselines_v1.1.csv), shown beside our runs.

They are TensorFlow runs of DeepOBS 1.1, so every place that shows them says so and cites the
paper. The file's format is fixed by baselines/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

LABEL = "DeepOBS v1.1 TensorFlow reference runs"
CITATION = (
    "F. Schneider, L. Balles, P. Hennig: DeepOBS: A Deep Learning Optimizer Benchmark Suite, "
    "ICLR 2019 (https://github.com/fsschneider/DeepOBS)"
)
COLUMNS = (
    "testproblem",
    "metric",
    "optimizer",
    "lr",
    "other_hyperparams",
    "n_seeds",
    "final_mean",
    "final_std_pop",
    "speed_epochs",
    "num_epochs",
    "batch_size",
    "conv_perf",
)
NUMERIC = ("lr", "n_seeds", "final_mean", "final_std_pop", "speed_epochs", "num_epochs")
METRIC_KINDS = {"test_accuracies": "accuracy", "test_losses": "loss"}
OUR_NAMES = {
    "AdamOptimizer": "adam",
    "GradientDescentOptimizer": "sgd",
    "MomentumOptimizer": "momentum",
}
"""DeepOBS's TensorFlow optimizer names -> the registry names of our matching entries."""

DEFAULT_PATH = Path("baselines") / "deepobs_baselines_v1.1.csv"


class BaselinesError(ValueError):
    """The baselines file is missing or not in the documented format (one-line message)."""


def default_baselines_path() -> Path | None:
    """The repository's copy, looked for beside the package and then in the working folder."""
    candidates = (Path(__file__).resolve().parents[2] / DEFAULT_PATH, Path.cwd() / DEFAULT_PATH)
    return next((path for path in candidates if path.is_file()), None)


def load_baselines(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The CSV as a frame, plus ``metric_kind`` and ``ours`` (our optimizer name) columns."""
    path = Path(path)
    if not path.is_file():
        raise BaselinesError(f"baselines file {str(path)!r} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BaselinesError(f"baselines file {str(path)!r} is not a CSV: {err}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise BaselinesError(f"baselines file {str(path)!r} lacks columns {', '.join(missing)}")
    for column in (*NUMERIC, "conv_perf"):
        numbers = pd.to_numeric(frame[column].replace("", None), errors="coerce")
        if numbers.isna().any():
            raise BaselinesError(f"baselines file {str(path)!r}: column {column} is not numeric")
        frame[column] = numbers.astype(float)
    frame["batch_size"] = pd.to_numeric(frame["batch_size"], errors="coerce")
    unknown = sorted(set(frame["metric"]) - set(METRIC_KINDS))
    if unknown:
        raise BaselinesError(f"baselines file {str(path)!r}: unknown metric {unknown[0]!r}")
    frame["metric_kind"] = frame["metric"].map(METRIC_KINDS)
    frame["ours"] = frame["optimizer"].map(OUR_NAMES).fillna(frame["optimizer"])
    return frame[[*COLUMNS, "metric_kind", "ours"]].reset_index(drop=True)


def baselines_for(baselines: pd.DataFrame | None, problem: str) -> pd.DataFrame:
    """The rows for ``problem`` (empty when there are none or no baselines were given)."""
    if baselines is None or baselines.empty:
        return pd.DataFrame(columns=[*COLUMNS, "metric_kind", "ours"])
    return baselines[baselines["testproblem"] == problem]
