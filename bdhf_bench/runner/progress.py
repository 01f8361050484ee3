"""Progress of a long run on stderr: step, epoch, current loss, speed and ETA.

On a terminal one line is redrawn in place; otherwise (CI logs, files) a line is printed at most
every ``interval`` seconds. The runner calls ``update`` only when it reads the loss back anyway,
so progress costs no extra device synchronisation.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """A progress line for one run."""

    def __init__(
        self,
        label: str,
        total_steps: int | None,
        time_budget: float | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 10.0,
        start_step: int = 0,
    ) -> None:
        self.label = label
        self.total = total_steps
        self.time_budget = time_budget
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else interval
        self._last = 0.0
        self._start_step = start_step
        self._start_time = time.perf_counter()

    def update(self, step: int, epoch: float, loss: float, train_seconds: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = (step - self._start_step) / max(now - self._start_time, 1e-9)
        eta = ""
        if self.total and rate > 0:
            eta = f" ETA {_duration((self.total - step) / rate)}"
        elif self.time_budget:
            eta = f" ETA {_duration(self.time_budget - train_seconds)}"
        total = f"/{self.total}" if self.total else ""
        line = (
            f"{self.label}: step {step}{total} epoch {epoch:.2f} loss {loss:.4g} "
            f"{rate:.1f} steps/s{eta}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"{self.label}: {text}\n")
        self.stream.flush()
