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
OpenAI routes). Each turn of the loop gets one **slice**: :attr:`~StartPacer.slice` seconds of
start work, counted in starts at what a start was last measured to cost (:data:`START_COST`
until then: two starts in the default slice; never less than :data:`MIN_START_COST`: eight),
and open for no more than :data:`MAX_SLICES` slices of wall time.

- **No queue.** The first start opens a slice and goes on; more go on at once while the slice
  has room. A close, scheduled with ``call_soon``, ends the slice on the loop's next turn: by
  then the loop has polled its sockets and running streams had their turn. An idle server
  admits every start at once (one ``call_soon`` per slice is the whole cost).
- **A queue.** Starts that find no room, or others waiting, queue in arrival order (and have a
  close scheduled, so a queue is always woken). A close **grants** the head of the queue the
  next turn's slice: it wakes as many as the slice holds, and the woken go on without asking
  again. The close that granted schedules the next close at once: it runs right after the
  woken starts, on the next turn, so while a queue lasts every turn has its slice, and that
  close measures what the woken starts cost, from the first one's going on to it (nothing
  else runs in between): the cost a slice is counted in (an even mean with the last
  measure).

Until 2026-12-06 a slice was 4 ms of wall time from its opening and a woken start asked
again: at the edge of the server's capacity the wall time held other work (chunks relayed
between two starts of a turn), so a slice let one start in where it had room for four, the
woken that did not fit went back in line, and while a queue lasted only every other turn had
a slice (the close ran a turn after the slice, the woken a turn after the close). A held
start makes all its chunks late by its wait: at 1,625 ERNIE-paced streams, the edge of that
run's machine, the waits' p99 reached 250–500 ms then and stayed within tens of milliseconds
now in all but one run of twelve, with as many runs passing or more (``bench/PROFILE.md``,
2026-12-06, late morning). A slice a turn of 4 ms, or one
that grew with the wait at the head of the queue, made a burst's running streams later than
the old pacer did; half of it, 2 ms a turn, made them less late.

Nothing is refused here: the connection caps (``_http_limits``) bound how much can queue, and
a start that waits is cancelled with its request (one woken and cancelled before its turn
leaves its place in the slice unused; the next close comes anyway). What pacing buys, measured
with ``bench/start_cost.py --mode burst`` (250 ERNIE-paced streams running, 250 more started
at once): the running streams' worst one-second p99 lateness after the burst stays under the
50 ms of issue 15, which it did not without pacing (``bench/PROFILE.md``, "Stream starts"
and 2026-12-06, late morning).

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

__all__ = [
    "DEFAULT_SLICE",
    "MAX_SLICES",
    "MIN_START_COST",
    "START_COST",
    "WAIT_BUCKETS",
    "StartPacer",
]

DEFAULT_SLICE = 0.002
"""Seconds of start work admitted in a turn of the loop, between two looks at its sockets
(what ``bench/start_cost.py --mode burst`` measured; the server's ``start_slice`` sets it)."""

START_COST = 0.001
"""What a start is taken to cost (s of the loop's time up to its first real wait) until the
pacer has measured one (a whole start is ~0.9 ms of CPU: ``bench/PROFILE.md``, "Stream
starts")."""

MIN_START_COST = START_COST / 4
"""The least a start is taken to cost, whatever was measured. Up to its first real wait a
start measured 0.13–0.91 ms in a burst, 0.21 ms at the median (the rest of its work comes
after), and likely less where many wait on one thing (a key being looked up): counted at
that, a slice would let a whole burst in at once."""

MAX_SLICES = 4
"""The most wall time a slice is open for, in slices, whatever its count: starts that cost
more than they were measured at are still cut off."""

WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Bounds (s) of ``wenxin_start_pacer_wait_seconds``."""


class StartPacer:
    """Admits stream starts a slice at a time (see the module docstring)."""

    __slots__ = (
        "_close_due",
        "_cost",
        "_count",
        "_open",
        "_opened",
        "_queue",
        "_ran",
        "_ran_since",
        "_waits",
        "admitted",
        "max_slices",
        "slice",
        "wait",
    )

    def __init__(self, slice_seconds: float = DEFAULT_SLICE, max_slices: int = MAX_SLICES) -> None:
        self.slice = slice_seconds
        self.max_slices = max_slices
        self._open = False
        """A slice is open for this turn of the loop: ``_count`` starts have gone on in it."""
        self._opened = 0.0
        self._count = 0
        self._close_due = False
        """A :meth:`_close` is scheduled (on the loop's next turn)."""
        self._cost = START_COST
        """What a start costs, as last measured (s)."""
        self._queue: deque[tuple[float, asyncio.Future[None]]] = deque()
        """The waiting starts, in arrival order: (when each first tried, its waiter)."""
        self._ran = 0
        """Starts granted by the last close that have gone on (this turn)."""
        self._ran_since = 0.0
        """When the first of them went on."""
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

    @property
    def room(self) -> int:
        """How many starts a slice holds, at their last measured cost (at least one)."""
        return max(1, int(self.slice / self._cost))

    def register(self, metrics: Metrics) -> None:
        """Show the pacer's counts in ``metrics`` (module docstring, "Metrics")."""
        metrics.register(_PacedStarts(self))
        metrics.register(self.wait)

    async def turn(self) -> None:
        """Return when this start may go on (at once unless a burst is being paced)."""
        if not self._queue and self._admit():
            return
        began = perf_counter()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        place = (began, waiter)
        self._queue.append(place)
        self._close_soon()  # so that a close wakes the queue, next turn
        try:
            await waiter
        except asyncio.CancelledError:
            if place in self._queue:  # still in line (a woken one's place just goes unused)
                self._queue.remove(place)
            raise
        now = perf_counter()
        if not self._ran:
            self._ran_since = now
        self._ran += 1
        self.admitted += 1
        self._waits.observe(now - began)

    def _admit(self) -> bool:
        now = perf_counter()
        if not self._open:
            self._open = True
            self._opened = now
            self._count = 0
            self._close_soon()
        elif self._count >= self.room or now - self._opened >= self.max_slices * self.slice:
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
        self._close_due = False
        now = perf_counter()
        ran = self._ran
        if ran:  # the starts the last close woke went on just before this close: their cost
            cost = self._cost + ((now - self._ran_since) / ran - self._cost) / 2
            self._cost = max(cost, MIN_START_COST)
            self._ran = 0
        queue = self._queue
        granted, grant = 0, self.room  # the head of the queue gets the next turn's slice
        while queue and granted < grant:
            waiter = queue.popleft()[1]
            if not waiter.done():  # (a cancelled one, its task not yet told: dropped)
                waiter.set_result(None)
                granted += 1
        self._open = bool(granted or ran)
        if self._open:  # the rest of this turn holds the starts that ran in it
            self._opened = now
            self._count = ran
            self._close_soon()  # after the woken: it measures them and wakes the next


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
