"""The sync transport: urllib3, one pool per client, body read with ``read1``.

urllib3 was chosen over httpx's sync client by measurement (see CHANGELOG / the issue's
closing note): similar CPU per chunk, far fewer dependencies, and direct access to the socket,
which lets every read carry its own timeout — the first-token limit before the body starts,
the idle limit after — by setting the socket's timeout just before the read. ``read1`` returns
whatever bytes have arrived instead of waiting to fill a buffer, so chunks reach the caller
as soon as they reach us.

urllib3 logs request lines (with the query string, where ERNIE v1 puts ``access_token``) at
DEBUG level; :class:`_RedactingFilter` is installed on its loggers so that those lines are
redacted before any handler sees them.

**A kept-alive connection the server has just closed** (the async transport's docstring says
why this happens and why a resend is safe even for a POST). urllib3 checks that an idle
connection is still open before it reuses it, which catches a close that has arrived, not one
that crosses the request on the wire. With ``retries=False`` it then raises; here a request
is sent once more at once, on a new connection that no pool keeps, when it went out on a
socket that had served an earlier request (:class:`_HTTPConnection` notes that per thread)
and failed before any byte of the status line (``RemoteDisconnected``, or a reset / broken
pipe; a partial status line is ``BadStatusLine`` and is raised). Not one of the client's
retries: no wait, not counted against ``max_attempts``; counted in
:attr:`Urllib3Transport.stale_resends`. ``Limits.keepalive_expiry`` is applied here too: a
connection idle for longer is reconnected before the request (urllib3 has no such expiry).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping
from http.client import RemoteDisconnected
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from ._exceptions import APIConnectionError, APITimeoutError
from ._redact import redact
from ._transport import HTTPRequest, Limits

_READ_SIZE = 65536


class _RedactingFilter(logging.Filter):
    """Redacts credentials in log records of the HTTP library (it logs full URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.msg = redact(str(record.msg) % args)
            record.args = None
        else:
            record.msg = redact(str(record.msg))
        return True


def install_log_redaction(*names: str) -> None:
    """Make sure the named loggers never emit an unredacted credential."""
    for name in names:
        target = logging.getLogger(name)
        if not any(isinstance(f, _RedactingFilter) for f in target.filters):
            target.addFilter(_RedactingFilter())


install_log_redaction("urllib3.connectionpool", "urllib3.connection", "urllib3.response")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {redact(str(exc))}"


class _Sending(threading.local):
    """The request this thread is sending: its pool's idle expiry, and whether it went out on
    a socket that had served an earlier request (set by the connection)."""

    expiry: float | None = None
    reused = False


_sending = _Sending()


def _begin(conn: HTTPConnection, last_sock: object, idle_since: float | None) -> None:
    """Before a request on ``conn``: close a socket idle past the expiry (the request then
    opens a new one), and note whether the request reuses the socket."""
    sock = conn.sock
    reused = sock is not None and sock is last_sock
    expiry = _sending.expiry
    idle = None if idle_since is None else time.monotonic() - idle_since
    if reused and expiry is not None and idle is not None and idle > expiry:
        conn.close()
        reused = False
    _sending.reused = reused


class _HTTPConnection(HTTPConnection):
    """urllib3's connection, noting reuse and idle time (see the module docstring)."""

    last_sock: object = None
    idle_since: float | None = None

    def request(self, *args: Any, **kwargs: Any) -> None:
        _begin(self, self.last_sock, self.idle_since)
        self.idle_since = None
        try:
            super().request(*args, **kwargs)
        finally:
            self.last_sock = self.sock


class _HTTPSConnection(_HTTPConnection, HTTPSConnection):
    """The same for TLS (the noting above, then urllib3's TLS connection)."""


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _unanswered(exc: BaseException) -> bool:
    """Whether urllib3's error says the connection was gone before any byte of a status line
    arrived (``RemoteDisconnected`` is a ``ConnectionResetError``)."""
    if not isinstance(exc, ProtocolError):
        return False
    cause = exc.args[1] if len(exc.args) > 1 else exc.__context__
    return isinstance(cause, RemoteDisconnected | ConnectionResetError | BrokenPipeError)


class Urllib3Response:
    """One streaming response (see :class:`~wenxin_stream._transport.SyncResponse`)."""

    def __init__(
        self, raw: urllib3.BaseHTTPResponse, owner: urllib3.PoolManager | None = None
    ) -> None:
        self._raw = raw
        self._conn: Any = getattr(raw, "connection", None)  # released to the pool at the end
        self._owner = owner  # a one-request pool (a resend), cleared at close
        self.status: int = raw.status
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in raw.headers.items()}
        self._eof = False
        self._closed = False

    def _socket(self) -> socket.socket | None:
        conn: Any = getattr(self._raw, "connection", None)
        sock = getattr(conn, "sock", None)
        return sock if isinstance(sock, socket.socket) else None

    def read(self, timeout: float | None) -> bytes:
        """The next bytes of the body as soon as any arrive; ``b""`` at the end."""
        if self._eof or self._closed:
            return b""
        if timeout is not None and timeout <= 0:
            raise TimeoutError
        sock = self._socket()
        if sock is not None:
            sock.settimeout(timeout)
        try:
            data = self._raw.read1(_READ_SIZE)
        except (ReadTimeoutError, TimeoutError):
            raise TimeoutError from None
        except ProtocolError as exc:
            if "IncompleteRead" in str(exc):
                raise APIConnectionError(
                    "the server closed the connection before the response was complete"
                ) from None
            raise APIConnectionError(f"connection broken: {_describe(exc)}") from None
        except (HTTPError, OSError) as exc:
            raise APIConnectionError(f"connection broken: {_describe(exc)}") from None
        if not data:
            self._eof = True
            if isinstance(self._conn, _HTTPConnection):
                self._conn.idle_since = time.monotonic()  # for the pool's idle expiry
        return data

    def close(self) -> None:
        """Return the connection to the pool if the body was read to its end, else close it."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._eof:
                self._raw.close()  # an unfinished body: the connection cannot be reused
            self._raw.release_conn()
            if self._owner is not None:
                self._owner.clear()  # a resend's new connection is not kept
        except Exception:
            logging.getLogger(__name__).debug("error while closing a response", exc_info=True)


class Urllib3Transport:
    """A pooled urllib3 transport for the sync :class:`~wenxin_stream.Client`."""

    def __init__(self, limits: Limits | None = None, *, verify: bool = True) -> None:
        limits = limits or Limits()
        self._expiry = limits.keepalive_expiry
        self._cert_reqs = "CERT_REQUIRED" if verify else "CERT_NONE"
        self._pool = urllib3.PoolManager(
            num_pools=16,
            maxsize=limits.max_connections,
            block=True,  # beyond max_connections, callers wait for a free connection
            retries=False,
            cert_reqs=self._cert_reqs,
        )
        self._pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        self.stale_resends = 0
        """Requests sent again on a new connection because a kept-alive one had been closed
        by the server (see the module docstring)."""

    def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> Urllib3Response:
        """Send ``request`` and return once the response headers are in."""
        timeout = urllib3.Timeout(connect=connect_timeout, read=head_timeout)
        owner = None
        try:
            _sending.expiry, _sending.reused = self._expiry, False
            try:
                raw = self._send(self._pool, request, timeout)
            except HTTPError as exc:
                if not (_sending.reused and _unanswered(exc)):
                    raise
                self.stale_resends += 1  # see the module docstring: once, at once
                owner = urllib3.PoolManager(num_pools=1, maxsize=1, cert_reqs=self._cert_reqs)
                try:
                    raw = self._send(owner, request, timeout)
                except BaseException:
                    owner.clear()
                    raise
            finally:
                _sending.expiry = None
        except NewConnectionError as exc:  # (a subclass of ConnectTimeoutError: first)
            raise APIConnectionError(f"cannot connect: {_describe(exc)}") from None
        except ConnectTimeoutError:
            raise APITimeoutError("connect", timeout=connect_timeout) from None
        except ReadTimeoutError:
            raise APITimeoutError("first_token", timeout=head_timeout) from None
        except (HTTPError, OSError) as exc:
            raise APIConnectionError(f"request failed: {_describe(exc)}") from None
        return Urllib3Response(raw, owner)

    @staticmethod
    def _send(
        pool: urllib3.PoolManager, request: HTTPRequest, timeout: urllib3.Timeout
    ) -> urllib3.BaseHTTPResponse:
        return pool.urlopen(
            request.method,
            request.url,
            body=request.body,
            headers=dict(request.headers),
            preload_content=False,
            redirect=False,
            retries=False,
            timeout=timeout,
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.clear()
