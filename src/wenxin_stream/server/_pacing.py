"""Admission pacing: a burst of stream starts is let in a slice at a time.

Theory of operation
===================

A stream start is ~1 ms of the event loop's CPU, most of it run straight through until its
first real wait. When hundreds of requests arrive together, uvicorn hands all of them to the
loop in one go, and without pacing each runs its start before the loop looks at its sockets
again: running streams' chunks wait behind the whole burst (a few hundred starts: hundreds of
milliseconds).

It is **on by default** with a slice of :data:`DEFAULT_SLICE` (``start_slice``,
``--start-slice``, ``WENXIN_START_SLICE``; 0 turns it off). :meth:`StartPacer.turn` is awaited
at the top of every start (``Answers.ask`` and ``Answers.complete``: the SSE, WebSocket and
OpenAI routes). Starts are admitted in
**slices**: the first start opens a slice, and more are admitted at once while
:attr:`~StartPacer.slice` seconds (wall time, perf_counter) have not passed since it opened.
The slice closes on the loop's next iteration (``call_soon``): by then the loop has polled its
sockets and running streams had their turn. Starts that did not fit queue in arrival order.
When a slice closes it wakes the head of the queue — twice as many as it admitted (at least
one), so a queue of hundreds costs a few wake-ups per slice, not hundreds: the first of them
opens the next slice, those that fit in its time go on, and those that do not are first in
line at the next close. So at most one slice of start work runs between two looks at the
sockets, and an idle server admits every start at once (the first of a slice never waits: one
``call_soon`` per slice is the whole cost).

A start that finds others waiting joins the line and, when no close is due, has one scheduled
(so a queue is woken even with no slice open); that close opens no slice: the starts it wakes
open the next one themselves. Until 2026-12-06 it did open one, an empty slice that admitted
nobody: the woken starts went back in line behind it and its close, having admitted none,
woke one. With a newcomer at every turn of the loop a queue then drained a start a turn or
not at all (a test holds the fix: 32 queued starts are in within a dozen turns), and at
2,000 ERNIE-paced streams, with no burst, starts waited 100–250 ms (``bench/PROFILE.md``,
2026-12-06).

Nothing is refused here: the connection caps (``_http_limits``) bound how much can queue, and
a start that waits is cancelled with its request (one woken and cancelled before its turn
passes the turn on). The price: when starts alone keep the loop busy, about half of them wait
a turn, and the start's CPU measured ×1.0–1.24 of the same tree without pacing
(``bench/PROFILE.md``, "Stream starts"). What it buys, measured on a quiet machine
(``bench/start_cost.py --mode burst``: 250 ERNIE-paced streams running, 250 more started at
once): the running streams' worst one-second p99 lateness after the burst 33–41 ms with
pacing (three rounds) against 85–131 ms without (seven) — the burst target of issue 15 (≤ 50 ms)
met only with it — for the same server CPU. Hence on by default.

**Metrics** (:meth:`StartPacer.register`, ``wenxin serve`` with pacing on):
``wenxin_paced_starts_total{turn}`` counts the starts admitted at once (``at_once``) and
after waiting for a later slice (``waited``); ``wenxin_start_pacer_wait_seconds`` is how long
each of the latter waited (first try to admission) — what pacing added to their time to first
token. A start that goes on at once pays nothing for them (its count is read at the scrape),
and a start cancelled while it waits is in neither.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from time import perf_counter

from ._metrics import Counter, Histogram, Metrics, Series

__all__ = ["DEFAULT_SLICE", "WAIT_BUCKETS", "StartPacer"]

DEFAULT_SLICE = 0.004
"""Seconds of start work admitted between two looks of the loop at its sockets (what
``bench/start_cost.py`` measured; the server's ``start_slice`` sets it)."""

WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Bounds (s) of ``wenxin_start_pacer_wait_seconds``."""


class StartPacer:
    """Admits stream starts a slice at a time (see the module docstring)."""

    __slots__ = (
        "_close_due",
        "_count",
        "_open",
        "_queue",
        "_retry",
        "_until",
        "_waits",
        "admitted",
        "slice",
        "wait",
    )

    def __init__(self, slice_seconds: float = DEFAULT_SLICE) -> None:
        self.slice = slice_seconds
        self._open = False
        """A slice is open: starts are admitted into it until ``_until``."""
        self._close_due = False
        """A :meth:`_close` is scheduled (on the loop's next turn)."""
        self._until = 0.0
        self._count = 0  # admitted in the open slice
        self._queue: deque[asyncio.Future[None]] = deque()
        self._retry: list[asyncio.Future[None]] = []  # woken, did not fit: first at the next close
        self.admitted = 0
        """Starts admitted so far."""
        self.wait = Histogram(
            "wenxin_start_pacer_wait_seconds",
            "How long a paced stream start waited for its turn (first try to admission), "
            "for the starts that did not go on at once.",
            WAIT_BUCKETS,
        )
        self._waits = self.wait.labels()

    @property
    def waited(self) -> int:
        """Starts admitted after waiting for a later slice (a start cancelled while it
        waited is not counted)."""
        return self._waits.count

    def register(self, metrics: Metrics) -> None:
        """Show the pacer's counts in ``metrics`` (module docstring, "Metrics")."""
        metrics.register(_PacedStarts(self))
        metrics.register(self.wait)

    async def turn(self) -> None:
        """Return when this start may go on (at once unless a burst is being paced)."""
        if not self._queue and not self._retry and self._admit():
            return
        began = perf_counter()
        loop = asyncio.get_running_loop()
        line: deque[asyncio.Future[None]] | list[asyncio.Future[None]] = self._queue
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            line.append(waiter)
            self._close_soon()  # so that something wakes the queue, next turn
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in line:
                    line.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._close_soon()  # woken, then cancelled before its turn: pass it on
                raise
            if self._admit():
                self._waits.observe(perf_counter() - began)
                return
            line = self._retry

    def _admit(self) -> bool:
        now = perf_counter()
        if not self._open:
            self._open = True
            self._until = now + self.slice
            self._count = 0
            self._close_soon()
        elif now >= self._until:
            return False
        self._count += 1
        self.admitted += 1
        return True

    def _close_soon(self) -> None:
        """Have :meth:`_close` run on the loop's next turn, unless it already will: every
        open slice, and every queue, has its close due."""
        if not self._close_due:
            self._close_due = True
            asyncio.get_running_loop().call_soon(self._close)

    def _close(self) -> None:
        self._open = self._close_due = False
        queue = self._queue
        if self._retry:
            queue.extendleft(reversed(self._retry))
            self._retry = []
        wake = max(1, 2 * self._count)
        self._count = 0
        while queue and wake:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                wake -= 1


class _PacedStarts(Counter):
    """``wenxin_paced_starts_total{turn}``: the pacer's starts admitted at once and after a
    wait, read when the metrics are rendered (or flushed, in multiprocess mode: summed over
    the workers, as every counter)."""

    def __init__(self, pacer: StartPacer) -> None:
        super().__init__(
            "wenxin_paced_starts_total",
            "Stream starts admitted by the admission pacer, by turn: at once, or after "
            "waiting for a later slice.",
            ("turn",),
        )
        self._pacer = pacer

    def series(self) -> Iterator[Series]:
        """The two samples, read now."""
        waited = self._pacer.waited
        yield self.name, self.labelnames, ("at_once",), float(self._pacer.admitted - waited)
        yield self.name, self.labelnames, ("waited",), float(waited)
