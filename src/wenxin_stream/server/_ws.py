"""Asking over a WebSocket (``/api/ws``): several answers at once on one socket, in-band cancel.

Theory of operation
===================

:class:`Sockets` is built at start-up with what sockets use (access, answers, relay, metrics)
and serves each connection as a :class:`Socket`, which moves through an explicit
:class:`SocketState`::

    CONNECTING ──accept──► AUTHENTICATING ──auth frame (valid key)──► OPEN ──► CLOSED
                   │                                                  ▲
                   └──── dev mode, or a valid Authorization header ───┘

While it is open, one task reads frames (the reader is also the disconnect listener) and a
watchdog (``_connection.watch_stall``) closes the socket when a write has been stuck for
``stall_timeout``; the two race as drawn in ``_connection``. Each ``ask`` runs in a
task of its own — start the answer (:meth:`~._answers.Answers.ask`), then relay its log as
``start`` / ``delta`` / ``end`` frames carrying the client's ``id`` — so several answers
stream at once and a slow database call never blocks the reader. A ``cancel`` frame stops
that answer's generation; its relay then sends the ``end`` frame (``cancelled``). Leaving the
socket, for whatever reason, cancels every relay task and closes every subscription (as
*gone*, so the disconnect policy applies, unless the server itself is closing the socket).

**Revocation.** Before each ``ask`` the socket's key is checked again
(:meth:`~._access.Access.recheck`, through the key cache): once the key is revoked — seen
within the cache's TTL, as on HTTP — the ask is answered with an ``invalid_api_key`` error
frame and the socket is closed with code 1008 and a reason; answers already running on it
end as when a client leaves.

**Draining** (``SIGTERM``: :meth:`Sockets.drain`). A socket with no ask running is closed at
once with code 1012 (service restart), and a socket with asks running is closed the same way
as soon as its last ask ends (or is handed over to another instance: its client got
``answer_moved`` and resumes); an ``ask`` that crossed that close on the wire (the socket had
no ask running) is not started and the socket closes with 1012 all the same. So a client of
a stopping instance learns at once to connect again — through a load balancer, to another
instance — instead of asking on a socket whose server would refuse every new ask with 503
``shutting_down``. A WebSocket upgrade that a proxy brings over a kept-alive
connection while the server still admits such requests (``server/__init__``) is accepted and
closed at once the same way, rather than refused (a 403 its client would not retry).

A bad frame — not JSON, not an object, unknown ``type``, missing or mistyped fields, text
that is not valid Unicode, too large, a duplicate ``id`` — is answered with an ``error`` frame
and the socket stays open; so is an ask refused before it starts (ERNIE's rate-limit pause:
``status`` 429 and ``retry_after``). An answer that fails after it started gets an ``error``
frame (``_errors``: code, status, retry_after) and then its ``end`` frame. A plain HTTP
``GET /api/ws`` (no upgrade) is answered 426.
Frames are built from each log entry's pre-encoded JSON, so a delta costs one concatenation.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from time import perf_counter
from typing import Any

from .._aio import race, retrieve
from .._asgi import Receive, Scope, Send, json_bytes
from ._access import Access, Principal
from ._answers import Answers, AskOptions, parse_ask_options
from ._config import ServerConfig
from ._connection import Outlet, watch_stall
from ._eventlog import EventLog
from ._eventlog_reader import RemoteStream
from ._http import (
    Context,
    HTTPError,
    Routes,
    check_text,
    is_text,
    optional_str,
    required_str,
)
from ._keys import parse_bearer
from ._metrics import Metrics
from ._relay import Entry, EntryKind, Generation, Relay, Subscription

__all__ = ["SocketState", "Sockets"]

logger = logging.getLogger("wenxin_stream.server")

SERVER_GOING_AWAY = 1012
"""Close code of a server that shuts down or restarts (uvicorn's; a draining socket's too)."""

_DELTA, _END = EntryKind.DELTA, EntryKind.END
_REASONING, _TOOL_CALL = EntryKind.REASONING, EntryKind.TOOL_CALL


class SocketState(Enum):
    """Where a socket is in its life."""

    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


class _Ask:
    __slots__ = ("cancelled", "gen", "remote", "stream", "sub", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.gen: Generation | None = None
        self.sub: Subscription | None = None  # attached to `gen`: detached when the ask ends
        self.remote: str | None = None  # the stream id of a resume read from Redis
        self.stream: RemoteStream | None = None  # that resume's reader: closed at the end
        self.cancelled = False


def frame(entry: Entry, request_id: bytes) -> str:
    """The WebSocket frame of a log entry, for the ask ``request_id`` (JSON-encoded): its data
    merged into ``{"type", "id"}`` (text frames also carry their ``seq``; a tool call's own
    id is ``call_id``, as ``id`` is the ask's)."""
    kind = entry.kind
    if kind is _DELTA or kind is _REASONING:
        head = b'{"type":"%s","id":%s,"seq":%d,' % (kind.value, request_id, entry.seq)
    else:
        head = b'{"type":"%s","id":%s,' % (kind.value, request_id)
    if kind is _TOOL_CALL:
        call = entry.data or {}
        body = {
            "call_id": call.get("id"),
            "name": call.get("name"),
            "arguments": call.get("arguments"),
        }
        return (head + json_bytes(body)[1:]).decode()
    return (head + entry.json()[1:]).decode()


def record_frame(kind: bytes, seq: int, payload: bytes, request_id: bytes) -> str:
    """The WebSocket frame of an event read from the event log in Redis (as :func:`frame`)."""
    if kind == _DELTA.value:
        head = b'{"type":"delta","id":%s,"seq":%d,' % (request_id, seq)
    else:
        head = b'{"type":"%s","id":%s,' % (kind, request_id)
    return (head + payload[1:]).decode()


class Sockets:
    """Serves ``/api/ws`` connections with the collaborators they use."""

    def __init__(
        self,
        *,
        access: Access,
        answers: Answers,
        relay: Relay,
        metrics: Metrics,
        config: ServerConfig,
        eventlog: EventLog | None = None,
    ) -> None:
        self.access = access
        self.eventlog = eventlog
        self.answers = answers
        self.relay = relay
        self.metrics = metrics
        self.max_frame = config.max_body_bytes
        self.stall_timeout = config.stall_timeout
        self.debug = config.debug
        self.open: set[Socket] = set()
        self.draining = False

    def drain(self) -> None:
        """The server stops: close every socket with 1012 once it has no ask running (see the
        module docstring)."""
        self.draining = True
        for socket in list(self.open):
            socket.leave_when_idle()

    def routes(self) -> Routes:
        """The HTTP side of ``/api/ws``: a plain ``GET`` (no WebSocket upgrade) is answered
        426 ``upgrade_required``."""
        return {"/api/ws": {"GET": self.upgrade_required}}

    async def upgrade_required(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /api/ws`` without a WebSocket handshake: 426 with ``Upgrade: websocket``."""
        raise HTTPError(
            426,
            "upgrade_required",
            "/api/ws is a WebSocket: connect with a WebSocket client (see docs/SERVER-API.md)",
            headers=[(b"upgrade", b"websocket"), (b"connection", b"Upgrade")],
        )

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ``/api/ws`` connection until it closes."""
        socket = Socket(self, scope, receive, send)
        self.open.add(socket)
        try:
            await socket.run()
        finally:
            self.open.discard(socket)


class Socket:
    """One WebSocket connection (see the module docstring)."""

    def __init__(self, sockets: Sockets, scope: Scope, receive: Receive, send: Send) -> None:
        self.sockets = sockets
        self.scope = scope
        self.receive = receive
        self.send = send
        self.state = SocketState.CONNECTING
        self.principal: Principal | None = None
        self.api_key: str | None = None  # the key it authenticated with, for re-checks
        self.asks: dict[str, _Ask] = {}
        self.server_closing = False
        self.close_code = 1000
        self.close_reason = ""
        self.outlet: Outlet | None = None
        self._idle_leave: asyncio.Event | None = None  # set: close with 1012 (draining)

    def leave_when_idle(self) -> None:
        """Close with 1012 now if no ask runs, else when the last one ends."""
        if self._idle_leave is not None and not self.asks:
            self._idle_leave.set()

    async def _leave(self, event: asyncio.Event) -> None:
        await event.wait()
        self.close_code, self.close_reason = SERVER_GOING_AWAY, "the server is restarting"

    async def run(self) -> None:
        """Serve the socket until it closes."""
        if (await self.receive())["type"] != "websocket.connect":
            return
        if not self.sockets.relay.accepting:
            await self.send({"type": "websocket.close", "code": 1013})
            return
        headers = dict(self.scope.get("headers", ()))
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        try:
            self.principal = await self.sockets.access.from_header(authorization)
            self.api_key = parse_bearer(authorization)
        except HTTPError:
            self.principal = None  # wait for the auth frame
        await self.send({"type": "websocket.accept"})
        self.state = SocketState.OPEN if self.principal else SocketState.AUTHENTICATING
        self.outlet = Outlet(self.send)
        leave = self._idle_leave = asyncio.Event()
        if self.sockets.draining:  # began to drain while this socket authenticated
            self.leave_when_idle()
        try:
            await race(
                self._read(),
                watch_stall(self.outlet, self.sockets.stall_timeout),
                self._leave(leave),
            )
        except asyncio.CancelledError:
            self.server_closing = True
            raise
        finally:
            self.state = SocketState.CLOSED
            for ask in list(self.asks.values()):
                if ask.task is not None:
                    ask.task.cancel()
            tasks = [a.task for a in self.asks.values() if a.task is not None]
            if tasks:
                await asyncio.wait(tasks)
            if not self.server_closing:
                close = {"type": "websocket.close", "code": self.close_code}
                if self.close_reason:
                    close["reason"] = self.close_reason
                with contextlib.suppress(OSError, RuntimeError):  # already closed
                    await self.send(close)

    async def _write(self, message: dict[str, Any]) -> None:
        assert self.outlet is not None
        await self.outlet.write(
            {
                "type": "websocket.send",
                "text": json.dumps(message, ensure_ascii=False, separators=(",", ":")),
            }
        )

    async def _error(self, error: HTTPError, request_id: str | None = None) -> None:
        await self._write(error.frame(request_id))

    async def _read(self) -> None:
        limit = self.sockets.max_frame
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                self.server_closing = message.get("code") == SERVER_GOING_AWAY
                return
            text = message.get("text")
            if text is None:
                await self._error(HTTPError(400, "invalid_json", "send JSON text frames"))
                continue
            if len(text) > limit:
                await self._error(HTTPError(413, "body_too_large", f"frame over {limit} bytes"))
                continue
            try:
                body = json.loads(text)
            except (ValueError, RecursionError):
                body = None
            if not isinstance(body, dict):
                await self._error(HTTPError(400, "invalid_json", "a frame must be a JSON object"))
                continue
            try:
                check_text(body, text)
                await self._dispatch(body)
            except HTTPError as error:
                rid = body.get("id")
                await self._error(error, rid if isinstance(rid, str) and is_text(rid) else None)
            if self.state is SocketState.CLOSED:
                return

    async def _dispatch(self, body: dict[str, Any]) -> None:
        kind = required_str(body, "type")
        if kind == "auth":
            await self._auth(body)
        elif kind == "ask":
            if self.sockets.draining and not self.asks:  # it crossed our 1012: ask elsewhere
                self.state = SocketState.CLOSED
                self.close_code, self.close_reason = SERVER_GOING_AWAY, "the server is restarting"
                return
            if self.principal is not None:
                await self._recheck()
            self._ask(body)
        elif kind == "resume":
            self._ask(body, resume=True)
        elif kind == "cancel":
            self._cancel(required_str(body, "id"))
        else:
            raise HTTPError(400, "invalid_field", f"unknown frame type {kind!r}", param="type")

    async def _auth(self, body: dict[str, Any]) -> None:
        key = optional_str(body, "api_key")
        try:
            self.principal = await self.sockets.access.from_key(key)
        except HTTPError as error:
            await self._error(error)
            self.state = SocketState.CLOSED
            self.close_code = 1008
            return
        self.api_key = key
        self.state = SocketState.OPEN

    async def _recheck(self) -> None:
        """The key again, before a new ask (see the module docstring).

        Raises:
            HTTPError: 401 (the socket is closing with code 1008).
        """
        assert self.principal is not None
        try:
            await self.sockets.access.recheck(self.principal, self.api_key)
        except HTTPError:
            self.state = SocketState.CLOSED
            self.close_code, self.close_reason = 1008, "API key no longer valid"
            raise

    def _ask(self, body: dict[str, Any], *, resume: bool = False) -> None:
        rid = required_str(body, "id")
        if len(rid) > 200:
            raise HTTPError(400, "invalid_field", "'id' is too long", param="id")
        if self.state is not SocketState.OPEN or self.principal is None:
            raise HTTPError(401, "invalid_api_key", 'authenticate first: {"type":"auth",…}')
        if rid in self.asks:
            raise HTTPError(400, "invalid_field", f"ask {rid!r} is still running", param="id")
        if resume:
            stream_id = required_str(body, "stream_id")
            after = body.get("last_seq", -1)
            if isinstance(after, bool) or not isinstance(after, int) or not -1 <= after < 1 << 62:
                raise HTTPError(400, "invalid_field", "'last_seq' is not a seq", param="last_seq")
            ask = self.asks[rid] = _Ask()
            work = functools.partial(self._resume, rid, ask, self.principal, stream_id, after)
            ask.task = asyncio.create_task(self._run(rid, ask, work))
            return
        content = required_str(body, "content")
        conversation_id = optional_str(body, "conversation_id")
        options = parse_ask_options(body)
        ask = self.asks[rid] = _Ask()
        answer = functools.partial(
            self._answer, rid, ask, self.principal, conversation_id, content, options
        )
        ask.task = asyncio.create_task(self._run(rid, ask, answer))

    def _cancel(self, rid: str) -> None:
        ask = self.asks.get(rid)
        if ask is None:
            raise HTTPError(404, "not_found", f"no running ask {rid!r}", param="id")
        ask.cancelled = True
        if ask.gen is not None:
            ask.gen.cancel("cancelled")
        elif ask.remote is not None and self.sockets.eventlog and self.principal is not None:
            remote = self.sockets.eventlog.cancel(ask.remote, self.principal.owner)
            task = asyncio.create_task(remote)  # the end frame tells the client how it ended
            # a failed remote cancel: the client sees no end and may retry
            task.add_done_callback(retrieve)

    async def _run(self, rid: str, ask: _Ask, work: Callable[[], Awaitable[None]]) -> None:
        """Runs one ask's ``work`` (an answer or a resume) to its end: every failure becomes the
        client's ``error`` frame (an internal one logged and counted), a vanished socket ends it
        quietly, and whatever it attached is let go — for both kinds of ask alike."""
        sockets = self.sockets
        gone = True
        try:
            await work()
            gone = False
        except HTTPError as error:
            await self._error(error, rid)
        except asyncio.CancelledError:
            gone = not self.server_closing
            raise
        except OSError:
            pass  # the socket is gone; the reader sees the disconnect
        except Exception as exc:
            logger.error(
                "internal error in a WebSocket ask: %s: %s",
                type(exc).__name__,
                exc,
                exc_info=exc if sockets.debug else None,
            )
            sockets.metrics.error("internal")
            await self._error(HTTPError(500, "internal_error", "internal error"), rid)
        finally:
            if ask.sub is not None:
                sockets.relay.detach(ask.sub, gone=gone)
                ask.sub = None
            if ask.stream is not None:
                ask.stream.close()
                ask.stream = None
            self.asks.pop(rid, None)
            if sockets.draining:
                self.leave_when_idle()
            # A cancelled task keeps its CancelledError, whose traceback holds this frame,
            # whose `ask` held the task: a cycle only a full collection frees (the soak's
            # vanishing WebSocket clients made one per answer). Nothing needs the task now.
            ask.task = None

    async def _answer(
        self,
        rid: str,
        ask: _Ask,
        principal: Principal,
        conversation_id: str | None,
        content: str,
        options: AskOptions,
    ) -> None:
        """An ``ask`` frame: a new answer, relayed as it streams."""
        sockets = self.sockets
        sockets.answers.upstream.check_rate()  # 429 now, rather than an answer that fails
        gen = await sockets.answers.ask(
            principal,
            conversation_id=conversation_id,
            content=content,
            options=options,
            received_at=perf_counter(),
            audit={
                "question": content,
                "route": "/api/ws",
                "client": _client(self.scope),
                "key_id": principal.owner,
            },
        )
        ask.gen = gen
        sub = ask.sub = sockets.relay.attach(gen)
        if ask.cancelled:
            gen.cancel("cancelled")
        await self._relay(sub, rid)

    async def _resume(
        self, rid: str, ask: _Ask, principal: Principal, stream_id: str, after: int
    ) -> None:
        """A ``resume`` frame: the events of ``stream_id`` after ``last_seq``, from this
        process's relay or, when another instance produced it, from Redis."""
        sockets = self.sockets
        gen = sockets.relay.find(stream_id, principal.owner)
        if gen is not None:
            if after > gen.sealed:
                raise HTTPError(
                    400, "invalid_field", "'last_seq' is not an event of it", param="last_seq"
                )
            ask.gen = gen
            sub = ask.sub = sockets.relay.attach(gen, after)
            if ask.cancelled:
                gen.cancel("cancelled")
            await self._relay(sub, rid)
        elif sockets.eventlog is not None:
            ask.remote = stream_id
            stream = ask.stream = await sockets.eventlog.resume(stream_id, principal.owner, after)
            await self._relay_remote(stream, rid)
        else:
            raise HTTPError(404, "not_found", f"no stream {stream_id!r} (unknown or expired)")

    async def _relay_remote(self, stream: RemoteStream, rid: str) -> None:
        assert self.outlet is not None
        write = self.outlet.write
        rid_json = json_bytes(rid)
        while True:
            batch = await stream.next_batch()  # HTTPError: cut (the client may resume)
            for record in batch:
                if record.is_end:
                    error = json.loads(record.data).get("error")
                    if isinstance(error, dict):
                        await self._write({**error, "type": "error", "id": rid})
                text = record_frame(record.kind, record.seq, record.data, rid_json)
                await write({"type": "websocket.send", "text": text})
            if not batch or batch[-1].is_end:
                return

    async def _relay(self, sub: Subscription, rid: str) -> None:
        assert self.outlet is not None
        write = self.outlet.write
        rid_json = json_bytes(rid)
        while True:
            batch = await sub.next_batch()
            for entry in batch:
                if entry.kind is _END and sub.gen.failure is not None:  # in-band: error, end
                    await self._error(sub.gen.failure, rid)
                await write({"type": "websocket.send", "text": frame(entry, rid_json)})
            if not batch:  # taken over by another instance: cut, resume (the `resume` frame)
                raise HTTPError(
                    503,
                    "answer_moved",
                    "the answer goes on on another instance of the fleet: resume it",
                    retry_after=1,
                    type="server_error",
                )
            if batch[-1].kind is _END:
                return


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""
