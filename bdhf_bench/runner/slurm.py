"""Grids on SLURM clusters without Ray: a spec file plus an array job script, one run per task.

``write_slurm`` writes ``<script>`` and, beside it, ``<stem>.specs.json`` (the runs'
``RunSpec.identity()`` dicts with their run ids) and a ``<stem>.logs/`` folder for the tasks'
output. Array task ``i`` calls ``bdhf-bench run-spec --specs <stem>.specs.json --index i``,
which runs spec ``i`` through ``run_one`` against the shared results folder: the same
skip-finished, no-duplicate and resume-from-checkpoint guarantees as every other executor, so
resubmitting the whole array (or some tasks of it) only does what is left.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from ..atomic import atomic_file, write_json
from .executors import WAIT_POLL
from .loop import Execution
from .run import RunOutcome, run_one
from .spec import RunSpec
from .store import ResultStore

SPEC_FILE_VERSION = 1
MAX_ARRAY = 1000
"""SLURM's default MaxArraySize is 1001 (indices 0-1000); larger arrays need chunked submits."""


class SpecFileError(ValueError):
    """A spec file that cannot be read, or an index outside it (one line)."""


def spec_file_path(script: str | Path) -> Path:
    """The spec file beside a script: ``jobs/tune.sh`` -> ``jobs/tune.specs.json``."""
    script = Path(script)
    return script.with_name(f"{script.stem}.specs.json")


def logs_path(script: str | Path) -> Path:
    """The tasks' output folder beside a script: ``jobs/tune.sh`` -> ``jobs/tune.logs``."""
    script = Path(script)
    return script.with_name(f"{script.stem}.logs")


def write_spec_file(path: str | Path, specs: Sequence[RunSpec]) -> None:
    """The runs as JSON (atomically); each entry carries its run id so that a file edited into
    different runs, or read by a version that hashes differently, is refused."""
    entries = [{"run_id": s.run_id, "spec": s.identity()} for s in specs]
    write_json(Path(path), {"version": SPEC_FILE_VERSION, "specs": entries})


def read_spec_file(path: str | Path) -> list[RunSpec]:
    """Every spec of a spec file, checked against its run id."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise SpecFileError(f"cannot read spec file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SpecFileError(f"spec file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != SPEC_FILE_VERSION:
        raise SpecFileError(f"spec file {path}: not a version {SPEC_FILE_VERSION} spec file")
    specs = []
    for i, entry in enumerate(data.get("specs", [])):
        try:
            spec = RunSpec.from_identity(entry["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecFileError(f"spec file {path}, entry {i}: {exc}") from None
        if spec.run_id != entry.get("run_id"):
            raise SpecFileError(
                f"spec file {path}, entry {i}: run id {spec.run_id} does not match the recorded "
                f"{entry.get('run_id')}; write the file again with --emit-slurm"
            )
        specs.append(spec)
    return specs


def load_spec(path: str | Path, index: int) -> RunSpec:
    """Spec ``index`` of a spec file."""
    specs = read_spec_file(path)
    if not 0 <= index < len(specs):
        raise SpecFileError(f"index {index} is outside spec file {path} (0-{len(specs) - 1})")
    return specs[index]


def run_until_done(
    spec: RunSpec,
    store: ResultStore,
    execution: Execution,
    echo: Callable[[str], None] = lambda text: None,
    poll: float = WAIT_POLL,
) -> RunOutcome:
    """``run_one``, waiting while another process holds the run (it finishes it, and this
    returns "skipped", or dies, and this takes the run over from its checkpoint)."""
    said = False
    while True:
        out = run_one(spec, store, execution)
        if out.status != "busy":
            return out
        if not said:
            echo(f"busy: {spec.label()} is running in another process; waiting")
            said = True
        time.sleep(poll)


def _task_command(
    specs: Path,
    results: Path,
    data_dir: Path | None,
    device: str | None,
    threads: int | None,
    cg_check_every: int,
    cg_compiled: bool,
) -> list[str]:
    """The array task's ``run-spec`` command line, one option per item."""
    q = shlex.quote
    command = [
        '"$PYTHON" -m bdhf_bench run-spec',
        f"--specs {q(str(specs))}",
        '--index "$SLURM_ARRAY_TASK_ID"',
        f"--output-dir {q(str(results))}",
    ]
    if data_dir is not None:
        command.append(f"--data-dir {q(str(data_dir.resolve()))}")
    if device is not None:
        command.append(f"--device {q(device)}")
    if threads is not None:
        command.append(f"--threads {int(threads)}")
    if cg_check_every != 1:
        command.append(f"--cg-check-every {int(cg_check_every)}")
    if cg_compiled:
        command.append("--cg-compile")
    command.append("--quiet")
    return command


def slurm_script(
    script: Path,
    n_runs: int,
    results: Path,
    *,
    title: str,
    then: str,
    data_dir: Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    cg_check_every: int = 1,
    cg_compiled: bool = False,
    job_name: str = "bdhf-bench",
    python: str | None = None,
    workdir: Path | None = None,
) -> str:
    """The text of an array job script whose task i runs spec i of the script's spec file."""
    if n_runs < 1:
        raise ValueError("a SLURM array needs at least one run")
    q = shlex.quote
    specs = spec_file_path(script).resolve()
    logs = logs_path(script).resolve()
    results = results.resolve()
    workdir = (workdir or Path.cwd()).resolve()
    python = python or sys.executable
    gpu = device is None or device.startswith("cuda")
    command = _task_command(specs, results, data_dir, device, threads, cg_check_every, cg_compiled)
    chunk = ""
    if n_runs > MAX_ARRAY + 1:
        chunk = (
            f"# {n_runs} tasks: more than SLURM's default MaxArraySize allows; if sbatch refuses,\n"
            f"# submit in chunks: sbatch --array=0-{MAX_ARRAY - 1} {q(str(script))}, then\n"
            f"# --array={MAX_ARRAY}-{min(2 * MAX_ARRAY, n_runs) - 1}, ... (command-line "
            "--array overrides the one below).\n"
        )
    lines = [
        "#!/bin/bash",
        f"# Written by bdhf-bench {__version__}: {title}",
        f"# {n_runs} run(s), one per array task; task i runs entry i of",
        f"#   {specs}",
        "# against the results folder",
        f"#   {results}",
        "# which every node must reach on a shared filesystem that supports flock (NFS v4, Lustre,",
        "# GPFS, BeeGFS; not a node-local disk).",
        "#",
        f"# Submit:  sbatch {q(str(script))}",
        "# Resume:  finished runs are skipped and a task killed mid-run (time limit, preemption,",
        "#          node failure) leaves a checkpoint, so submitting again (all tasks, or some:",
        f"#          sbatch --array=3,7 {q(str(script))}) does only what is left, from there.",
        "#          Two tasks (or a task and a local bdhf-bench) never train the same run at once.",
        f"# Then:    {then}",
        "#",
        "# Add --time, --partition, --account, --cpus-per-task as your cluster needs. Set PYTHON",
        "# to the interpreter of a bdhf-bench installation on the nodes if it differs from below.",
    ]
    if chunk:
        lines.append(chunk.rstrip("\n"))
    lines += [
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{n_runs - 1}",
        "#SBATCH --ntasks=1",
    ]
    if gpu:
        lines.append("#SBATCH --gres=gpu:1")
    lines += [
        f"#SBATCH --output={logs}/%A_%a.out",
        "",
        "set -euo pipefail",
        f"PYTHON=${{PYTHON:-{q(python)}}}",
        f"cd {q(str(workdir))}",
        "exec " + " \\\n    ".join(command),
        "",
    ]
    return "\n".join(lines)


def write_slurm(
    script: str | Path,
    specs: Sequence[RunSpec],
    results: str | Path,
    *,
    title: str,
    then: str,
    data_dir: Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    cg_check_every: int = 1,
    cg_compiled: bool = False,
) -> tuple[Path, Path]:
    """Write the spec file, the logs folder and the script (each file atomically; the script
    last, so a script never points at a missing spec file). Returns (script, spec file)."""
    script = Path(script)
    text = slurm_script(
        script,
        len(specs),
        Path(results),
        title=title,
        then=then,
        data_dir=data_dir,
        device=device,
        threads=threads,
        cg_check_every=cg_check_every,
        cg_compiled=cg_compiled,
    )
    spec_path = spec_file_path(script)
    write_spec_file(spec_path, specs)
    logs_path(script).mkdir(parents=True, exist_ok=True)
    with atomic_file(script) as f:
        f.write(text)
    script.chmod(0o755)
    return script, spec_path
