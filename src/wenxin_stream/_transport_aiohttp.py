"""The async transport: aiohttp, one session (one connection pool) per client.

aiohttp was chosen over httpx by measurement: 500 concurrent v2 streams of 64 chunks from the
emulator cost httpx 208 ms of client CPU per 1,000 chunks and aiohttp 28 ms (same run, same
SSE decoder, see the closing note of issue 3), and httpx saturated the core (7.0 s wall for a
1.5 s workload) where aiohttp did not (1.8 s).

Backpressure comes for free and is kept: aiohttp's per-response ``StreamReader`` stops reading
from the socket once about ``2 × read_bufsize`` bytes are waiting (the transport is paused),
so TCP flow control pushes back on the server while a consumer is slow, and memory per stream
stays bounded (≈128 KiB: ``read_bufsize`` is set to 64 KiB here, since recent aiohttp's default
of 256 KiB would let 512 KiB wait per stream) however slow the consumer is. We read with
``readany()``, which returns whatever has arrived, so a chunk is handed on as soon as it lands.

The session is created lazily, inside the running loop, on first use; using one client from
two different event loops is refused with a clear error rather than failing obscurely.

**A kept-alive connection the server has just closed.** A server closes an idle kept-alive
connection when its own keep-alive timer runs out (uvicorn after 5 s, nginx after 75 s, others
elsewhere), and nothing tells the client in time: when the close crosses a request on the wire,
or reaches a loaded client's event loop only after the pool handed the connection out again,
the request fails before any response byte arrives (aiohttp's ``ServerDisconnectedError``, or
a reset / broken pipe writing it). Such a request is sent once more at once, on a new
connection (a second pool that never reuses one, :data:`FRESH`), and only then, when three
things hold: the connection had served an earlier request (the pool's connector remembers
the connections it handed out, :class:`_PoolConnector`; a new connection that fails like this
is a real failure and raised), nothing of a response had
arrived (a disconnect after part of a status line or headers is raised), and it is the first
such resend of this request. Why a resend is safe even for a POST: a server that closes a
connection without a byte of answer either never read the request (its idle timer had fired)
or dropped it unanswered; HTTP/1.1 lets a client retry on a new connection when it can tell
that the request was not acted on (RFC 9112 §9.3.1), and browsers resend exactly this case
(Chromium: a reused socket that fails before any response byte, whatever the method). For
the SDK's callers nothing is duplicated, because nothing was received, and the resend is not
one of the client's retries (:mod:`._retry`): it does not wait, does not spend
``max_attempts``, and counts in :attr:`AiohttpTransport.stale_resends`. The pool's idle
expiry (``Limits.keepalive_expiry``, 4 s by default) keeps most connections from reaching a
common server's timer in the first place; the resend covers the rest.
"""

from __future__ import annotations

import asyncio
import errno
import weakref
from collections.abc import Mapping
from contextvars import ContextVar

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from ._aio import ReadDeadline
from ._exceptions import APIConnectionError, APITimeoutError
from ._redact import redact
from ._transport import HTTPRequest, Limits

READ_BUFSIZE = 1 << 16
"""aiohttp's per-response read buffer; about twice this may wait unread per stream."""


FRESH = "fresh"
"""The second pool's role: one new connection per request, closed after it (``force_close``)."""

_UNANSWERED_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {redact(str(exc))}"


class _Attempt:
    """What the pool's connector said about one request's connection."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("wenxin_attempt", default=None)
"""The request being sent in this task (its connection is picked in the same task)."""


class _PoolConnector(aiohttp.TCPConnector):
    """The pool's connector: tells the request being sent (:data:`_ATTEMPT`) whether its
    connection had served an earlier one. aiohttp's tracing says the same
    (``on_connection_reuseconn``), but any trace config makes every request build and send
    all of its trace events: ~10 µs of a ~160 µs request (measured with a local server)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._served: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        attempt, protocol = _ATTEMPT.get(), conn.protocol
        if attempt is not None and protocol is not None:
            attempt.reused = protocol in self._served
            self._served.add(protocol)
        return conn


def _unlink(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and of its causes. aiohttp keeps a failed connection's
    error on the connection's protocol, and the error's frames refer back to the protocol: a
    cycle per failure (with the protocol, its transport and buffers) that only a full
    collection frees, and ``wenxin serve`` runs with the cyclic collector off (server/_gc.py;
    bench/SOAK.md, run 4: 1,293 of them in 10 minutes, 88,205 objects). The error's text is
    all the SDK keeps of it."""
    chain: BaseException | None = exc
    for _ in range(8):
        if chain is None:
            return
        chain.__traceback__ = None
        chain = chain.__cause__ or chain.__context__


def _unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection was gone before any byte of an answer arrived:
    a clean close with nothing parsed (a partial status line or headers would be ``message``),
    or a reset / broken pipe while sending."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return isinstance(exc.message, str)  # else the part of a response it had parsed
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False  # connecting failed: not a kept-alive connection
    # aiohttp wraps a failed write ("Can not write request body", errno None) around its cause,
    # e.g. "Cannot write to closing transport" once the server's close has been seen
    cause: BaseException | None = exc
    for _ in range(4):
        if cause is None:
            break
        if isinstance(cause, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
            return True
        if isinstance(cause, OSError) and cause.errno in _UNANSWERED_ERRNOS:
            return True
        cause = cause.__cause__
    return False


class AiohttpResponse:
    """One streaming response (see :class:`~wenxin_stream._transport.AsyncResponse`)."""

    def __init__(self, raw: aiohttp.ClientResponse, loop: asyncio.AbstractEventLoop) -> None:
        self._raw = raw
        self._deadline = ReadDeadline(loop)  # one timer per stream, not one per read
        self.status: int = raw.status
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in raw.headers.items()}
        self._eof = False
        self._closed = False

    async def read(self, timeout: float | None) -> bytes:  # noqa: ASYNC109 - a per-read budget
        """The next bytes of the body as soon as any arrive; ``b""`` at the end."""
        if self._eof or self._closed:
            return b""
        content = self._raw.content
        try:
            if timeout is None:
                data = await content.readany()
            else:
                if timeout <= 0:
                    raise TimeoutError
                data = await self._deadline.wait(content.readany(), timeout)
        except TimeoutError:
            raise
        except aiohttp.ClientPayloadError as exc:
            _unlink(exc)
            raise APIConnectionError(
                "the server closed the connection before the response was complete"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            _unlink(exc)
            raise APIConnectionError(f"connection broken: {_describe(exc)}") from None
        if not data:
            self._eof = True
        return data

    async def aclose(self) -> None:
        """Return the connection to the pool if the body was read to its end, else close it."""
        if self._closed:
            return
        self._closed = True
        self._deadline.close()
        if self._eof:
            self._raw.release()
        else:
            self._raw.close()  # an unfinished body: drop the connection


class AiohttpTransport:
    """A pooled aiohttp transport for :class:`~wenxin_stream.AsyncClient`."""

    def __init__(self, limits: Limits | None = None, *, verify: bool = True) -> None:
        self._limits = limits or Limits()
        self._verify = verify
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stale_resends = 0
        """Requests sent again on a new connection because a kept-alive one had been closed
        by the server (see the module docstring)."""

    def _new_session(self, *, fresh: bool) -> aiohttp.ClientSession:
        if fresh:  # one new connection per request, never pooled
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections,
                limit_per_host=0,
                force_close=True,
                ssl=self._verify,
            )
        else:
            connector = _PoolConnector(
                limit=self._limits.max_connections,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry,
                ssl=self._verify,
            )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            read_bufsize=READ_BUFSIZE,
        )

    def _get_session(self, role: str = "pooled") -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed:
            self._session = self._new_session(fresh=False)
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(
                "this AsyncClient is bound to another event loop; create one client per loop"
            )
        if role != FRESH:
            return self._session
        if self._fresh is None or self._fresh.closed:
            self._fresh = self._new_session(fresh=True)
        return self._fresh

    @property
    def open_connections(self) -> int:
        """Connections currently held by the pool (in use or idle)."""
        total = 0
        for session in (self._session, self._fresh):
            connector = None if session is None or session.closed else session.connector
            if connector is not None:
                total += len(getattr(connector, "_acquired", ()))
                total += sum(len(v) for v in getattr(connector, "_conns", {}).values())
        return total

    async def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> AiohttpResponse:
        """Send ``request`` and return once the response headers are in."""
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout
        )
        attempt = _Attempt()
        try:
            async with asyncio.timeout(head_timeout):
                try:
                    raw = await self._send(session, request, timeout, attempt)
                except (aiohttp.ClientError, OSError) as exc:
                    if not (attempt.reused and _unanswered(exc)):
                        raise
                    _unlink(exc)
                    self.stale_resends += 1  # see the module docstring: once, at once
                    raw = await self._send(self._get_session(FRESH), request, timeout, None)
        except aiohttp.ConnectionTimeoutError as exc:
            _unlink(exc)
            raise APITimeoutError("connect", timeout=connect_timeout) from None
        except TimeoutError as exc:
            _unlink(exc)
            raise APITimeoutError("first_token", timeout=head_timeout) from None
        except (aiohttp.ClientError, OSError) as exc:
            _unlink(exc)
            raise APIConnectionError(f"request failed: {_describe(exc)}") from None
        assert self._loop is not None  # set by _get_session
        return AiohttpResponse(raw, self._loop)

    @staticmethod
    async def _send(
        session: aiohttp.ClientSession,
        request: HTTPRequest,
        limits: aiohttp.ClientTimeout,
        attempt: _Attempt | None,
    ) -> aiohttp.ClientResponse:
        marked = _ATTEMPT.set(attempt)
        try:
            return await session.request(
                request.method,
                request.url,
                data=request.body,
                headers=dict(request.headers),
                timeout=limits,
                allow_redirects=False,
            )
        finally:
            _ATTEMPT.reset(marked)

    async def aclose(self) -> None:
        """Close the sessions and every pooled connection."""
        for session in (self._session, self._fresh):
            if session is not None and not session.closed:
                await session.close()
        self._session = self._fresh = None
