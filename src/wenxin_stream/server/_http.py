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
``param``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._asgi import BodyTooLarge, Receive, Request, Send, read_body

__all__ = [
    "Context",
    "HTTPError",
    "Handler",
    "Routes",
    "not_found",
    "optional_str",
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
    ``param`` and extra ``headers``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or []

    @property
    def type(self) -> str:
        """The OpenAI ``type`` of the error."""
        return _TYPES.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def frame(self, request_id: str | None = None) -> dict[str, Any]:
        """The WebSocket ``error`` frame."""
        frame: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
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


async def read_json(receive: Receive, request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises:
        HTTPError: 413 ``body_too_large``, 400 ``invalid_json``.
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
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "invalid_json", "the request body must be a JSON object")
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
