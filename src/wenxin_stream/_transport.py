"""The seam between the clients and an HTTP library: requests out, raw body pieces in.

The clients never touch urllib3 or aiohttp directly. They hand a :class:`HTTPRequest` to a
transport and read the response body as raw bytes, piece by piece, with a timeout per read
that the client computes (``_timeouts.read_timeout``). Everything ERNIE-specific — SSE
decoding, error detection, retries — happens above this line, once, for both clients.

Contract of every transport:

- ``open`` sends the request and returns once the status line and headers have arrived; it
  raises :class:`~wenxin_stream.APITimeoutError` (``"connect"`` or ``"first_token"``) or
  :class:`~wenxin_stream.APIConnectionError`. Exceptions of the HTTP library never escape:
  they are translated here, their text redacted, and not chained (``from None``), because the
  library's message may quote a URL carrying ``access_token=``.
- ``read(timeout)`` returns the next piece of the body as soon as any bytes are there
  (never waiting to fill a buffer), ``b""`` at the end of the body; it raises the built-in
  :class:`TimeoutError` when ``timeout`` passes with nothing read (the client knows which
  limit that was) and :class:`~wenxin_stream.APIConnectionError` when the connection breaks,
  including a chunked body that ends early.
- ``close()`` on a response returns its connection to the pool when the body was read to the
  end, and otherwise closes the connection (an unfinished stream cannot be reused). It is
  idempotent and safe to call from ``finally``.

Implementations: :mod:`._transport_urllib3` (sync), :mod:`._transport_aiohttp` (async),
:mod:`._transport_mock` (tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ._redact import redact


@dataclass(frozen=True, slots=True)
class Limits:
    """Connection-pool limits of one client (all its streams share one pool).

    ``max_connections`` bounds open connections (a stream holds one for its whole life, so it
    bounds concurrent streams; more callers wait for a free connection);
    ``max_keepalive_connections`` bounds idle connections kept for reuse; ``keepalive_expiry``
    closes idle connections after that many seconds.

    ``keepalive_expiry`` is 4 s by default: below the shortest common server keep-alive
    (uvicorn's and Node's 5 s; nginx keeps 75 s, Go's net/http and most load balancers 60 s or
    more), so a connection is dropped here before the server would close it under a request.
    A request that still meets a connection the server has just closed (a server with a
    shorter timer, a close on the wire, a loaded event loop) is sent once more on a new
    connection, before any byte of the answer (the transports' module docstrings say when and
    why that is safe). Raise it for a server known to keep connections longer, to save the
    connection set-up (a TLS handshake) of requests more than 4 s apart.
    """

    max_connections: int = 1000
    max_keepalive_connections: int = 100
    keepalive_expiry: float = 4.0


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """One HTTP request as a transport sends it. Its repr redacts credentials."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def __repr__(self) -> str:
        return f"HTTPRequest({self.method} {redact(self.url)})"


class SyncResponse(Protocol):
    """A response whose body is read piece by piece (see the module docstring)."""

    status: int
    headers: Mapping[str, str]  # lower-case names

    def read(self, timeout: float | None) -> bytes:
        """The next piece of the body, ``b""`` at its end."""

    def close(self) -> None:
        """Release or close the connection; idempotent."""


class SyncTransport(Protocol):
    """Sends requests for the sync client."""

    def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> SyncResponse:
        """Send ``request``; return when the headers have arrived."""

    def close(self) -> None:
        """Close every pooled connection."""


class AsyncResponse(Protocol):
    """The async twin of :class:`SyncResponse`."""

    status: int
    headers: Mapping[str, str]

    async def read(self, timeout: float | None) -> bytes:  # noqa: ASYNC109 - a per-read budget
        """The next piece of the body, ``b""`` at its end."""

    async def aclose(self) -> None:
        """Release or close the connection; idempotent."""


class AsyncTransport(Protocol):
    """Sends requests for the async client."""

    async def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> AsyncResponse:
        """Send ``request``; return when the headers have arrived."""

    async def aclose(self) -> None:
        """Close every pooled connection."""
