"""Progress of a long run on stderr: step, epoch, last loss, speed and ETA, and a step that is
taking long saying so while it runs.

On a terminal one line is redrawn in place; otherwise (CI logs, files) a line is printed at most
every ``interval`` seconds. The runner calls ``update`` after every step with the training time
it has without a device synchronisation; the loss shown is the last one read back (the runner
reads losses back every few steps), so progress costs no synchronisation. A step running for
longer than ``slow_after`` seconds is reported by a watcher thread: live on a terminal, every
``interval`` seconds in a log, so a 20-minute step is never silent.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

LOG_INTERVAL = 10.0
"""Seconds between lines in a log (not a terminal); at most 30 by the issue's promise."""
TTY_INTERVAL = 0.2
SLOW_STEP = 5.0
"""A step running longer than this reports itself."""
ESTIMATE_AFTER = (3, 2.0)
"""Steps and seconds after which a run's whole length is estimated, once."""
LONG_RUN = 60.0
"""A run estimated to train longer than this says so, with how to shorten it."""


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """A progress line for one run; ``close`` when the run ends."""

    def __init__(
        self,
        label: str,
        total_steps: int | None,
        time_budget: float | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float | None = None,
        start_step: int = 0,
        slow_after: float = SLOW_STEP,
    ) -> None:
        self.label = label
        self.total = total_steps
        self.time_budget = time_budget
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if interval is None:
            interval = TTY_INTERVAL if self.tty else LOG_INTERVAL
        self.interval = interval
        self.slow_after = slow_after
        self._last = 0.0
        self._start_step = start_step
        self._start_time = time.perf_counter()
        self._estimated = False
        self.loss: float | None = None
        """The last mini-batch loss read back (shown until the next one)."""
        self._lock = threading.Lock()
        self._activity: str | None = None
        """What runs now ("step 7/50", "evaluation at step 25"), None between steps."""
        self._started = 0.0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if enabled:
            self._watcher = threading.Thread(target=self._watch, daemon=True, name="progress")
            self._watcher.start()

    # -- the runner's calls ----------------------------------------------------------------------

    def restart(self, total_steps: int | None, start_step: int) -> None:
        """Training starts (or resumes) at ``start_step`` of ``total_steps``: speed and ETA
        count from here."""
        self.total = total_steps
        self._start_step = start_step
        self._start_time = time.perf_counter()

    def begin(self, activity: str) -> None:
        """``activity`` starts now (reported while it runs, once it is slow)."""
        self._started = time.perf_counter()
        self._activity = activity

    def begin_step(self, step: int) -> None:
        """Step ``step`` (1-based) starts now."""
        self.begin(f"step {step}/{self.total}" if self.total else f"step {step}")

    def end(self) -> None:
        self._activity = None

    def update(self, step: int, epoch: float, loss: float | None, train_seconds: float) -> None:
        """After step ``step``; ``loss`` None when it was not read back (the last one shows)."""
        if loss is not None:
            self.loss = loss
        if not self.enabled:
            return
        now = time.perf_counter()
        self._estimate(step, now)
        if now - self._last < self.interval:
            return
        rate = (step - self._start_step) / max(now - self._start_time, 1e-9)
        eta = ""
        if self.total and rate > 0:
            eta = f" ETA {_duration((self.total - step) / rate)}"
        elif self.time_budget:
            eta = f" ETA {_duration(self.time_budget - train_seconds)}"
        total = f"/{self.total}" if self.total else ""
        loss_text = "" if self.loss is None else f" loss {self.loss:.4g}"
        speed = f"{rate:.1f} steps/s" if rate >= 0.1 else f"{1 / max(rate, 1e-9):.0f} s/step"
        self._write(f"step {step}{total} epoch {epoch:.2f}{loss_text} {speed}{eta}", now)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self.tty:
                self.stream.write("\r\033[K")
            self.stream.write(f"{self.label}: {text}\n")
            self.stream.flush()

    def close(self) -> None:
        """Stop the watcher (and end a terminal's redrawn line)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
            if self.tty and self._last:
                with self._lock:
                    self.stream.write("\n")
                    self.stream.flush()

    def _estimate(self, step: int, now: float) -> None:
        """Once the first steps are timed: a line when the whole run will take minutes."""
        done, elapsed = step - self._start_step, now - self._start_time
        if self._estimated or not self.total or done < ESTIMATE_AFTER[0]:
            return
        if elapsed < ESTIMATE_AFTER[1] and done < self.total - self._start_step:
            return
        self._estimated = True
        left = (self.total - step) * elapsed / done
        if elapsed + left > LONG_RUN:
            self.message(
                f"about {_duration(elapsed + left)} for {self.total - self._start_step} steps at "
                "the first steps' pace (--steps or --epochs shorten it; Ctrl-C keeps a checkpoint)"
            )

    # -- output ----------------------------------------------------------------------------------

    def _write(self, text: str, now: float) -> None:
        with self._lock:
            self._last = now
            line = f"{self.label}: {text}"
            if self.tty:
                self.stream.write("\r\033[K" + line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def _watch(self) -> None:
        """Report the running step once it is slow: every second on a terminal (the elapsed
        time counts up), every ``interval`` in a log."""
        every = 1.0 if self.tty else self.interval
        tick = min(1.0, every, self.slow_after) / 2
        while not self._stop.wait(tick):
            activity, started = self._activity, self._started
            if activity is None:
                continue
            now = time.perf_counter()
            running = now - started
            if running < self.slow_after or now - self._last < every:
                continue
            self._write(f"{activity} running for {_duration(running)}", now)
