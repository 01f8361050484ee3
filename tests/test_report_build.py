"""The written report: figures not blank, markdown links resolve, the HTML stands alone, the CLI."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib import image as mpimg
from test_report_helpers import P1, P2, make_run, write_baselines, write_doc, write_scenario

from bdhf_bench.report import ReportInputError, build_report, load_baselines
from bdhf_bench.report.baselines import BaselinesError
from bdhf_bench.report.cli import report_command
from bdhf_bench.report.writer import ReportWriter

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("report")
    root = write_scenario(base / "results")
    # a messy corner: a foreign file, a broken one and runner bookkeeping
    (root / "README.txt").write_text("not a result")
    (root / P1 / "broken.json").write_text("{")
    (root / "_runs").mkdir()
    (root / "_runs" / "x.json").write_text("{")
    baselines = write_baselines(base / "deepobs.csv")
    return build_report([root], base / "reports", baselines=baselines)


def _is_not_blank(data: bytes) -> None:
    pixels = mpimg.imread(io.BytesIO(data), format="png")
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 300
    rgb = (pixels[..., :3] * 255).astype(np.uint32)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert len(colours) > 10


def test_every_figure_is_written_and_not_blank(report) -> None:
    figures = sorted(p.name for p in report.written if p.suffix == ".png")
    assert figures == sorted(
        [
            f"curves_{P1}.png",
            f"curves_{P2}.png",
            f"time_to_target_{P1}.png",
            f"time_to_target_{P2}.png",
            "time_to_target_overview.png",
            "profile_updates.png",
            "profile_seconds.png",
            "profile_gradient_equivalents.png",
            f"curvature_{P1}.png",
        ]
    )
    for path in report.written:
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG_SIGNATURE)
            _is_not_blank(path.read_bytes())
    assert report.notes == []


def test_markdown_links_resolve(report) -> None:
    text = report.leaderboard.read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert len(links) >= 7
    for link in links:
        assert not link.startswith("/") and (report.leaderboard.parent / link).is_file(), link
    assert "| mnist_mlp | 2 epochs | adam |" in text


def test_html_is_self_contained_and_embeds_its_images(report) -> None:
    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.images: list[str] = []
            self.external: list[str] = []
            self.tags: set[str] = set()

        def handle_starttag(self, tag, attrs) -> None:
            self.tags.add(tag)
            attrs = dict(attrs)
            if tag == "img":
                self.images.append(attrs["src"])
            for key in ("href", "src"):
                value = attrs.get(key) or ""
                if value and not value.startswith("data:"):
                    self.external.append(value)

    page = Page()
    page.feed(report.html.read_text(encoding="utf-8"))
    page.close()
    assert {"html", "head", "body", "table", "img"} <= page.tags
    assert "script" not in page.tags and "link" not in page.tags
    assert page.external == []
    assert len(page.images) == 9
    for src in page.images:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        _is_not_blank(base64.b64decode(data))


def test_tables_are_written_as_csv(report) -> None:
    out = report.out_dir / "tables"
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 6
    assert set(pd.read_csv(out / "skipped.csv")["reason"]) == {
        "not a .json file",
        "not valid JSON (Expecting property name enclosed in double quotes, line 1)",
    }
    for name in ("settings", "runs", "evaluations", "curvature", "profile_seconds"):
        assert (out / f"{name}.csv").is_file()
    assert not list(report.out_dir.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_skipped_files_are_listed_on_the_page(report) -> None:
    assert len(report.skipped) == 2
    text = report.leaderboard.read_text()
    assert "README.txt" in text and "broken.json" in text and "x.json" not in text


def test_deepobs_baselines_are_shown_labelled_and_cited(report) -> None:
    text = report.leaderboard.read_text()
    assert "DeepOBS v1.1 TensorFlow reference runs" in text
    assert "Schneider, L. Balles, P. Hennig" in text and "ICLR 2019" in text
    assert "AdamOptimizer (adam)" in text and "MomentumOptimizer (momentum)" in text
    assert "fmnist_vae" not in text  # not a problem of this report
    shown = pd.read_csv(report.out_dir / "tables" / "deepobs_baselines.csv")
    assert list(shown["testproblem"]) == [P1, P1]


def test_baselines_loader_rejects_bad_files(tmp_path: Path) -> None:
    frame = load_baselines(write_baselines(tmp_path / "ok.csv"))
    assert list(frame["ours"]) == ["adam", "momentum", "adam"]
    assert list(frame["metric_kind"]) == ["accuracy", "accuracy", "loss"]
    with pytest.raises(BaselinesError, match="does not exist"):
        load_baselines(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("testproblem,metric\nx,test_accuracies\n")
    with pytest.raises(BaselinesError, match="lacks columns"):
        load_baselines(tmp_path / "bad.csv")


def test_nothing_loadable_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[]")
    with pytest.raises(ReportInputError, match=r"nothing loadable.*1 files skipped"):
        build_report([tmp_path], tmp_path / "out")
    with pytest.raises(ReportInputError, match="does not exist"):
        build_report([tmp_path / "missing"], tmp_path / "out")


def test_a_lone_run_without_target_still_reports(tmp_path: Path) -> None:
    write_doc(tmp_path / "r", make_run(target=None, seed=5))
    summary = build_report([tmp_path / "r"], tmp_path / "out")
    text = summary.leaderboard.read_text()
    assert "No targets recorded" in text
    assert summary.notes == []


def test_cli_prints_what_it_wrote_and_skipped(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_doc(root, make_run(seed=1, reached_seconds=2.0))
    (root / "junk.json").write_text("nope")
    result = CliRunner().invoke(
        report_command, [str(root), "--out", str(tmp_path / "rep"), "--no-baselines"]
    )
    assert result.exit_code == 0, result.output
    assert "leaderboard.md" in result.output and "index.html" in result.output
    assert "junk.json: not valid JSON" in result.output


@pytest.mark.parametrize(
    "setup", ["missing", "empty", "baselines", "out_is_file", "results_is_file"]
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, setup: str) -> None:
    args = [str(tmp_path / "missing")]
    if setup == "results_is_file":
        args = [str(write_doc(tmp_path / "r", make_run()))]
    if setup == "empty":
        args = [str(tmp_path)]
    if setup == "baselines":
        write_doc(tmp_path / "r", make_run())
        args = [str(tmp_path / "r"), "--baselines", str(tmp_path / "none.csv")]
    out = tmp_path / "out"
    if setup == "out_is_file":
        write_doc(tmp_path / "r", make_run())
        args = [str(tmp_path / "r")]
        out.write_text("a file")
    result = CliRunner().invoke(report_command, [*args, "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    if setup == "results_is_file":
        assert "is a file; give the results folder" in lines[0]


@pytest.mark.parametrize(
    "load",
    [
        "import bdhf_bench.report, bdhf_bench.report.cli",
        # the command line as the report's worker processes import it again (spawn re-runs
        # the `bdhf-bench` script's imports): torch there would cost each worker ~500 MB
        "from bdhf_bench.cli import main; main(['report', '--help'], standalone_mode=False)",
    ],
)
def test_report_and_its_command_import_no_runner_optimizer_or_torch(load: str) -> None:
    code = (
        f"import sys; {load};"
        "bad = [m for m in sys.modules if m.startswith(('bdhf_bench.runner', 'bdhf_bench.optim',"
        " 'bdhf_bench.problems', 'bdhf_bench.curvature', 'torch'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_messy_folder_gives_a_report_and_the_skipped_list(tmp_path: Path) -> None:
    from test_report_load import _messy

    root = tmp_path / "results"
    info = _messy(root)
    summary = build_report([root], tmp_path / "out")
    assert len(summary.skipped) == len(info["reasons"]) + 1
    assert len(summary.reduced) == 1
    assert summary.notes == []
    text = summary.leaderboard.read_text()
    assert "missing key status" in text and "schema_version 2" in text
    assert "| mnist_mlp | 2 epochs | adam |" in text


def test_a_second_report_removes_its_stale_figures_and_notes_mixed_targets(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_doc(root, make_run(problem="old_problem", seed=1, reached_seconds=1.0))
    first = build_report([root], tmp_path / "out")
    assert (first.out_dir / "figures" / "curves_old_problem.png").is_file()
    (first.out_dir / "figures" / "mine.png").write_bytes(b"not ours")
    for path in (root / "old_problem").rglob("*.json"):
        path.unlink()
    write_doc(root, make_run(seed=1, reached_seconds=1.0))
    write_doc(root, make_run(seed=2, target=("accuracy", "test", 0.5)))
    second = build_report([root], tmp_path / "out")
    assert not (second.out_dir / "figures" / "curves_old_problem.png").exists()
    assert (second.out_dir / "figures" / "mine.png").exists()  # not a name we give
    assert [p.name for p in second.removed] == [  # nobody reached the target this time
        "curves_old_problem.png",
        "profile_gradient_equivalents.png",
        "profile_seconds.png",
        "profile_updates.png",
        "time_to_target_old_problem.png",
        "time_to_target_overview.png",
    ]
    assert any("2 different targets" in note for note in second.notes)


def test_figures_drawn_in_worker_processes_are_the_same_files(tmp_path: Path) -> None:
    """A large report draws its figures in a pool: the same pages and PNG bytes as drawn in
    turn."""
    from test_report_helpers import write_scenario

    root = write_scenario(tmp_path / "results")
    here = build_report([root], tmp_path / "here", figure_workers=1)
    pool = build_report([root], tmp_path / "pool", figure_workers=2)
    names = sorted(p.relative_to(here.out_dir).as_posix() for p in here.written)
    assert names == sorted(p.relative_to(pool.out_dir).as_posix() for p in pool.written)
    for name in names:
        assert (here.out_dir / name).read_bytes() == (pool.out_dir / name).read_bytes(), name
    assert pool.notes == here.notes


@pytest.mark.parametrize("index_name", [None, "problem"])
def test_csv_tables_are_streamed_as_the_same_bytes_pandas_writes(
    tmp_path: Path, index_name: str | None
) -> None:
    # the writer streams a table to its file (a 30,000-run folder's evaluations are ~250 MB of
    # text); the file must hold exactly pandas' own text: UTF-8, the index only when named
    frame = pd.DataFrame(
        {"name": ["a,b", 'é "quoted"', None], "value": [1.5, np.nan, 3.0], "n": [1, 2, 3]},
        index=pd.Index(["x", "y", "z"], name=index_name),
    )
    writer = ReportWriter(tmp_path)
    rel = writer.csv("t", frame)
    expected = frame.to_csv(index=index_name is not None).encode("utf-8")
    assert (tmp_path / rel).read_bytes() == expected
    assert writer.written == [tmp_path / rel]
    assert not list(tmp_path.rglob("*.tmp"))
