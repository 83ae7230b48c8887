"""Asking over HTTP: the event-stream routes (ask, resume, cancel).

Theory of operation
===================

``POST /api/conversations/{id}/messages`` starts an answer (:meth:`~._answers.Answers.ask`)
and subscribes this connection to it; ``GET /api/streams/{id}`` subscribes a reconnecting
client after its ``Last-Event-ID``; ``POST /api/streams/{id}/cancel`` stops a stream.

Both streaming routes end in :meth:`StreamRoutes.stream_events`: the headers go out at once
(status 200, ``text/event-stream``, ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``),
then ``retry: 1000`` and the events, and the connection runs the race drawn in
``_connection``: the relay loop (one write per batch of pre-encoded frames) against the
watcher (``: ping`` after every ``ping_interval`` of silence; a write stuck for
``stall_timeout`` drops the client). Whatever wins, the subscription is closed on the way out
— as *gone* when the client vanished or stalled (the disconnect policy may apply), as done
when the stream ended. When the server cancels the request (shutdown), the stream is left for
the shutdown to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from .._asgi import DisconnectSignal, Receive, Send, send_json
from .._sse import encode_event_bytes
from ._access import Access
from ._answers import Answers, parse_ask_options
from ._config import ServerConfig
from ._connection import RETRY, SSE_HEADERS, Outlet, follow
from ._eventlog import EventLog
from ._eventlog_reader import RemoteStream
from ._http import Context, HTTPError, Routes, not_found, read_json, required_str
from ._relay import Entry, EntryKind, Generation, Relay, Subscription

__all__ = ["StreamRoutes", "last_event_seq"]

_END = EntryKind.END


def last_event_seq(ctx: Context, gen: Generation) -> int:
    """The seq after which a resuming client wants the events (-1: from the start)."""
    return requested_seq(ctx, gen.stream_id, gen.sealed)


def requested_seq(ctx: Context, stream_id: str, limit: int | None) -> int:
    """The seq after which a client resuming ``stream_id`` wants the events (-1: from the
    start); beyond ``limit`` (when known) it is refused."""
    header = ctx.request.headers.get("last-event-id")
    query = ctx.request.query_value("last_event_id")
    text = header if header is not None else query
    if text is None or not text.strip():
        return -1
    text = text.strip()
    if ":" in text:
        sid, _, text = text.rpartition(":")
        if sid != stream_id:
            raise HTTPError(
                400, "invalid_field", "Last-Event-ID names another stream", param="last_event_id"
            )
    digits = text.lstrip("0") or "0"  # ASCII digits only: `isdigit` also accepts "²"
    if (
        not (text.isascii() and text.isdigit())
        or len(digits) > 18
        or (limit is not None and int(digits) > limit)
    ):
        raise HTTPError(
            400,
            "invalid_field",
            "Last-Event-ID is not an event of this stream",
            param="last_event_id",
        )
    return int(digits)


async def _relay(sub: Subscription, outlet: Outlet, head: bytes) -> None:
    id_prefix = sub.gen.sse_id

    def push(batch: list[Entry]) -> bool:  # the direct hand-over (`Subscription`)
        if not outlet.idle or batch[-1].kind is _END:
            return False
        frames = [entry.sse(id_prefix) for entry in batch]
        outlet.write_now(frames[0] if len(frames) == 1 else b"".join(frames))
        return True

    while True:
        batch = await sub.next_batch()
        if not batch:  # taken over by another instance: cut, no `end` (the client resumes)
            return
        frames = [entry.sse(id_prefix) for entry in batch]
        if head:
            frames.insert(0, head)
            head = b""
        body = frames[0] if len(frames) == 1 else b"".join(frames)
        await outlet.write({"type": "http.response.body", "body": body, "more_body": True})
        if batch[-1].kind is _END:
            return
        sub.push = push  # after the first write (its head)


async def _relay_remote(stream: RemoteStream, outlet: Outlet, head: bytes) -> None:
    """Relay an answer of another instance from Redis; a cut client gets no ``end``."""
    id_prefix = stream.stream_id.encode() + b":"
    while True:
        try:
            batch = await stream.next_batch()
        except HTTPError:
            batch = []
        frames = [encode_event_bytes(r.data, r.kind, b"%b%d" % (id_prefix, r.seq)) for r in batch]
        if head:
            frames.insert(0, head)
            head = b""
        if frames:
            body = b"".join(frames)
            await outlet.write({"type": "http.response.body", "body": body, "more_body": True})
        if not batch or batch[-1].is_end:
            return


class StreamRoutes:
    """The event-stream routes (see the module docstring)."""

    def __init__(
        self,
        *,
        access: Access,
        answers: Answers,
        relay: Relay,
        config: ServerConfig,
        eventlog: EventLog | None = None,
    ) -> None:
        self.access = access
        self.eventlog = eventlog
        self.answers = answers
        self.relay = relay
        self.max_body_bytes = config.max_body_bytes
        self.ping_interval = config.ping_interval
        self.stall_timeout = config.stall_timeout

    def routes(self) -> Routes:
        """This module's routes: path template → method → handler."""
        return {
            "/api/conversations/{id}/messages": {"POST": self.ask},
            "/api/streams/{id}": {"GET": self.resume},
            "/api/streams/{id}/cancel": {"POST": self.cancel},
        }

    async def stream_events(
        self, sub: Subscription, ctx: Context, receive: Receive, send: Send
    ) -> None:
        """Answer with the subscription's events until the end, a disconnect or a stall."""
        await self._stream(
            lambda outlet: _relay(sub, outlet, RETRY),
            lambda gone: self.relay.detach(sub, gone=gone),
            ctx.disconnect,
            receive,
            send,
        )

    async def _stream(
        self,
        relay: Callable[[Outlet], Coroutine[Any, Any, None]],
        leave: Callable[[bool], None],
        disconnect: DisconnectSignal | None,
        receive: Receive,
        send: Send,
    ) -> None:
        outlet = Outlet(send)
        gone = True
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            if await follow(
                relay(outlet), receive, disconnect, outlet, self.ping_interval, self.stall_timeout
            ):
                gone = False
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            gone = False  # the server is stopping: shutdown ends the stream, not the policy
            raise
        finally:
            outlet.close()
            leave(gone)

    async def ask(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``POST /api/conversations/{id}/messages``: ask, and stream the answer."""
        principal = await self.access.principal(ctx)
        body = await read_json(receive, ctx.request, self.max_body_bytes)
        content = required_str(body, "content")
        options = parse_ask_options(body)
        self.answers.upstream.check_rate()  # 429 now, rather than a stream that fails at once
        gen = await self.answers.ask(
            principal,
            conversation_id=ctx.params["id"],
            content=content,
            options=options,
            received_at=ctx.received_at,
            audit=ctx.audit_fields(question=content),
        )
        ctx.audit_taken = True
        await self.stream_events(self.relay.attach(gen), ctx, receive, send)

    def _find(self, ctx: Context, owner: str) -> Generation:
        gen = self.relay.find(ctx.params["id"], owner)
        if gen is None:
            raise not_found(f"no stream {ctx.params['id']!r} (unknown or expired)")
        return gen

    async def resume(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /api/streams/{id}``: the events after ``Last-Event-ID``, then the live rest."""
        principal = await self.access.principal(ctx)
        gen = self.relay.find(ctx.params["id"], principal.owner)
        if gen is None and self.eventlog is not None:  # another instance's, or forgotten here
            await self._resume_remote(ctx, principal.owner, self.eventlog, receive, send)
            return
        gen = self._find(ctx, principal.owner)
        after = last_event_seq(ctx, gen)
        if ctx.audit is not None:
            ctx.audit.update(
                stream_id=gen.stream_id,
                model=gen.model,
                conversation_id=gen.start_data.get("conversation_id"),
            )
        await self.stream_events(self.relay.attach(gen, after), ctx, receive, send)

    async def _resume_remote(
        self, ctx: Context, owner: str, eventlog: EventLog, receive: Receive, send: Send
    ) -> None:
        stream_id = ctx.params["id"]
        after = requested_seq(ctx, stream_id, None)
        stream = await eventlog.resume(stream_id, owner, after)
        if ctx.audit is not None:
            ctx.audit.update(stream_id=stream_id, model=stream.model)
        await self._stream(
            lambda outlet: _relay_remote(stream, outlet, RETRY),
            lambda gone: stream.close(),
            ctx.disconnect,
            receive,
            send,
        )

    async def cancel(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``POST /api/streams/{id}/cancel``: stop the stream (202)."""
        principal = await self.access.principal(ctx)
        stream_id = ctx.params["id"]
        gen = self.relay.find(stream_id, principal.owner)
        if gen is None and self.eventlog is not None:  # produced elsewhere: tell the producer
            status = await self.eventlog.cancel(stream_id, principal.owner)
        else:
            gen = self._find(ctx, principal.owner)
            status = "ended" if gen.end_reason is not None else "cancelling"
            gen.cancel("cancelled")
        if ctx.audit is not None:
            ctx.audit.update(stream_id=stream_id, model=gen.model if gen else None)
        body: dict[str, Any] = {"stream_id": stream_id, "status": status}
        await send_json(send, 202, body)
