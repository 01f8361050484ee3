"""The page as a reader sees it, in a real headless browser (Chromium): the screenshot is not
blank and shows the figures' colours, every embedded figure decodes at its PNG size, and the
headline is there, first. Skipped, with the reason, where no Chromium is installed (.ci/run
installs one when it can)."""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from test_report_helpers import write_scenario

from bdhf_bench.report import build_report
from bdhf_bench.report.figures import palette

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# appended to a copy of the page (the page itself has no script): each image's decoded size
PROBE = (
    "<script>window.addEventListener('load', () => { const p = document.createElement('pre');"
    "p.id = 'decoded'; p.textContent = Array.from(document.images).map("
    "i => i.naturalWidth + 'x' + i.naturalHeight).join(' '); document.body.appendChild(p); });"
    "</script></body>"
)


def _browser() -> str:
    for name in (os.environ.get("BDHF_BROWSER", ""), *BROWSERS):
        path = shutil.which(name) if name else None
        if path:
            return path
    pytest.skip(
        "no headless browser installed (looked for chromium, chromium-browser, google-chrome; "
        "or set BDHF_BROWSER): the page was not checked in a browser"
    )


def _run(browser: str, profile: Path, *args: str) -> str:
    done = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (independent of any image library)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    browser = _browser()
    base = tmp_path_factory.mktemp("browser")
    summary = build_report([write_scenario(base / "results")], base / "out")
    return browser, base, summary


def test_screenshot_is_not_blank_and_shows_the_figures(page) -> None:
    browser, base, summary = page
    shot = base / "shot.png"
    _run(
        browser,
        base / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,2600",
        summary.html.as_uri(),
    )
    pixels = mpimg.imread(io.BytesIO(shot.read_bytes()), format="png")
    assert pixels.shape[:2] == (2600, 1280)
    rgb = np.round(pixels[..., :3] * 255).astype(np.int64)
    white = (rgb == 255).all(axis=-1).mean()
    assert 0.2 < white < 0.97  # a page, not a blank (or black) one
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert len(colours) > 200
    # the figures are drawn: the optimizers' own line colours are on screen
    for name, colour in palette(["adam", "bdhf", "hf"]).items():
        target = np.round(np.asarray(colour) * 255)
        close = (np.abs(rgb - target).max(axis=-1) <= 3).sum()
        assert close > 50, f"{name}'s colour {target} is not on the screenshot"


def test_headline_comes_first_and_every_figure_decodes(page) -> None:
    browser, base, summary = page
    probe = base / "out" / "probe.html"
    probe.write_text(summary.html.read_text(encoding="utf-8").replace("</body>", PROBE, 1))
    dom = _run(
        browser,
        base / "profile-dom",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    )
    headings = re.findall(r"<h2>([^<]*)</h2>", dom)
    assert headings[:2] == ["Headline", "Leaderboard"]
    headline = dom.split("<h2>Headline</h2>", 1)[1].split("<h2>", 1)[0]
    assert "Fewest training seconds to target: bdhf, 2 s, against hf's 3 s" in headline
    assert "hf: not reached: best test accuracy 0.5 after 16 updates" in headline
    decoded = re.search(r'<pre id="decoded">([^<]*)</pre>', dom)
    assert decoded, "the probe did not run"
    expected = [
        "{}x{}".format(*_png_size(p.read_bytes())) for p in summary.written if p.suffix == ".png"
    ]
    assert sorted(decoded.group(1).split()) == sorted(expected)


# the top of the winner table and of the time-to-target overview, in a 1280-wide window
FIRST_SCREEN_PROBE = (
    "<script>window.addEventListener('load', () => { const p = document.createElement('pre');"
    "p.id = 'tops'; const table = document.querySelector('table');"
    "const bars = Array.from(document.images).find(i => i.alt.startsWith('every problem'));"
    "p.textContent = [table, bars].map(e => e ? Math.round(e.getBoundingClientRect().top + "
    "Math.min(200, e.getBoundingClientRect().height)) : -1).join(' ');"
    "document.body.appendChild(p); });</script></body>"
)


def test_the_first_screen_holds_the_winner_grid_and_the_bars(page) -> None:
    """In a 1280 x 1200 window the winner grid's first rows and the first 200 pixels of the
    time-to-target bars are on screen before any scrolling."""
    browser, base, summary = page
    probe = base / "out" / "first.html"
    probe.write_text(
        summary.html.read_text(encoding="utf-8").replace("</body>", FIRST_SCREEN_PROBE, 1)
    )
    dom = _run(
        browser,
        base / "profile-first",
        "--window-size=1280,1200",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    )
    tops = re.search(r'<pre id="tops">([^<]*)</pre>', dom)
    assert tops, "the probe did not run"
    table, bars = (int(v) for v in tops.group(1).split())
    assert 0 < table < 1200 and 0 < bars <= 1200, (table, bars)
    first_table = dom.split("<table", 1)[1].split("</table>", 1)[0]
    assert "fewest updates to target" in first_table
