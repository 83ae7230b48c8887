"""Bounds on what one HTTP client can make a uvicorn server hold: the size and count of a
request's headers, deadlines to receive its head and its body, and caps on open connections.

Theory of operation
===================

uvicorn with httptools caps nothing while it receives a request: llhttp has no header-size
limit, so a client that never finishes its headers grows the server by whatever it sends
(4 connections × 32 MB took ``wenxin serve`` from 56 to 248 MB, for good); a connection that
sends nothing, or one byte every few seconds, is never closed (``timeout_keep_alive`` only
runs *between* requests). :class:`LimitedHttpToolsProtocol` is uvicorn's own
``HttpToolsProtocol`` with the missing bounds, given to uvicorn as its ``http`` protocol
class by :class:`LimitedConfig`. What it adds happens per connection and per request head,
never per response chunk: once a request is received, a response streams as before, for
as long as it lasts. Each request gets a :class:`~._asgi.DisconnectSignal` in its scope's
``extensions``, fired when its connection is lost before its response is complete, so a
streaming route follows its client without a task waiting in ``receive``.

Every connection is in one of two phases (``_head_bytes``): receiving a request *head*
(request line and headers; the count of its bytes so far) or a request *body* (``None``).
The phases switch in the parser's callbacks: ``on_headers_complete`` starts the body,
``on_message_complete`` the next head.

- **Head size.** Bytes are fed to the parser at most ``max_header_bytes − used`` at a time
  while a head is incomplete, so the parser never holds more than the cap: a head still
  incomplete at the cap is answered ``431``. A body is fed in slices of at most the cap too,
  so a pipelined head that begins in the same read as the previous request's end (those
  bytes cannot be told apart and are not charged) is held at most twice the cap.
- **Header count.** ``on_header`` refuses header ``max_headers + 1``: the exception aborts
  the parse (httptools wraps it in ``HttpParserCallbackError``) and the answer is ``431``.
- **Deadlines** (one timer slot per connection). *Head*: armed when the connection opens, or
  at the first byte of a later head once the previous response is complete; cancelled when
  the head is complete. If it fires, ``408`` — or a plain close when nothing was received
  (an idle new connection). *Body*: armed when a head with a body is complete, cancelled
  when the body is; if it fires, ``408`` (or a close, when the response has begun). Idle
  keep-alive connections are uvicorn's own ``timeout_keep_alive``, armed after each
  response. A response in progress arms nothing: a stream may last minutes.
- **Connections.** :class:`Connections` counts the open connections, in total and per
  client address; one over either cap is answered ``503`` with ``Retry-After`` the moment it
  opens, before reading anything (a request may be answered before it is read, as a ``408``
  is). A connection upgraded to a WebSocket stays counted: the count passes to the
  WebSocket protocol (:func:`counted_websocket_protocol`), which releases it when it closes.

**Draining** (:meth:`LimitedHttpToolsProtocol.drain`, called by the server's shutdown for every
HTTP connection once it stops listening). Closing an idle kept-alive connection is a race with
the client: a proxy (nginx's upstream ``keepalive`` pool) may have taken it and written a
request the moment the close leaves. nginx then reads the close, and for a request it may not
send twice (a POST, or any body it streamed) answers its client 502. So a drain never closes
an idle connection at once: from then on every response is its connection's last
(``Connection: close``, so the client knows before it could reuse it), a busy connection is
closed after its response, and an idle one stays open ``idle`` seconds (:data:`DRAIN_IDLE`)
for a request that may already be on its way — served in full, as the connection's last — and
is closed at the end of that window if none came. A proxy whose own idle timeout for these
connections is shorter than the window (``deploy/nginx.conf``: ``keepalive_timeout``) has
dropped every connection it did not use by then, so no close can cross a request. The same
holds outside a drain when the proxy's idle timeout is shorter than ``keep_alive_timeout``.
A response begun before the drain promised keep-alive and cannot take it back: its close
after the end may cross a request, so the proxy should not pool connections that carry
streams (``deploy/nginx.conf`` sends ``Connection: close`` for those routes).

Every refusal writes one complete response (``Connection: close``, OpenAI's error shape),
then closes *lingering*: it half-closes (FIN after the answer) and reads and discards what
the client still sends until it closes too, or :data:`LINGER` seconds pass. Closing at once
with unread input would make the kernel send RST, and the client could lose the answer. A
request whose application task is running (a body that timed out) is marked disconnected, as
uvicorn does when a client goes away: its ``receive()`` returns ``http.disconnect`` and its
further ``send()`` calls are dropped.

uvicorn's protocol internals are used (``HttpToolsProtocol``'s callbacks, ``cycle``,
``parser``, ``flow``, ``pipeline``; ``RequestResponseCycle.disconnected`` and
``message_event``), so the uvicorn version is pinned in ``pyproject.toml`` and
``tests/server/test_http_limits.py`` checks these internals (and the source of the method
copied here, ``data_received``), so that a change fails loudly.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass
from types import GeneratorType
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ._asgi import DISCONNECT, DisconnectSignal, disconnect_signal

__all__ = [
    "DRAIN_IDLE",
    "LINGER",
    "RETRY_AFTER",
    "Connections",
    "HTTPLimits",
    "LimitedConfig",
    "LimitedHttpToolsProtocol",
    "counted_websocket_protocol",
]

LINGER = 2.0
"""Seconds a refused connection keeps reading (and discarding) after its answer."""

DRAIN_IDLE = 3.0
"""Seconds a draining server keeps an idle kept-alive connection open for a request already on
its way (see the module docstring): longer than the idle timeout of the proxy's pool
(``deploy/nginx.conf``: 2 s). An answer taken meanwhile gets the whole grace, so a drain may
last this much beyond it (a supervisor's kill comes later by as much: ``_workers``)."""

RETRY_AFTER = 5
"""``Retry-After`` of the ``503`` for a connection over a cap, in seconds (an answer of ERNIE
takes seconds, and connections free up as answers end)."""

_log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """What one connection may make the server hold (see the module docstring).

    Attributes:
        max_header_bytes: Largest request head (request line and headers) in bytes → 431.
        max_headers: Most header fields in one request → 431.
        header_timeout: Seconds to receive a request's head, from the connection's opening
            (or, on a kept-alive connection, from the head's first byte) → 408 (a plain close
            when nothing came).
        body_timeout: Seconds to receive a request's body once its head is complete → 408.
        keep_alive_timeout: Seconds an idle kept-alive connection stays open (uvicorn's
            ``timeout_keep_alive``, whole seconds).
        max_connections: Most open connections (0: no cap) → 503.
        max_connections_per_ip: Most open connections from one client address (0: no
            cap) → 503.
    """

    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: int = 20
    max_connections: int = 10_000
    max_connections_per_ip: int = 1_000

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers", "header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be greater than 0")
        for name in ("keep_alive_timeout", "max_connections", "max_connections_per_ip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be 0 or more")


class Connections:
    """The open connections of one server, in total and per client address."""

    __slots__ = ("_by_address", "_per_address", "_total", "total")

    def __init__(self, limits: HTTPLimits) -> None:
        self._total = limits.max_connections
        self._per_address = limits.max_connections_per_ip
        self._by_address: dict[str, int] = {}
        self.total = 0
        """Connections counted now."""

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; ``None``, or the cap it would pass
        (``"max_connections"``, ``"max_connections_per_ip"``: then it is not counted)."""
        if self._total and self.total >= self._total:
            return "max_connections"
        held = self._by_address.get(address, 0)
        if self._per_address and held >= self._per_address:
            return "max_connections_per_ip"
        self._by_address[address] = held + 1
        self.total += 1
        return None

    def release(self, address: str) -> None:
        """Forget one connection of ``address``."""
        held = self._by_address.pop(address)
        if held > 1:
            self._by_address[address] = held - 1
        self.total -= 1

    def of(self, address: str) -> int:
        """Connections counted now for ``address``."""
        return self._by_address.get(address, 0)


def _answer(status: int, code: str, message: str, *headers: str) -> bytes:
    """One complete ``Connection: close`` response with an error body in OpenAI's shape."""
    error = {
        "message": message,
        "type": "server_error" if status >= 500 else "invalid_request_error",
        "code": code,
        "param": None,
    }
    body = json.dumps({"error": error}).encode()
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _answers(limits: HTTPLimits) -> dict[str, bytes]:
    """The refusals of one configuration by reason, encoded once."""
    retry = f"retry-after: {RETRY_AFTER}"
    return {
        "header_bytes": _answer(
            431, "headers_too_large",
            f"the request's headers exceed {limits.max_header_bytes} bytes",
        ),
        "header_count": _answer(
            431, "headers_too_large", f"the request has more than {limits.max_headers} headers"
        ),
        "header_timeout": _answer(
            408, "request_timeout",
            f"the request's headers did not arrive within {limits.header_timeout:g} s",
        ),
        "body_timeout": _answer(
            408, "request_timeout",
            f"the request's body did not arrive within {limits.body_timeout:g} s",
        ),
        "max_connections": _answer(
            503, "too_many_connections", "the server has too many open connections", retry
        ),
        "max_connections_per_ip": _answer(
            503, "too_many_connections", "too many open connections from your address", retry
        ),
    }  # fmt: skip


def _ignore(reason: str) -> None:
    """The default ``on_reject``: nothing."""


class LimitedConfig(uvicorn.Config):
    """A ``uvicorn.Config`` whose HTTP protocol is :class:`LimitedHttpToolsProtocol` under
    ``limits``; ``on_reject(reason)`` is told of each refusal (``header_bytes``,
    ``header_count``, ``header_timeout``, ``body_timeout``, ``idle``, ``max_connections``,
    ``max_connections_per_ip``). Other keyword arguments are uvicorn's."""

    def __init__(
        self,
        app: Any,
        limits: HTTPLimits,
        *,
        on_reject: Callable[[str], None] = _ignore,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            http=LimitedHttpToolsProtocol,
            timeout_keep_alive=limits.keep_alive_timeout,
            **kwargs,
        )
        self.limits = limits
        self.connections = Connections(limits)
        self.on_reject = on_reject
        self.answers = _answers(limits)

    def load(self) -> None:
        """uvicorn's ``load``, then the WebSocket protocol made to release the count of the
        connection it took over."""
        super().load()
        if self.ws_protocol_class is not None:
            self.ws_protocol_class = counted_websocket_protocol(self.ws_protocol_class)


class _CountedWebSocket(asyncio.Protocol):
    """Mixed into the WebSocket protocol: releases the upgraded connection's count."""

    counted: tuple[Connections, str] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            counted, self.counted = self.counted, None
            if counted is not None:
                counted[0].release(counted[1])
            # websockets' sans-I/O protocol keeps its parser, a generator that stays suspended
            # for good (even after the close), and whose frame refers back to the protocol: a
            # cycle per connection that only a full collection frees (the soak's growth,
            # bench/SOAK.md run 4). Closing the generator ends its frame and the cycle.
            parser = getattr(getattr(self, "conn", None), "parser", None)
            if isinstance(parser, GeneratorType):
                parser.close()


def counted_websocket_protocol(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's WebSocket protocol class) that releases, when its connection is
    lost, the count handed to it in ``counted``."""
    if issubclass(base, _CountedWebSocket):
        return base
    return type(f"Counted{base.__name__}", (_CountedWebSocket, base), {})


class _Refusal(Exception):
    """Raised in a parser callback to abort the parse; ``reason`` names the answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_on_header = HttpToolsProtocol.on_header


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of the module docstring; the
    configuration must be a :class:`LimitedConfig`."""

    # Our attributes in slots, uvicorn's (27) in the instance dict: CPython 3.11 shares one
    # key table among a class's instances up to 30 keys and gives each instance a dict of
    # its own beyond that (37 keys: 1.6 KB per client connection; bench/MEMORY.md).
    __slots__ = (
        "_address",
        "_answers",
        "_connections",
        "_draining",
        "_finished",
        "_head_bytes",
        "_head_reset",
        "_limits",
        "_max_headers",
        "_on_reject",
        "_timer",
    )

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(config, LimitedConfig):
            raise TypeError("LimitedHttpToolsProtocol needs a LimitedConfig")
        super().__init__(config, server_state, app_state, _loop)
        self._limits = config.limits
        self._max_headers = config.limits.max_headers  # read once per header
        self._connections = config.connections
        self._answers = config.answers
        self._on_reject = config.on_reject
        self._address: str | None = None  # counted under this address until released
        self._head_bytes: int | None = 0  # bytes of the head so far; None: receiving a body
        self._head_reset = False  # a request ended during the last feed
        self._timer: TimerHandle | None = None  # the one deadline (head, body or linger)
        self._finished = False  # answered and lingering, or handed to a WebSocket
        self._draining = False  # the server stops: each response is the connection's last

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # the signature is uvicorn's, which narrows asyncio's BaseTransport to a Transport
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        refused = self._connections.admit(address)
        if refused is not None:
            self._refuse(refused)
            return
        self._address = address
        self._arm(self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._address is not None:
            self._connections.release(self._address)
            self._address = None
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:  # a response in progress
            signal = disconnect_signal(cycle.scope)
            if signal is not None:
                signal.fire()
        self._unlink()

    def _unlink(self) -> None:
        """Break uvicorn's cycle protocol ↔ parser (the parser calls the protocol back) once
        the connection is over, so reference counting frees both at once instead of the
        full collection the server rarely runs (``server/_gc.py``): one per closed
        connection, with its transport and flow control."""
        self.__dict__.pop("parser", None)  # nothing feeds it any more

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        self._finished = True
        address, self._address = self._address, None
        assert address is not None  # a refused connection reads no request
        super().handle_websocket_upgrade()
        successor = self.transport.get_protocol()
        if isinstance(successor, _CountedWebSocket):
            successor.counted = (self._connections, address)
        else:  # pragma: no cover - LimitedConfig.load makes every WebSocket protocol counted
            self._connections.release(address)
        self._unlink()  # the connection is the WebSocket protocol's now

    # -- draining ----------------------------------------------------------------------------

    @property
    def unanswered(self) -> bool:
        """Open, and no response under way: idle (a request may be on its way), or with a
        request whose response has not begun (it is still being admitted)."""
        cycle = self.cycle
        return (
            not self._finished
            and not self.transport.is_closing()
            and (cycle is None or cycle.response_complete or not cycle.response_started)
        )

    def drain(self, idle: float) -> None:
        """The server stops (see the module docstring): each response from now on is this
        connection's last; an idle connection is closed after ``idle`` seconds unless a
        request comes, a busy one after its response."""
        if self._finished or self.transport.is_closing():
            return
        self._draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # `Connection: close` too, if its head is not sent yet
            return
        # uvicorn's keep-alive timer, cancelled (as after a response) by the next byte
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(idle, self.timeout_keep_alive_handler)

    # -- receiving ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return  # discarded: answered and closing (or no longer ours: a WebSocket)
        cap = self._limits.max_header_bytes
        view: bytes | memoryview = data
        while view:
            used = self._head_bytes
            room = cap if used is None else cap - used
            piece: bytes | memoryview = view
            if len(view) > room:
                whole = memoryview(view)
                piece, view = whole[:room], whole[room:]
            else:
                view = b""
            self._head_reset = False
            self._feed(piece)
            if self._finished or self.transport.is_closing():
                return
            if used is not None and self._head_bytes is not None and not self._head_reset:
                self._head_bytes = used + len(piece)  # the head is still incomplete
                if self._head_bytes >= cap:
                    self._refuse("header_bytes")
                    return
        if self._timer is None:
            if self._head_bytes is None:
                self._arm(self._limits.body_timeout)
            elif self._head_bytes and (self.cycle is None or self.cycle.response_complete):
                self._arm(self._limits.header_timeout)

    def _feed(self, data: bytes | memoryview) -> None:
        """uvicorn's ``data_received`` (its source is checked by a test), with our refusals
        told apart from malformed requests."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refusal):
                self._refuse(exc.__context__.reason)
                return
            self._invalid()
        except httptools.HttpParserError:
            self._invalid()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:  # pragma: no cover - the server extra brings a WebSocket library
                self._unsupported_upgrade_warning()

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self._max_headers:
            raise _Refusal("header_count")
        _on_header(self, name, value)  # once per header: no super() lookup

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._disarm()  # the head's deadline
        # the request's disconnect, told without a task waiting in `receive` (`_asgi`)
        self.scope["extensions"] = {DISCONNECT: DisconnectSignal()}  # type: ignore[dict-item]
        super().on_headers_complete()
        if self._draining and self.cycle is not None:  # a request on a draining connection:
            self.cycle.keep_alive = False  # answered with `Connection: close`, then closed

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # the body's deadline
        self._head_bytes = 0
        self._head_reset = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # the next head began while the response was written: its deadline starts now
        if self._timer is None and self._head_bytes and not self._finished:
            self._arm(self._limits.header_timeout)

    # -- deadlines and refusals ------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._head_bytes is None:
            self._refuse("body_timeout")
        elif self._head_bytes:
            self._refuse("header_timeout")
        else:  # nothing of a request came: nothing to answer
            self._on_reject("idle")
            self.transport.close()

    def _refuse(self, reason: str) -> None:
        """Answer ``reason``'s refusal (unless a response has begun), then close lingering."""
        self._disarm()
        self._on_reject(reason)
        answer = self._answers[reason]
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                answer = b""  # nothing can be said in the middle of a response
            cycle.disconnected = True  # as uvicorn does when the client goes away
            cycle.message_event.set()
        self.pipeline.clear()
        self._finished = True
        transport = self.transport
        if answer:
            transport.write(answer)
        if not transport.can_write_eof():  # pragma: no cover - TLS transports
            transport.close()
            return
        transport.write_eof()
        self.flow.resume_reading()
        self._timer = self.loop.call_later(LINGER, transport.close)
