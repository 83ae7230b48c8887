"""Tiny plain-ASGI helpers: types, request reading with a limit, JSON answers, the disconnect.

Theory of operation
===================

The emulator and the Q&A server speak ASGI 3 directly (no framework), so this module holds the
few pieces every route needs:

- the :data:`Scope` / :data:`Receive` / :data:`Send` aliases;
- :class:`Request`, the parsed parts of a scope (method, path, query pairs, lower-cased
  headers) read once per request;
- :func:`read_body`, which collects ``http.request`` messages into a ``bytearray`` and stops
  as soon as the body would pass the limit: a declared ``Content-Length`` over the limit is
  refused before any body is read, and otherwise no more than the limit plus one message (the
  server hands the body over in pieces of at most 64 KiB) is ever held;
- :func:`send_json`, a complete ``application/json`` answer with ``Content-Length``;
- :class:`TrackingSend`, which wraps ``send`` to remember the response's status (and so
  whether it has started): an app's safety net answers an error only while nothing was sent;
- :func:`wait_for_disconnect`, which returns when the client has gone (``http.disconnect`` or
  ``websocket.disconnect``). Raced against a streaming coroutine with
  :func:`wenxin_stream._aio.race` (whichever finishes first cancels the other), it stops an
  abandoned stream at once and a finished stream stops listening: two tasks per stream,
  nothing per chunk;
- :class:`DisconnectSignal`, what our own HTTP protocol (``_http_limits``) offers each request
  in ``scope["extensions"]`` under :data:`DISCONNECT`: a callback, run once from the event
  loop when the client's connection is lost before the response is complete. A long
  response follows its client with it instead of a task waiting in ``receive`` (the server's
  ``_connection.follow``); under another ASGI server the extension is absent and
  :func:`wait_for_disconnect` does the job.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
"""An ASGI connection scope."""

Message = MutableMapping[str, Any]
"""An ASGI event."""

Receive = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""

Send = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

Headers = list[tuple[bytes, bytes]]
"""Response headers as ASGI wants them."""


class ClientDisconnected(Exception):
    """The client went away while the request body was being read."""


class BodyTooLarge(Exception):
    """The request body is longer than the configured limit."""


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of an HTTP scope the emulator looks at, decoded once."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        """Decode a scope: query pairs (blank values kept), header names lower-cased and
        repeated headers joined with ``", "``."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query_string = scope.get("query_string", b"").decode("latin-1")
        return cls(
            method=scope.get("method", "GET").upper(),
            path=scope.get("path", "/"),
            query=parse_qsl(query_string, keep_blank_values=True),
            headers=headers,
        )

    def query_value(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        for key, value in self.query:
            if key == name:
                return value
        return None


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """Read the whole request body, at most ``limit`` bytes.

    Raises:
        BodyTooLarge: the declared or actual length exceeds ``limit``.
        ClientDisconnected: the client disconnected before the body was complete.
    """
    declared = headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit():  # `isdigit` alone accepts "²"; `int` not
        digits = declared.lstrip("0")
        if len(digits) > len(str(limit)) or int(digits or "0") > limit:
            raise BodyTooLarge  # a length of 5,000 digits is too large, not a crash
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return bytes(body)


def json_bytes(obj: object) -> bytes:
    """Compact UTF-8 JSON (``ensure_ascii=False``). Compact output never contains a newline,
    so it can go on one SSE ``data:`` line as it is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


async def send_json(
    send: Send,
    status: int,
    obj: object,
    headers: Headers | None = None,
    *,
    close: bool = False,
) -> None:
    """Send a complete JSON answer with ``Content-Length`` (and ``Connection: close`` when
    ``close``, e.g. after refusing to read a body)."""
    body = json_bytes(obj)
    all_headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]
    if headers:
        all_headers += headers
    if close:
        all_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class TrackingSend:
    """Wraps ``send`` to remember the status of the response once it has started (``0``
    before). A stream may write its body through :attr:`raw` once the status is known: one
    call fewer per chunk."""

    __slots__ = ("raw", "status")

    def __init__(self, send: Send) -> None:
        self.raw = send
        self.status = 0

    @property
    def started(self) -> bool:
        """Whether the response has started (its status is sent)."""
        return self.status != 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.raw(message)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has disconnected (``http.disconnect`` or
    ``websocket.disconnect``); any other message is dropped."""
    while (await receive())["type"] not in ("http.disconnect", "websocket.disconnect"):
        pass


DISCONNECT = "wenxin.disconnect"
"""The ``scope["extensions"]`` key of a request's :class:`DisconnectSignal`."""


class DisconnectSignal:
    """The client's connection was lost before the response was complete: :meth:`fire`
    (the server's protocol, from ``connection_lost``) runs the one subscribed callback, once.
    A callback subscribed after the loss is run at once."""

    __slots__ = ("_callback", "lost")

    def __init__(self) -> None:
        self._callback: Callable[[], object] | None = None
        self.lost = False

    def subscribe(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when the connection is lost (now, if it is already)."""
        if self.lost:
            callback()
            return
        self._callback = callback

    def unsubscribe(self) -> None:
        """Forget the callback (idempotent)."""
        self._callback = None

    def fire(self) -> None:
        """The connection is lost: run the callback (only the first call does anything)."""
        if self.lost:
            return
        self.lost = True
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def disconnect_signal(scope: Mapping[str, object]) -> DisconnectSignal | None:
    """The request's :class:`DisconnectSignal`, or ``None`` when its server offers none."""
    extensions = scope.get("extensions")
    if not isinstance(extensions, dict):
        return None
    signal = extensions.get(DISCONNECT)
    return signal if isinstance(signal, DisconnectSignal) else None
