"""Injected time: the clock and sleep types the policies take, and a fake clock for tests.

Theory of operation: every policy that depends on time (retry delays, rate limits, token
refresh) takes the current time as an argument or calls an injected ``clock`` callable, and
every shell that waits calls an injected ``sleep``. Production code passes
:func:`time.monotonic` (intervals) or :func:`time.time` (POSIX instants such as token expiry)
with :func:`time.sleep` / :func:`asyncio.sleep`; tests pass a :class:`FakeClock`, whose
``sleep`` and ``asleep`` return at once after moving the clock forward, so a test of a 60-second
window runs in microseconds (the idea of trio's ``MockClock``).

The clients take one injected ``clock`` (monotonic) and one ``sleep``. The few POSIX instants a
client needs (token expiry, request signatures) come from :func:`wall_clock`: the real
``time.time`` under the real clock, and under an injected clock the POSIX time when the client
was made plus how far that clock has moved since, so a fake clock drives token lifetimes too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

__all__ = ["AsyncSleep", "Clock", "FakeClock", "Sleep", "wall_clock"]

Clock = Callable[[], float]
"""A source of the current time in seconds (``time.monotonic`` or ``time.time``)."""

Sleep = Callable[[float], None]
"""A blocking sleep for a number of seconds (``time.sleep``)."""

AsyncSleep = Callable[[float], Awaitable[None]]
"""An awaitable sleep for a number of seconds (``asyncio.sleep``)."""


def wall_clock(clock: Clock | None) -> Clock:
    """The POSIX clock that goes with the monotonic ``clock`` (``None``: the real one): the real
    ``time.time`` for the real clock, else the POSIX time of this call plus how far ``clock``
    has moved since."""
    if clock is None or clock is time.monotonic:
        return time.time
    offset = time.time() - clock()
    return lambda: offset + clock()


class FakeClock:
    """Manual time for tests: a clock callable whose sleeps advance it instead of waiting.

    ``clock()`` returns the current fake time; :meth:`advance` moves it forward; :meth:`sleep`
    (a :data:`Sleep`) and :meth:`asleep` (an :data:`AsyncSleep`) advance it by their argument
    and return at once (``asleep`` yields to the event loop once, so other tasks run). Every
    requested sleep is recorded in :attr:`sleeps`. Safe to share between threads.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        """Every duration passed to :meth:`sleep` or :meth:`asleep`, in call order."""

    def __call__(self) -> float:
        """The current fake time."""
        with self._lock:
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance the clock by ``max(seconds, 0)``; never blocks."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(seconds, 0.0)

    async def asleep(self, seconds: float) -> None:
        """Like :meth:`sleep`, then yield to the event loop once (a cancellation point)."""
        self.sleep(seconds)
        await asyncio.sleep(0)
