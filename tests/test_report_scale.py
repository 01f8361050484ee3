"""The report benchmark's memory reading: a process tree's peak, workers included."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from bdhf_bench.benchmarks.report_scale import TreeMemory, _status_mb

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

HOLD = textwrap.dedent(
    """
    import subprocess, sys, time
    if sys.argv[1] == "parent":
        child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child", sys.argv[2]])
        child.wait()
    else:
        block = bytearray(300 * 2**20)
        block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page: resident, not reserved
        time.sleep(0.5)
    """
)


def test_tree_memory_counts_a_grandchild_allocation() -> None:
    # the parent itself holds ~10 MB; a grandchild it starts holds 300 MB for half a second:
    # the tree's peak must see the grandchild's 300 MB, which the parent's own peak never does
    parent = subprocess.Popen([sys.executable, "-c", HOLD, "parent", HOLD])
    with TreeMemory(parent.pid, every=0.01) as tree:
        parent.wait()
    assert 300 <= tree.peak_mb < 400


def test_status_reads_this_process_and_nothing_for_a_gone_one() -> None:
    assert _status_mb("self", "VmHWM") >= _status_mb("self", "VmRSS") > 10
    assert _status_mb(2**22 + 12345, "VmRSS") == 0.0
