"""The connection machinery every stream of the server runs on: the outlet, the heartbeat, the
watcher, and the race between them and the relay.

Theory of operation
===================

A streaming connection (SSE, the OpenAI stream, a WebSocket) is a race with one owner per
resource: the first to finish cancels the other. The SSE and OpenAI streams run the relay loop
in the request's own task (:func:`follow`). Under our own HTTP protocol (``_http_limits``) the
request's :class:`~wenxin_stream._asgi.DisconnectSignal` and one timer (:class:`_Guard`: the
heartbeat's steps as callbacks) watch it, and no other task exists for the connection; under
another ASGI server the watcher runs in a task beside it
(:func:`wenxin_stream._aio.run_watched`). A WebSocket races tasks
(:func:`wenxin_stream._aio.race`)::

    one client connection (SSE) = the request's task; the first to finish stops the other:

        ┌── relay (request task)┐  ┌── watcher ────────────────────────────────────────────┐
        │ next_batch()          │  │ our protocol: the signal (connection lost) and a      │
        │ one write per batch   │  │ timer — `: ping` after each ping_interval of silence, │
        │ returns at `end`      │  │ a write stuck for stall_timeout cuts — no task;       │
        │                       │  │ elsewhere a task: await receive() until               │
        │                       │  │ http.disconnect, cut at each heartbeat step           │
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
- :func:`heartbeat`: ``ping`` after every ``interval`` of silence, returning when a write has
  been stuck for ``stall_timeout`` (the client stopped reading). A WebSocket runs it without a
  ping, as a stall watchdog next to its reader;
- :func:`watch`: :func:`~wenxin_stream._asgi.wait_for_disconnect` and the heartbeat in ONE
  task (a task fewer per stream: less memory and CPU per connection). The wait for
  ``http.disconnect`` is cut at each heartbeat step (uvicorn's ``receive`` may be cancelled
  while it waits) and taken up again after it;
- :func:`follow`: the relay loop under the watcher — :class:`_Guard` where the server offers
  the disconnect signal (the cut is a cancellation of the request's task, withdrawn with
  ``Task.uncancel`` afterwards, so a cancellation from outside still propagates), else
  :func:`watch` in a task. Without the task, an open stream holds one task (the request's)
  and one timer: less memory and a task's creation, steps and cancellation less per start.

Whatever wins, the route closes the subscription on the way out — as *gone* when the client
vanished or stalled (the disconnect policy may apply), as done when the stream ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from types import CoroutineType
from typing import Any

from .._aio import ReadDeadline, run_watched, sleep_until
from .._asgi import DisconnectSignal, Message, Receive, Send, TrackingSend, wait_for_disconnect
from .._sse import encode_comment, encode_retry

__all__ = ["PING", "RETRY", "SSE_HEADERS", "Outlet", "follow", "heartbeat", "watch"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
"""Headers of every event stream."""

RETRY = encode_retry(1000)
"""The first bytes of a resumable event stream: reconnect after one second."""

PING_BODY = encode_comment("ping")
"""The heartbeat of an event stream: a ``: ping`` comment."""

PING: Message = {"type": "http.response.body", "body": PING_BODY, "more_body": True}
"""The heartbeat as an ASGI message."""


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
        if self.inflight == 0:
            self.busy_since = self.last_write = self.loop.time()
        self.inflight += 1
        try:
            await self.send(message)
        finally:
            self._written()

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
        if self.inflight == 0:
            self.busy_since = self.last_write = self.loop.time()
        self.inflight += 1
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


async def _beat(
    outlet: Outlet, ping: Message | None, period: float, stall_timeout: float
) -> float | None:
    """One heartbeat step: write ``ping`` if ``period`` of silence has passed; return the loop
    time of the next step, or ``None`` when a write has been stuck for ``stall_timeout``."""
    loop = outlet.loop
    while True:
        now = loop.time()
        busy = outlet.busy_since
        if busy is not None:  # no ping while a write is in flight: only the stall matters
            return None if now - busy >= stall_timeout else busy + stall_timeout
        due = outlet.last_write + period
        if now < due:
            return min(due, now + stall_timeout)  # a write may start (and stall) meanwhile
        if ping is None:
            outlet.last_write = now
            continue
        try:
            async with asyncio.timeout(stall_timeout):
                await outlet.write(ping)
        except TimeoutError:
            return None


async def heartbeat(
    outlet: Outlet, ping: Message | None, interval: float, stall_timeout: float
) -> None:
    """Write ``ping`` after every ``interval`` of silence; return when a write has been stuck
    for ``stall_timeout`` (the client stopped reading). Without a ping, only watch stalls."""
    period = interval if ping is not None else stall_timeout
    while (wake := await _beat(outlet, ping, period, stall_timeout)) is not None:
        await sleep_until(outlet.loop, wake)


async def watch(
    receive: Receive, outlet: Outlet, ping: Message, interval: float, stall_timeout: float
) -> None:
    """Return when the client has disconnected or a write has been stuck for
    ``stall_timeout``; meanwhile ping after every ``interval`` of silence (see the module
    docstring)."""
    deadline = ReadDeadline(outlet.loop)
    try:
        while (wake := await _beat(outlet, ping, interval, stall_timeout)) is not None:
            try:
                await deadline.wait(wait_for_disconnect(receive), wake - outlet.loop.time())
            except TimeoutError:
                continue
            return
    finally:
        deadline.close()


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

    With the server's :class:`~wenxin_stream._asgi.DisconnectSignal` it takes no task: the
    signal and one timer (:class:`_Guard`) cancel this task. Without it, :func:`watch` (or
    :func:`~wenxin_stream._asgi.wait_for_disconnect`) runs beside ``main`` as a task
    (:func:`~wenxin_stream._aio.run_watched`).
    """
    if signal is None:
        watcher = (
            wait_for_disconnect(receive)
            if outlet is None
            else watch(receive, outlet, PING, interval, stall_timeout)
        )
        return await run_watched(main, watcher)
    task = asyncio.current_task(outlet.loop if outlet is not None else None)
    if task is None:
        raise RuntimeError("follow must be awaited in a task")
    # the task lives only in the guard (emptied by `end`), never in a local of this frame: an
    # error leaving through here keeps the frame in its traceback (see `_aio.run_watched`)
    guard = _Guard(task, signal, outlet, interval, stall_timeout)
    del task
    guard.start()
    try:
        await main
    except BaseException:
        if not guard.cut:
            guard.end()
            raise
    if guard.end():  # ours was withdrawn, and another cancellation of this task stands
        raise asyncio.CancelledError
    return not guard.cut


class _Guard:
    """:func:`follow`'s watcher without a task: the disconnect signal and one timer for the
    heartbeat and the stall (the steps of :func:`_beat`, as callbacks); either cuts the relay
    by cancelling the task that runs it."""

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
        due = outlet.last_write + self.interval
        if outlet.busy_since is None and now >= due:  # silence: a ping, unless a write failed
            if outlet.idle:
                outlet.write_now(PING_BODY)  # (if it has to wait, the stall is watched)
            due = outlet.last_write + self.interval
            if due <= now:  # no ping went out (a failed write waits for the relay to see it)
                due = now + self.interval
        busy = outlet.busy_since
        if busy is not None:  # a write is in flight: no ping, only the stall matters
            if now - busy >= self.stall:
                self._cut()
                return
            wake = min(busy + self.stall, now + self.interval)  # (it may end before)
        else:
            wake = min(due, now + self.stall)  # a write may start (and stall) meanwhile
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
