"""The report folder: atomic writes, the list of what was written, stale-figure clean-up."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..atomic import atomic_file, write_bytes, write_text

FIGURES = "figures"
TABLES = "tables"
OWN_PREFIXES = (
    "curves_",
    "time_to_target_",
    "curvature",
    "profile_",
    "deepobs_baselines",
    "batch_size_",
)
"""Names this report gives its figures and CSVs; only such files are ever removed."""


class ReportWriter:
    """Writes files under ``out_dir`` (each atomically) and remembers them in order."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
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
        """``tables/<name>.csv`` (the index is kept only when it is named), streamed to the file:
        the evaluations of a 30,000-run folder are ~250 MB of text, which must not be held
        whole (twice, as text and bytes) beside the frames."""
        rel = f"{TABLES}/{name}.csv"
        path = self.out_dir / rel
        with atomic_file(path, "wb") as handle:
            frame.to_csv(handle, index=frame.index.name is not None, mode="wb", encoding="utf-8")
        self.written.append(path)
        return rel

    def remove_stale(self) -> list[Path]:
        """Delete figures/CSVs of an earlier report in this folder that this one did not write
        (a problem that is gone would otherwise leave its old figure beside the new page)."""
        keep = {p.resolve() for p in self.written}
        removed = []
        for folder, suffix in ((FIGURES, ".png"), (TABLES, ".csv")):
            for path in sorted((self.out_dir / folder).glob(f"*{suffix}")):
                if path.stem.startswith(OWN_PREFIXES) and path.resolve() not in keep:
                    path.unlink()
                    removed.append(path)
        return removed
