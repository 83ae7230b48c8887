"""How late the serving event loop runs, and — when asked — where it was while it ran late.

Why: a relay's chunks are late when its one event loop is busy elsewhere (a burst of stream
starts, a long callback) or waits for the GIL held by another thread (the store's, the
metrics flush). The process's mean CPU does not show this: ``bench/compare`` saw servers fail
a 50 ms p99 lateness criterion at a mean CPU of 38 %. What shows it is the loop's own
lateness, measured from inside.

:class:`LoopLag` schedules a callback every :data:`INTERVAL` seconds and observes how much
later than due it ran in ``wenxin_event_loop_lag_seconds`` (``/metrics``): a healthy server
keeps nearly every observation under 5 ms; a tail over 50 ms means every stream's chunks wait
that long. The cost is one timer callback per interval (20 a second: a few microseconds
each).

**Stall reports** (``stall_report`` seconds, ``WENXIN_STALL_REPORT``; 0, the default, is off):
a daemon thread checks every quarter of that threshold whether the loop's callback is overdue
by more than the threshold, and if so takes the loop thread's Python stack
(``sys._current_frames``) — one sample per check while the stall lasts, so a longer stall
weighs more. Every :data:`REPORT_INTERVAL` seconds with stalls it logs one warning: how many,
the worst, and the stacks the loop was seen in most often, innermost frame first. A loop
waiting for the GIL shows the frame where it let go of it (a socket call, a lock), so a
report that names such a frame points at another thread. It is a diagnosis (the thread's
checks cost some CPU at a small threshold), not a way to serve.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from ._metrics import Histogram, Metrics

__all__ = ["INTERVAL", "LAG_BUCKETS", "REPORT_INTERVAL", "LoopLag", "stack_of"]

INTERVAL = 0.05
"""Seconds between two of the loop's lateness samples."""

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Bounds (s) of ``wenxin_event_loop_lag_seconds``."""

REPORT_INTERVAL = 10.0
"""Seconds between two stall reports (none when no stall happened)."""

STACK_DEPTH = 8
"""Frames kept of a stalled loop's stack, innermost first."""

logger = logging.getLogger("wenxin_stream.server")


def stack_of(frame: FrameType | None, depth: int = STACK_DEPTH) -> str:
    """``frame`` and its callers, innermost first, as ``file:function:line`` joined by `` < ``
    (at most ``depth`` frames)."""
    parts: list[str] = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        parts.append(f"{os.path.basename(code.co_filename)}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(parts) if parts else "(no Python frame)"


class LoopLag:
    """The loop's lateness in ``/metrics`` and, with ``stall_report`` > 0, stall reports
    (see the module docstring)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        interval: float = INTERVAL,
        stall_report: float = 0.0,
        report_interval: float = REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or stall_report < 0 or report_interval <= 0:
            raise ValueError("interval and report_interval must be > 0, stall_report >= 0")
        self.interval = interval
        self.stall_report = stall_report
        self.report_interval = report_interval
        self._clock = clock
        self.lag = Histogram(
            "wenxin_event_loop_lag_seconds",
            "How much later than due the event loop ran a timer (sampled every "
            f"{interval:g} s): what every stream's chunks waited then.",
            LAG_BUCKETS,
        )
        metrics.register(self.lag)
        self._lag = self.lag.labels()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._loop_thread = 0
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        # the watchdog thread's own state (only it touches these)
        self.stalls = 0
        """Stalls seen by the watchdog since start."""
        self._samples: collections.Counter[str] = collections.Counter()
        self._window_stalls = 0
        self._window_worst = 0.0
        self._stalled_due: float | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start sampling ``loop`` (call from the loop's thread); start the watchdog thread
        when stall reports are on."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._schedule()
        if self.stall_report > 0:
            self._watchdog = threading.Thread(
                target=self._watch, name="wenxin-stall-watch", daemon=True
            )
            self._watchdog.start()

    def stop(self) -> None:
        """Stop sampling and the watchdog (logging a last report of any stalls)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
            self._watchdog = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._clock() + self.interval
        self._timer = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._lag.observe(max(0.0, self._clock() - self._due))
        self._schedule()

    # the watchdog thread

    def _watch(self) -> None:
        step = self.stall_report / 4
        next_report = self._clock() + self.report_interval
        while not self._stop.wait(step):
            self.check()
            if self._clock() >= next_report:
                self.report()
                next_report = self._clock() + self.report_interval
        self.report()

    def check(self) -> bool:
        """One watchdog check: whether the loop is overdue by more than ``stall_report``;
        if so its stack is sampled (and a new stall counted)."""
        due = self._due
        late = self._clock() - due
        if late <= self.stall_report:
            return False
        if self._stalled_due != due:  # a new stall (the loop has run its timer since)
            self._stalled_due = due
            self.stalls += 1
            self._window_stalls += 1
        self._window_worst = max(self._window_worst, late)
        frame = sys._current_frames().get(self._loop_thread)
        self._samples[stack_of(frame)] += 1
        return True

    def report(self, top: int = 5) -> str | None:
        """Log (and return) the stalls seen since the last report, ``None`` when none."""
        if not self._window_stalls:
            return None
        samples, self._samples = self._samples, collections.Counter()
        total = sum(samples.values())
        lines = [
            f"event loop stalled {self._window_stalls} time(s) over "
            f"{self.stall_report * 1000:g} ms (worst {self._window_worst * 1000:.0f} ms); "
            f"where it was ({total} samples):"
        ]
        for stack, count in samples.most_common(top):
            lines.append(f"  {count:>4}  {stack}")
        self._window_stalls, self._window_worst = 0, 0.0
        text = "\n".join(lines)
        logger.warning("%s", text)
        return text
