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
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

import urllib3
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


class Urllib3Response:
    """One streaming response (see :class:`~wenxin_stream._transport.SyncResponse`)."""

    def __init__(self, raw: urllib3.BaseHTTPResponse) -> None:
        self._raw = raw
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
        except Exception:
            logging.getLogger(__name__).debug("error while closing a response", exc_info=True)


class Urllib3Transport:
    """A pooled urllib3 transport for the sync :class:`~wenxin_stream.Client`."""

    def __init__(self, limits: Limits | None = None, *, verify: bool = True) -> None:
        limits = limits or Limits()
        self._pool = urllib3.PoolManager(
            num_pools=16,
            maxsize=limits.max_connections,
            block=True,  # beyond max_connections, callers wait for a free connection
            retries=False,
            cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        )

    def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> Urllib3Response:
        """Send ``request`` and return once the response headers are in."""
        timeout = urllib3.Timeout(connect=connect_timeout, read=head_timeout)
        try:
            raw = self._pool.urlopen(
                request.method,
                request.url,
                body=request.body,
                headers=dict(request.headers),
                preload_content=False,
                redirect=False,
                retries=False,
                timeout=timeout,
            )
        except NewConnectionError as exc:  # (a subclass of ConnectTimeoutError: first)
            raise APIConnectionError(f"cannot connect: {_describe(exc)}") from None
        except ConnectTimeoutError:
            raise APITimeoutError("connect", timeout=connect_timeout) from None
        except ReadTimeoutError:
            raise APITimeoutError("first_token", timeout=head_timeout) from None
        except (HTTPError, OSError) as exc:
            raise APIConnectionError(f"request failed: {_describe(exc)}") from None
        return Urllib3Response(raw)

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.clear()
