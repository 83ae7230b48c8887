"""HTTP plumbing of the server: the request context, error answers, bodies and fields.

Theory of operation
===================

The app decodes each request once into a :class:`Context` (the parsed request, the route
template it matched, when it arrived, the client's address, the path parameters, and the
fields of its audit record) and hands it to a :data:`Handler` — an ``async`` callable of
``(ctx, receive, send)`` that some route object bound at start-up. ``send`` is the app's
:class:`~wenxin_stream._asgi.TrackingSend`, so the safety net knows whether an answer started.

:class:`HTTPError` is how any layer of the server says "answer this error": the app renders it
in OpenAI's shape, ``{"error": {"message", "type", "code", "param"}}``, with any extra headers
(``Retry-After``); the WebSocket turns it into an ``error`` frame. Messages never carry
secrets.

:func:`read_json` reads a body under ``--max-body-bytes`` and insists on a JSON object; the
field helpers (:func:`required_str`, :func:`optional_str`) check types and name the offending
``param``. Input hygiene lives here too, for every route and the WebSocket: JSON may spell a
lone surrogate (``"\\ud800"``), text no UTF-8 encoder can write (the store, ERNIE, our own
answers), so :func:`check_text` refuses it naming the field (``messages[0].content``) — only
when the raw JSON holds a ``\\u`` escape at all, so an ordinary body costs one byte search;
and :func:`parse_count` accepts ASCII digits only, bounded before ``int`` (``str.isdigit``
also accepts ``²``, and ``int`` refuses 5,000 digits).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._asgi import BodyTooLarge, DisconnectSignal, Receive, Request, Send, read_body

__all__ = [
    "Context",
    "HTTPError",
    "Handler",
    "Routes",
    "check_text",
    "is_text",
    "not_found",
    "optional_str",
    "parse_count",
    "read_json",
    "required_str",
]

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "server_error",
    504: "upstream_error",
}


class HTTPError(Exception):
    """An error answer: ``status``, OpenAI-style ``code``, ``message``, the offending
    ``param`` and extra ``headers``.

    ``type`` overrides the OpenAI ``type`` the status implies; ``retry_after`` (seconds,
    rounded up to a whole second, at least 1) adds a ``Retry-After`` header; ``should_retry``
    adds ``x-should-retry`` (the header the official OpenAI SDKs obey: ``false`` stops their
    retries of a 429/5xx no retry can fix); ``upstream_code`` is ERNIE's own code, shown next
    to ours.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        type: str | None = None,  # OpenAI's name for it, shadowing the builtin here only
        retry_after: float | None = None,
        should_retry: bool | None = None,
        upstream_code: int | str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = list(headers or [])
        self._type = type
        self.retry_after = None if retry_after is None else max(1, math.ceil(retry_after))
        self.upstream_code = upstream_code
        if self.retry_after is not None:
            self.headers.append((b"retry-after", b"%d" % self.retry_after))
        if should_retry is not None:
            self.headers.append((b"x-should-retry", b"true" if should_retry else b"false"))

    @property
    def type(self) -> str:
        """The OpenAI ``type`` of the error."""
        return self._type or _TYPES.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "param": self.param,
        }
        if self.upstream_code is not None:
            error["upstream_code"] = self.upstream_code
        return {"error": error}

    def event(self) -> dict[str, Any]:
        """The error as it goes in-band, inside an event (SSE ``end``, WebSocket frames): the
        body's fields, the HTTP ``status`` it stands for and ``retry_after`` when known."""
        event: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "type": self.type,
            "status": self.status,
        }
        if self.retry_after is not None:
            event["retry_after"] = self.retry_after
        if self.upstream_code is not None:
            event["upstream_code"] = self.upstream_code
        return event

    def copy(self) -> HTTPError:
        """A new error giving the same answer. Raise a copy of an error kept on a longer-lived
        object (a generation's ``failure``): raising gives the error a traceback through the
        raising frames, which hold the keeper, which holds the error — a reference cycle that
        only a full collection frees (``wenxin serve`` runs with the cyclic collector off)."""
        twin = type(self).__new__(type(self))
        Exception.__init__(twin, *self.args)
        twin.__dict__.update(self.__dict__)
        twin.headers = list(self.headers)
        return twin

    def frame(self, request_id: str | None = None) -> dict[str, Any]:
        """The WebSocket ``error`` frame."""
        frame = self.event()
        frame["type"] = "error"  # the frame's type: the error's own does not go over WebSockets
        if request_id is not None:
            frame["id"] = request_id
        if self.param is not None:
            frame["param"] = self.param
        return frame


def not_found(message: str) -> HTTPError:
    """404 ``not_found`` (also for what exists but belongs to another owner)."""
    return HTTPError(404, "not_found", message)


@dataclass(slots=True)
class Context:
    """One HTTP request as the app decoded it, and what the route learnt about it."""

    request: Request
    route: str
    received_at: float
    client: str
    params: dict[str, str] = field(default_factory=dict)
    audit: dict[str, Any] | None = None
    """Fields of this request's audit record (``None``: not audited)."""
    audit_taken: bool = False
    """A generation writes the audit record when it ends (it knows how it ended)."""
    disconnect: DisconnectSignal | None = None
    """Told when the client's connection is lost mid-response (``None``: the ASGI server
    offers no such signal; a streaming route then waits in ``receive``)."""

    def audit_fields(self, *, question: str | None = None, **extra: Any) -> dict[str, Any]:
        """The fields of this request's audit record (the record itself, when the request is
        audited: what is added later shows in it), with ``question`` and ``extra`` added."""
        fields = self.audit if self.audit is not None else {}
        if question is not None:
            fields["question"] = question
        fields.update(extra)
        return fields


Handler = Callable[[Context, Receive, Send], Awaitable[None]]
"""A route: answers one request (raising :class:`HTTPError` to answer an error)."""

Routes = dict[str, dict[str, Handler]]
"""Path template (``/api/conversations/{id}``) → method → handler."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def is_text(value: str) -> bool:
    """Whether ``value`` is encodable as UTF-8 (holds no lone surrogate)."""
    return _SURROGATE.search(value) is None


def _surrogate_at(value: object, path: str) -> str | None:
    """The path of the first string in ``value`` (keys included) that holds a lone surrogate
    — text no UTF-8 encoder (the database, the upstream, our own answers) can write."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):  # the name itself cannot be shown: its object is
                return f"{path or 'body'} (a key)"
            if (found := _surrogate_at(item, f"{path}.{key}" if path else key)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _surrogate_at(item, f"{path}[{index}]")) is not None:
                return found
    return None


def check_text(body: dict[str, Any], raw: str | bytes) -> None:
    """Refuse a JSON object whose text is not encodable as UTF-8: a ``\\ud800`` escape alone
    decodes to a lone surrogate (``raw`` is the JSON it came from: without a ``\\u`` escape
    there is nothing to look for).

    Raises:
        HTTPError: 400 ``invalid_field`` naming the field.
    """
    if (b"\\u" not in raw) if isinstance(raw, bytes) else ("\\u" not in raw):
        return
    field = _surrogate_at(body, "")
    if field is not None:
        raise HTTPError(
            400,
            "invalid_field",
            f"{field!r} is not valid Unicode text (a lone surrogate escape such as \\ud800)",
            param=field,
        )


def parse_count(text: str, name: str, low: int, high: int) -> int:
    """A whole number written in ASCII digits (``str.isdigit`` also accepts ``²`` and other
    digits ``int`` refuses), in ``[low, high]``.

    Raises:
        HTTPError: 400 ``invalid_field`` naming ``name``.
    """
    text = text.strip()
    digits = text.lstrip("0") or "0"
    if not (text.isascii() and text.isdigit()):
        raise HTTPError(400, "invalid_field", f"{name} must be a whole number", param=name)
    if len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise HTTPError(400, "invalid_field", f"{name} must be {low}..{high}", param=name)
    return int(digits)


async def read_json(
    receive: Receive, request: Request, limit: int, *, empty_ok: bool = False
) -> dict[str, Any]:
    """The request body as a JSON object (``{}`` for an empty body when ``empty_ok``), its
    text checked (:func:`check_text`).

    Raises:
        HTTPError: 413 ``body_too_large``, 400 ``invalid_json``, 400 ``invalid_field``.
        ClientDisconnected: the client left while sending the body.
    """
    try:
        raw = await read_body(receive, request.headers, limit)
    except BodyTooLarge:
        raise HTTPError(
            413,
            "body_too_large",
            f"the request body is larger than {limit} bytes",
            headers=[(b"connection", b"close")],
        ) from None
    if empty_ok and not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "invalid_json", "the request body must be a JSON object")
    check_text(body, raw)
    return body


def required_str(body: dict[str, Any], name: str, *, blank_ok: bool = False) -> str:
    """A required string field (non-blank unless ``blank_ok``)."""
    if name not in body or body[name] is None:
        raise HTTPError(400, "missing_field", f"{name!r} is required", param=name)
    value = body[name]
    if not isinstance(value, str):
        raise HTTPError(400, "invalid_field", f"{name!r} must be a string", param=name)
    if not blank_ok and not value.strip():
        raise HTTPError(400, "invalid_field", f"{name!r} must not be blank", param=name)
    return value


def optional_str(body: dict[str, Any], name: str) -> str | None:
    """An optional string field (``None`` when absent or null)."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise HTTPError(400, "invalid_field", f"{name!r} must be a string", param=name)
    return value
