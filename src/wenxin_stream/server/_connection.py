"""The connection machinery every stream of the server runs on: the outlet, the heartbeat, the
watcher, and the race between them and the relay.

Theory of operation
===================

A streaming connection (SSE, the OpenAI stream, a WebSocket) is a race with one owner per
resource: the first to finish cancels the other. The SSE and OpenAI streams run the relay loop
in the request's own task (:func:`follow`), watched by the request's
:class:`~wenxin_stream._asgi.DisconnectSignal` and one timer (:class:`_Guard`): no other task
exists for the connection. Our own HTTP protocol (``_http_limits``) fires the signal when the
connection is lost; under another ASGI server a task waiting in ``receive`` for
``http.disconnect`` fires it. A WebSocket races tasks (:func:`wenxin_stream._aio.race`)::

    one client connection (SSE) = the request's task; the first to finish stops the other:

        ┌── relay (request task)┐  ┌── watcher (no task) ──────────────────────────────────┐
        │ next_batch()          │  │ the signal (connection lost) and a timer — `: ping`   │
        │ one write per batch   │  │ after each ping_interval of silence, a write stuck    │
        │ returns at `end`      │  │ for stall_timeout cuts; either cancels the request's  │
        │                       │  │ task (the cancellation withdrawn afterwards)          │
        └───────────────────────┘  └───────────────────────────────────────────────────────┘
           finished: complete the response │ gone / stalled: detach (→ grace timer)
           leaving always closes the subscription (finally: relay.detach)

The relay loop belongs to each route (it knows its framing); what they share is here:

- :class:`Outlet`, the write side: when it last wrote and whether a write is stuck. It writes
  past the app's :class:`~wenxin_stream._asgi.TrackingSend` (the status is known by then): one
  call fewer per chunk. :meth:`Outlet.write_now` is the write of the relay's direct hand-over
  (``_relay.Subscription``): started from the generation's side, it runs the server's
  ``send`` at once up to its first wait (there is none unless the client reads slower than
  we write: then the rest of that write runs as a task, and the next write waits for it);
- :func:`_due`, the heartbeat's decision at a moment: a write stuck for ``stall_timeout``
  (cut), a ping due after ``interval`` of silence (never while a write is in flight), or
  when to look again;
- :func:`follow`: the relay loop under the watcher. The cut is a cancellation of the
  request's task, withdrawn with ``Task.uncancel`` afterwards, so a cancellation from outside
  still propagates. An open stream holds one task (the request's) and one timer: less memory
  and a task's creation, steps and cancellation less per start;
- :func:`watch_stall`: the same decision without pings, as a WebSocket's stall watchdog
  next to its reader.

Whatever wins, the route closes the subscription on the way out — as *gone* when the client
vanished or stalled (the disconnect policy may apply), as done when the stream ended.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Coroutine
from types import CoroutineType
from typing import Any

from .._aio import retrieve, sleep_until
from .._asgi import DisconnectSignal, Message, Receive, Send, TrackingSend, wait_for_disconnect
from .._sse import encode_comment, encode_retry

__all__ = ["PING_BODY", "RETRY", "SSE_HEADERS", "Outlet", "follow", "watch_stall"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
"""Headers of every event stream."""

RETRY = encode_retry(1000)
"""The first bytes of a resumable event stream: reconnect after one second."""

PING_BODY = encode_comment("ping")
"""The heartbeat of an event stream: a ``: ping`` comment (written by :class:`_Guard`)."""


class Outlet:
    """A connection's write side: tracks when it last wrote and whether a write is stuck."""

    __slots__ = ("busy_since", "inflight", "last_write", "loop", "pending", "send")

    def __init__(self, send: Send) -> None:
        self.send = send.raw if isinstance(send, TrackingSend) else send
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()
        self.busy_since: float | None = None
        self.inflight = 0
        self.pending: asyncio.Future[None] | None = None
        """The rest of a :meth:`write_now` that had to wait (or its failure)."""

    async def write(self, message: Message) -> None:
        """Send one ASGI message (after the rest of a :meth:`write_now`, if any)."""
        pending = self.pending
        if pending is not None:
            self.pending = None
            await pending  # its failure is this write's
        self._begin()
        try:
            await self.send(message)
        finally:
            self._written()

    def _begin(self) -> None:
        if self.inflight == 0:
            self.busy_since = self.last_write = self.loop.time()
        self.inflight += 1

    def _written(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.busy_since = None

    @property
    def idle(self) -> bool:
        """No write is in flight (a :meth:`write_now` may start). The rest of a
        :meth:`write_now` that has finished well is let go here; a failed one stays for the
        next :meth:`write` to raise."""
        pending = self.pending
        if pending is not None:
            if not pending.done() or pending.cancelled() or pending.exception() is not None:
                return False
            self.pending = None
        return self.inflight == 0

    def write_now(self, body: bytes) -> None:
        """Write a body part from the calling task or callback, without a task of its own:
        ``send`` runs at once up to its first wait. If it waits (the client's buffer is
        full), the rest runs as a task, :attr:`pending`, which the next :meth:`write` awaits
        (and :meth:`close` cancels); a failure is kept there the same way. Call only when
        :attr:`idle`."""
        self._begin()
        step = self.send({"type": "http.response.body", "body": body, "more_body": True})
        if type(step) is not CoroutineType:  # another awaitable: as a task of its own
            self.pending = self.loop.create_task(self._after(step))
            return
        try:
            waiting = step.send(None)
        except StopIteration:
            self._written()
            return
        except Exception as exc:
            self._written()
            self.pending = failed = self.loop.create_future()
            failed.set_exception(exc)
            return
        self.pending = self.loop.create_task(self._rest(step, waiting))

    async def _after(self, awaitable: Awaitable[None]) -> None:
        try:
            await awaitable
        finally:
            self._written()

    async def _rest(self, step: Coroutine[Any, Any, None], waiting: object) -> None:
        """Drive a started ``send`` to its end: wait for what it waits for, resume it."""
        try:
            while True:
                try:
                    if isinstance(waiting, asyncio.Future):
                        # what a task does with a future its coroutine yields: it is
                        # awaited anew here (else asyncio sees a second yield of it)
                        waiting._asyncio_future_blocking = False
                        await waiting
                    else:  # a bare yield (`asyncio.sleep(0)`)
                        await asyncio.sleep(0)
                except BaseException as exc:  # handed to the send, which decides
                    try:
                        waiting = step.throw(exc)
                    except StopIteration:
                        return
                    continue
                try:
                    waiting = step.send(None)
                except StopIteration:
                    return
        finally:
            self._written()

    def close(self) -> None:
        """The connection is done: stop the rest of a :meth:`write_now` (its failure, if it
        had one, is taken: nobody will write after it)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        if not pending.done():
            pending.cancel()
        elif not pending.cancelled():
            pending.exception()


def _due(outlet: Outlet, now: float, interval: float, stall_timeout: float) -> float | None:
    """The heartbeat's decision at loop time ``now``: ``None`` when a write has been stuck for
    ``stall_timeout`` (the client stopped reading), else when to look again — ``now`` or
    earlier once ``interval`` of silence has passed: a ping is due. While a write is in
    flight no ping is due; the next look is at its stall or after ``interval``, whichever
    comes first (the write may end before)."""
    busy = outlet.busy_since
    if busy is not None:
        if now - busy >= stall_timeout:
            return None
        return min(busy + stall_timeout, now + interval)
    return min(outlet.last_write + interval, now + stall_timeout)  # a write may start (and stall)


async def watch_stall(outlet: Outlet, stall_timeout: float) -> None:
    """Return when a write has been stuck for ``stall_timeout`` (the client stopped reading):
    a WebSocket's watchdog, raced against its reader."""
    loop = outlet.loop
    while (wake := _due(outlet, loop.time(), math.inf, stall_timeout)) is not None:
        await sleep_until(loop, wake)


async def follow(
    main: Coroutine[Any, Any, Any],
    receive: Receive,
    signal: DisconnectSignal | None,
    outlet: Outlet | None = None,
    interval: float = 0.0,
    stall_timeout: float = 0.0,
) -> bool:
    """Run ``main`` (a route's relay loop) in this task until it ends — True — or until the
    client is gone, or has stopped reading for ``stall_timeout`` — False: ``main`` was
    cancelled (what it raised meanwhile is not news). With an ``outlet``, an SSE ``: ping``
    goes out after every ``interval`` of silence; without one only the disconnect is watched
    (a response written at the end). A cancellation of this task from outside propagates.

    The watcher is the request's :class:`~wenxin_stream._asgi.DisconnectSignal` and one timer
    (:class:`_Guard`), which cancel this task. Under a server that offers no signal, a task
    waiting in ``receive`` for ``http.disconnect`` stands in for it (if ``receive`` fails,
    the relay is cut and its error raised).
    """
    loop = outlet.loop if outlet is not None else asyncio.get_running_loop()
    task = asyncio.current_task(loop)
    if task is None:
        raise RuntimeError("follow must be awaited in a task")
    listener = None
    if signal is None:  # another ASGI server: a task waits in receive for the disconnect
        signal = DisconnectSignal()
        fire = signal.fire
        listener = loop.create_task(wait_for_disconnect(receive))
        listener.add_done_callback(lambda _listener: fire())
    # the task lives only in the guard (emptied by `end`), never in a local of this frame: an
    # error leaving through here keeps the frame in its traceback, and the task refers to the
    # error once it ends with it
    guard = _Guard(task, signal, outlet, interval, stall_timeout)
    del task
    failure = None
    guard.start()
    try:
        try:
            await main
        except BaseException:
            if not guard.cut:
                guard.end()
                raise
        if guard.end():  # ours was withdrawn, and another cancellation of this task stands
            raise asyncio.CancelledError
    finally:
        if listener is not None:
            failure = _let_go(listener)
    if failure is not None:
        try:
            raise failure
        finally:
            failure = None
    return not guard.cut


def _let_go(listener: asyncio.Task[None]) -> BaseException | None:
    """Stop :func:`follow`'s disconnect listener (not awaited: its end is not news, and is
    retrieved when it comes); what it failed with, if it did."""
    if listener.done():
        return None if listener.cancelled() else listener.exception()
    listener.cancel()
    listener.add_done_callback(retrieve)
    return None


class _Guard:
    """:func:`follow`'s watcher without a task: the disconnect signal and one timer for the
    heartbeat and the stall (:func:`_due`'s decisions); either cuts the relay by cancelling
    the task that runs it."""

    __slots__ = ("cancelling", "cut", "handle", "interval", "outlet", "signal", "stall", "task")

    def __init__(
        self,
        task: asyncio.Task[Any],
        signal: DisconnectSignal,
        outlet: Outlet | None,
        interval: float,
        stall_timeout: float,
    ) -> None:
        self.task: asyncio.Task[Any] | None = task
        self.cancelling = task.cancelling()  # cancellations asked before ours
        self.cut = False
        self.signal = signal
        self.outlet = outlet
        self.interval = interval
        self.stall = stall_timeout
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.signal.subscribe(self._cut)  # (at once, if the client is gone already)
        if self.outlet is not None and not self.cut:
            self._tick()

    def _tick(self) -> None:
        self.handle = None
        outlet = self.outlet
        assert outlet is not None
        now = outlet.loop.time()
        wake = _due(outlet, now, self.interval, self.stall)
        if wake is not None and wake <= now:  # silence: a ping, unless a write failed
            if outlet.idle:
                outlet.write_now(PING_BODY)  # (if it has to wait, the stall is watched)
            wake = _due(outlet, now, self.interval, self.stall)
            if wake is not None and wake <= now:  # no ping went out: a failed write waits
                wake = now + self.interval  # for the relay to see it
        if wake is None:
            self._cut()
            return
        self.handle = outlet.loop.call_at(wake, self._tick)

    def _cut(self) -> None:
        """The client is gone, or stopped reading: stop the relay."""
        if self.cut or self.task is None:
            return
        self.cut = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.task.cancel()

    def end(self) -> bool:
        """Stop watching. If the guard cut the relay, withdraw its cancellation of the task;
        whether another one still stands."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.signal.unsubscribe()
        task, self.task = self.task, None
        return self.cut and task is not None and task.uncancel() > self.cancelling
