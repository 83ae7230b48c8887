"""Asking over HTTP: the event-stream routes (ask, resume, cancel).

Theory of operation
===================

``POST /api/conversations/{id}/messages`` starts an answer (:func:`~._conversations.start_answer`)
and subscribes this connection to it; ``GET /api/streams/{id}`` subscribes a reconnecting
client after its ``Last-Event-ID``; ``POST /api/streams/{id}/cancel`` stops a stream.

Both streaming routes end in :func:`stream_events`: the headers go out at once (status 200,
``text/event-stream``, ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``), then
``retry: 1000`` and the events, and the connection runs the race drawn in ``_relay``: the relay
loop (one write per batch of pre-encoded frames) against the watcher, which is the disconnect
listener and the heartbeat in one task (``: ping`` after every ``ping_interval`` of silence; a
write stuck for ``stall_timeout`` drops the client). Whatever wins, the subscription is
closed on the way out — as *gone* when the client vanished or stalled (the disconnect policy
may apply), as done when the stream ended.
When the server cancels the request (shutdown), the stream is left for the shutdown to end.

The connection machinery lives here and is shared with the WebSocket and the OpenAI route:
:class:`Outlet` (the write side: when it last wrote, whether a write is stuck),
:func:`heartbeat`, :func:`wait_for_disconnect`, :func:`watch` (both in one task) and
:func:`race` (the task group whose first finisher cancels the rest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._aio import ReadDeadline, sleep_until
from .._asgi import Receive, Send, send_json
from ._auth import Context, HTTPError, optional_str, read_json, required_str
from ._conversations import start_answer
from ._relay import END, Generation, Subscription

if TYPE_CHECKING:
    from ._app import Server

__all__ = [
    "SSE_HEADERS",
    "Outlet",
    "heartbeat",
    "race",
    "routes",
    "stream_events",
    "wait_for_disconnect",
    "watch",
]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
"""Headers of every event stream."""

RETRY = b"retry: 1000\n\n"
PING = {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}


class Outlet:
    """A connection's write side: tracks when it last wrote and whether a write is stuck."""

    __slots__ = ("busy_since", "inflight", "last_write", "loop", "send")

    def __init__(self, send: Callable[[Any], Awaitable[None]]) -> None:
        self.send = getattr(send, "raw", send)  # past the app's status tracking: per chunk
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()
        self.busy_since: float | None = None
        self.inflight = 0

    async def write(self, message: dict[str, Any]) -> None:
        """Send one ASGI message."""
        if self.inflight == 0:
            self.busy_since = self.last_write = self.loop.time()
        self.inflight += 1
        try:
            await self.send(message)
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self.busy_since = None


async def _beat(
    outlet: Outlet, ping: dict[str, Any] | None, period: float, stall_timeout: float
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
    outlet: Outlet, ping: dict[str, Any] | None, interval: float, stall_timeout: float
) -> None:
    """Write ``ping`` after every ``interval`` of silence; return when a write has been stuck
    for ``stall_timeout`` (the client stopped reading). Without a ping, only watch stalls."""
    period = interval if ping is not None else stall_timeout
    while (wake := await _beat(outlet, ping, period, stall_timeout)) is not None:
        await sleep_until(outlet.loop, wake)


async def watch(
    receive: Receive, outlet: Outlet, ping: dict[str, Any], interval: float, stall_timeout: float
) -> None:
    """:func:`wait_for_disconnect` and :func:`heartbeat` in one task (one task fewer per
    stream: less memory and CPU per connection): return when the client has disconnected or a
    write has been stuck for ``stall_timeout``; meanwhile ping after every ``interval`` of
    silence. The wait for ``http.disconnect`` is cut at each heartbeat step (uvicorn's
    ``receive`` may be cancelled while it waits) and taken up again after it."""
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


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has disconnected."""
    while (await receive())["type"] not in ("http.disconnect", "websocket.disconnect"):
        pass


async def race(*coros: Coroutine[Any, Any, Any]) -> int:
    """Run the coroutines as tasks until the first finishes; cancel and await the rest.

    Returns the index of the first to finish (the lowest of several finishing together) and
    re-raises its exception. If the caller is cancelled, every task is cancelled and the
    cancellation propagates. (The first finisher is awaited through done callbacks and one
    future, not ``asyncio.wait``, which costs a set, futures and callbacks per call.)
    """
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()

    def finished(_: asyncio.Task[Any]) -> None:
        if not first.done():
            first.set_result(None)

    tasks = [loop.create_task(c) for c in coros]
    for task in tasks:
        task.add_done_callback(finished)
    try:
        await first
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in tasks:  # retrieved, also when the caller is cancelled: the losers' errors
            if task.done() and not task.cancelled():  # while being cancelled are not news
                task.exception()
    winner = next(index for index, task in enumerate(tasks) if task not in pending)
    tasks[winner].result()  # re-raises what the winner raised
    return winner


async def _relay(sub: Subscription, outlet: Outlet, head: bytes) -> None:
    sid = sub.gen.stream_id
    while True:
        batch = await sub.next_batch()
        frames = [entry.sse(sid) for entry in batch]
        if head:
            frames.insert(0, head)
            head = b""
        body = frames[0] if len(frames) == 1 else b"".join(frames)
        await outlet.write({"type": "http.response.body", "body": body, "more_body": True})
        if batch[-1].kind == END:
            return


async def stream_events(server: Server, sub: Subscription, receive: Receive, send: Send) -> None:
    """Answer with the subscription's events until the end, a disconnect or a stall."""
    config = server.config
    outlet = Outlet(send)
    gone = True
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        winner = await race(
            _relay(sub, outlet, RETRY),
            watch(receive, outlet, PING, config.ping_interval, config.stall_timeout),
        )
        if winner == 0:
            gone = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        gone = False  # the server is stopping: shutdown ends the stream, not the policy
        raise
    finally:
        server.relay.detach(sub, gone=gone)


async def ask(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    """``POST /api/conversations/{id}/messages``: ask, and stream the answer."""
    principal = await server.principal(ctx)
    body = await read_json(receive, ctx.request, server.config.max_body_bytes)
    content = required_str(body, "content")
    model = optional_str(body, "model")
    audit = server.audit_fields(ctx, question=content)
    gen = await start_answer(
        server,
        principal,
        conversation_id=ctx.params["id"],
        content=content,
        model=model,
        received_at=ctx.received_at,
        audit=audit,
    )
    ctx.audit_taken = True
    await stream_events(server, server.relay.attach(gen), receive, send)


def _find(server: Server, ctx: Context, owner: str) -> Generation:
    gen = server.relay.find(ctx.params["id"], owner)
    if gen is None:
        raise HTTPError(404, "not_found", f"no stream {ctx.params['id']!r} (unknown or expired)")
    return gen


def last_event_seq(ctx: Context, gen: Generation) -> int:
    """The seq after which a resuming client wants the events (-1: from the start)."""
    header = ctx.request.headers.get("last-event-id")
    query = ctx.request.query_value("last_event_id")
    text = header if header is not None else query
    if text is None or not text.strip():
        return -1
    text = text.strip()
    if ":" in text:
        sid, _, text = text.rpartition(":")
        if sid != gen.stream_id:
            raise HTTPError(
                400, "invalid_field", "Last-Event-ID names another stream", param="last_event_id"
            )
    if not text.isdigit() or int(text) > gen.claimed:
        raise HTTPError(
            400,
            "invalid_field",
            "Last-Event-ID is not an event of this stream",
            param="last_event_id",
        )
    return int(text)


async def resume(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    """``GET /api/streams/{id}``: the events after ``Last-Event-ID``, then the live rest."""
    principal = await server.principal(ctx)
    gen = _find(server, ctx, principal.owner)
    after = last_event_seq(ctx, gen)
    if ctx.audit is not None:
        ctx.audit.update(
            stream_id=gen.stream_id,
            model=gen.model,
            conversation_id=gen.start_data.get("conversation_id"),
        )
    await stream_events(server, server.relay.attach(gen, after), receive, send)


async def cancel(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    """``POST /api/streams/{id}/cancel``: stop the stream (202)."""
    principal = await server.principal(ctx)
    gen = _find(server, ctx, principal.owner)
    ended = gen.end_reason is not None
    gen.cancel("cancelled")
    if ctx.audit is not None:
        ctx.audit.update(stream_id=gen.stream_id, model=gen.model)
    body: dict[str, Any] = {
        "stream_id": gen.stream_id,
        "status": "ended" if ended else "cancelling",
    }
    await send_json(send, 202, body)


def routes() -> dict[str, dict[str, Any]]:
    """This module's routes: path template → method → handler."""
    return {
        "/api/conversations/{id}/messages": {"POST": ask},
        "/api/streams/{id}": {"GET": resume},
        "/api/streams/{id}/cancel": {"POST": cancel},
    }
