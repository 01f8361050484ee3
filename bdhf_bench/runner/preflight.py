"""Before the first run: is every data set the runs read here, or downloadable now, and is the
device there? Answered in one line naming what is missing, so that a suite on a machine without
its data or its GPU refuses instead of starting hundreds of runs that each fail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import dataset_names
from ..data.download import probe
from ..data.files import expected_folder, file_set, locate, loose_files, probe_url
from ..problems import get_problem
from .context import DEFAULT_DATA_DIR
from .spec import RunSpec

STATES = ("generated", "present", "downloadable", "missing")


@dataclass(frozen=True)
class DataStatus:
    """One data set's state in a data folder."""

    dataset: str
    """The data set whose files are read (smnist reads mnist's), or a generated one."""
    state: str
    """generated (nothing to read), present, downloadable (missing, its source answers now),
    missing (or not asked: ``probe`` off)."""
    where: Path | None = None
    """Where its files are, or go."""
    why: str = ""
    """Why a missing data set cannot be downloaded now."""

    @property
    def ready(self) -> bool:
        return self.state in ("generated", "present", "downloadable")

    def line(self) -> str:
        if self.state == "generated":
            return f"{self.dataset:<10} generated (no files: drawn or built from a package)"
        text = f"{self.dataset:<10} {self.state}: {self.where}"
        return f"{text} ({self.why})" if self.why else text


def needed(problems: Iterable[str], source: str = "real") -> list[str]:
    """The data sets that ``problems`` read with data ``source``: file sets (mnist for
    smnist) for real data, the problem's own data set when it is generated."""
    out = set()
    for name in problems:
        dataset = get_problem(name).dataset
        out.add((file_set(dataset) if source == "real" else None) or dataset)
    return sorted(out)


def files_needed(specs: Iterable[RunSpec]) -> list[str]:
    """The file-backed data sets a list of runs reads (runs on generated data read none)."""
    names = {spec.problem for spec in specs if spec.data == "real"}
    return [name for name in needed(names) if file_set(name) is not None]


def all_datasets() -> list[str]:
    """Every data set ``load_splits`` knows, file sets once."""
    return sorted({file_set(name) or name for name in dataset_names()})


def status(dataset: str, data_dir: Path | None, ask: bool = True) -> DataStatus:
    """Where ``dataset`` stands in ``data_dir``; with ``ask``, a missing one's download source
    is asked whether it answers now (nothing is downloaded)."""
    if file_set(dataset) is None:
        return DataStatus(dataset, "generated")
    folder = data_dir if data_dir is not None else DEFAULT_DATA_DIR
    paths = locate(dataset, folder)
    if paths is not None:
        return DataStatus(dataset, "present", paths[0].parent)
    where = expected_folder(dataset, folder)
    names = loose_files(dataset)
    if names:  # files directly in the data folder: name them, as the others name a folder
        where = where / f"{{{','.join(names)}}}"
    if not ask:
        return DataStatus(dataset, "missing", where)
    why = probe(probe_url(dataset))
    if why is None:
        return DataStatus(dataset, "downloadable", where)
    return DataStatus(dataset, "missing", where, f"cannot download now: {why}")


def device_problem(device: torch.device) -> str | None:
    """Why runs cannot use ``device`` on this machine, or None."""
    if device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return f"device {device} asked for, but this machine has no CUDA GPU"
    if device.index is not None and device.index >= torch.cuda.device_count():
        return f"device {device} does not exist (this machine has {torch.cuda.device_count()})"
    return None


def preflight(
    specs: Iterable[RunSpec], data_dir: Path | None, device: torch.device | None
) -> list[str]:
    """What stops ``specs`` from running here (empty: nothing): missing data sets that cannot
    be downloaded now, and a device this machine lacks (``device`` None: not checked)."""
    problems = []
    if device is not None and (why := device_problem(device)):
        problems.append(why)
    missing = [s for s in (status(d, data_dir) for d in files_needed(specs)) if not s.ready]
    if missing:
        names = ", ".join(f"{s.dataset} (in {s.where})" for s in missing)
        reason = missing[0].why.removeprefix("cannot download now: ")
        problems.append(f"data missing and not downloadable now: {names}: {reason}")
    return problems
