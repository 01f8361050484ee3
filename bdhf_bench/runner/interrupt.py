"""Ctrl-C at a step boundary: the run keeps a checkpoint of the step it finished and says so.

A KeyboardInterrupt raised inside a step would leave the model half-updated, so the first
Ctrl-C only sets a flag; the training loop reads it after the step, writes a checkpoint and
raises ``RunInterrupted``, which the CLI reports in one line. A second Ctrl-C interrupts at once
(the checkpoint is then the last one written).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


class RunInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C after ``step``, with a checkpoint of that step."""

    def __init__(self, label: str, step: int) -> None:
        super().__init__(label, step)
        self.label = label
        self.step = step

    def __str__(self) -> str:
        return (
            f"interrupted at step {self.step} of {self.label}, checkpoint kept; "
            "rerun the same command to resume"
        )


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Inside the block, a first Ctrl-C is recorded (the yielded function returns True) rather
    than raised; outside the main thread, where no handler can be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hit = [False]
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if hit[0]:
            raise KeyboardInterrupt
        hit[0] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: hit[0]
    finally:
        signal.signal(signal.SIGINT, previous)
