"""The load generator's HTTP/1.1 client: one keep-alive connection per worker, callbacks only.

Theory of operation
===================

Cheapness is the point: a benchmark whose client is the bottleneck measures the client. So
the per-chunk path contains no coroutine switch at all. A :class:`Connection` wraps an
``asyncio.Protocol`` (:class:`_Protocol`); :meth:`Connection.send` writes a pre-built request
and returns a future, and from then on everything happens in ``data_received``: the bytes go
through the sans-I/O :class:`~._http.ResponseParser` (head, chunked / length / close framing)
and the body pieces go straight to the request's :class:`Sink` together with one wall-clock
reading per read (``time.time()``, which is what ``wenxin_emitted_at`` stamps are compared
with). The future resolves once, when the response ends or the connection fails; the worker
coroutine wakes up once per stream, not once per chunk.

Failures are reported to the sink as a reason string (``incomplete``, ``protocol_error``,
``timeout``, ``cut_at_end`` …) through :meth:`Sink.on_error`, never raised into the event loop;
an unexpected exception from a sink callback (a bug) ends its stream as ``client_error``.
:meth:`Connection.abort` lets the runner's watchdog end a stream that exceeded a timeout; a sink
may end its own stream early by raising :class:`StreamAbort` from a callback.

A connection is reusable (:attr:`Connection.reusable`) when the last response ended cleanly
with keep-alive and nothing unsolicited followed it. :meth:`Connection.close` with
``reset=True`` closes with ``SO_LINGER`` 0 (an RST), so tens of thousands of client sockets do
not sit in ``TIME_WAIT`` between find-max steps and exhaust the ephemeral ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from typing import Protocol, cast

from ._http import HTTPProtocolError, IncompleteResponse, ResponseHead, ResponseParser

__all__ = ["BufferSink", "Connection", "Sink", "StreamAbort", "build_request"]

_LINGER_ZERO = struct.pack("ii", 1, 0)


class Sink(Protocol):
    """Receives one response; every callback gets the arrival time (``time.time()``)."""

    def on_head(self, head: ResponseHead, now: float) -> None:
        """The status line and headers arrived."""

    def on_body(self, pieces: list[bytes], now: float) -> None:
        """Body bytes arrived (one or more pieces, in order)."""

    def on_end(self, now: float) -> None:
        """The response ended cleanly."""

    def on_error(self, reason: str, detail: str, now: float) -> None:
        """The response failed (``reason`` is a short category, ``detail`` a message)."""


class StreamAbort(Exception):
    """Raised by a sink callback to end the stream and close the connection."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class BufferSink:
    """A sink that keeps the head and up to ``limit`` body bytes (for small JSON requests)."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.head: ResponseHead | None = None
        self.body = bytearray()
        self.error: tuple[str, str] | None = None
        self._limit = limit

    def on_head(self, head: ResponseHead, now: float) -> None:
        """Remember the head."""
        self.head = head

    def on_body(self, pieces: list[bytes], now: float) -> None:
        """Keep the body, up to the limit."""
        for piece in pieces:
            self.body += piece
        if len(self.body) > self._limit:
            raise StreamAbort("protocol_error", f"response body over {self._limit} bytes")

    def on_end(self, now: float) -> None:
        """Nothing to do: the body is complete."""

    def on_error(self, reason: str, detail: str, now: float) -> None:
        """Remember the failure."""
        self.error = (reason, detail)


def build_request(
    method: str, target: str, host: str, headers: list[tuple[str, str]], body: bytes = b""
) -> bytes:
    """Serialise a request (``Content-Length`` framing; ``Host`` first)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Protocol(asyncio.Protocol):
    """The connection's protocol: parses responses and feeds the current sink."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.sink: Sink | None = None
        self.future: asyncio.Future[None] | None = None
        self.head_seen = False
        self.closed = False
        self.reusable = False
        self.abort_reason: tuple[str, str] | None = None
        self.last_activity = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.last_activity = now
        parser = self.parser
        sink = self.sink
        if parser is None or sink is None:
            self._fail("protocol_error", "unsolicited bytes on an idle connection", now)
            return
        try:
            pieces = parser.feed(data)
            if not self.head_seen:
                if parser.head is None:
                    return
                self.head_seen = True
                sink.on_head(parser.head, now)
            if pieces:
                sink.on_body(pieces, now)
            if parser.done:
                if parser.trailing:
                    raise HTTPProtocolError("unsolicited bytes after the response")
                self._complete(now)
        except StreamAbort as exc:
            self._fail(exc.reason, exc.detail, now)
        except HTTPProtocolError as exc:
            self._fail("protocol_error", str(exc), now)
        except Exception as exc:  # a bug in a sink: end the stream visibly instead of hanging
            self._fail("client_error", f"{type(exc).__name__}: {exc}", now)

    def eof_received(self) -> bool | None:
        parser = self.parser
        if parser is not None and self.sink is not None:
            now = time.time()
            try:
                parser.feed_eof()
            except IncompleteResponse as exc:
                self._fail("incomplete", str(exc), now)
                return None
            self._complete(now, reusable=False)
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.sink is not None:
            reason, detail = self.abort_reason or ("incomplete", f"connection lost: {exc}")
            self._finish_error(reason, detail, time.time())

    def _complete(self, now: float, *, reusable: bool | None = None) -> None:
        sink = self.sink
        parser = self.parser
        assert sink is not None
        assert parser is not None
        self.sink = None
        self.parser = None
        self.reusable = parser.keep_alive if reusable is None else reusable
        if not self.reusable and self.transport is not None:
            self.transport.close()
        try:
            sink.on_end(now)
        finally:
            self._resolve()

    def _fail(self, reason: str, detail: str, now: float) -> None:
        self.reusable = False
        self.abort_reason = (reason, detail)
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows (soon) and reports the reason
        self._finish_error(reason, detail, now)

    def _finish_error(self, reason: str, detail: str, now: float) -> None:
        sink = self.sink
        if sink is None:
            return
        self.sink = None
        self.parser = None
        try:
            sink.on_error(reason, detail, now)
        finally:
            self._resolve()

    def _resolve(self) -> None:
        future = self.future
        self.future = None
        if future is not None and not future.done():
            future.set_result(None)


class Connection:
    """One HTTP/1.1 connection that carries one request at a time (keep-alive)."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - bounds the connect only
    ) -> Connection:
        """Connect (TCP_NODELAY) within ``timeout`` seconds.

        Raises:
            OSError: the connection failed. TimeoutError: it took longer than ``timeout``.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(
                _Protocol, host, port, ssl=tls, server_hostname=host if tls else None
            )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        protocol.reusable = True
        return cls(protocol)

    @property
    def reusable(self) -> bool:
        """Whether another request may be sent on this connection."""
        p = self._protocol
        return p.reusable and not p.closed and p.sink is None

    @property
    def last_activity(self) -> float:
        """Wall time of the last bytes received."""
        return self._protocol.last_activity

    @property
    def busy(self) -> bool:
        """Whether a response is in progress."""
        return self._protocol.sink is not None

    def send(self, request: bytes, sink: Sink, method: str = "POST") -> asyncio.Future[None]:
        """Write ``request``; the response goes to ``sink``. The future resolves (never fails)
        when the response has ended one way or another."""
        p = self._protocol
        if not self.reusable or p.transport is None:
            raise RuntimeError("connection is not reusable")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        p.parser = ResponseParser(method)
        p.sink = sink
        p.future = future
        p.head_seen = False
        p.abort_reason = None
        p.reusable = False
        p.last_activity = time.time()
        p.transport.write(request)
        return future

    def abort(self, reason: str, detail: str) -> None:
        """End the response in progress with ``reason`` and drop the connection."""
        p = self._protocol
        if p.sink is not None:
            p._fail(reason, detail, time.time())
        elif p.transport is not None:
            p.transport.abort()

    def close(self, *, reset: bool = False) -> None:
        """Close the connection; ``reset`` sends an RST (no ``TIME_WAIT`` on our side)."""
        p = self._protocol
        transport = p.transport
        p.reusable = False
        if transport is None or transport.is_closing():
            return
        if reset:
            sock = transport.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
            except OSError:  # pragma: no cover - already gone
                pass
            transport.abort()
        else:
            transport.close()


async def fetch(
    connection: Connection, request: bytes, method: str = "POST", limit: int = 1 << 20
) -> BufferSink:
    """Send a small request and read the whole response into a :class:`BufferSink`."""
    sink = BufferSink(limit)
    await connection.send(request, sink, method)
    return sink
