"""The request gate: who is asking (API keys or dev mode), what they sent, and the errors.

Theory of operation
===================

Every route passes through here before it acts: :class:`Context` is one request as the app
decoded it (route, arrival time, client address, principal, audit fields); :func:`read_json`
reads a body under ``--max-body-bytes`` and insists on a JSON object; the ``field`` helpers
check types and name the offending ``param``.

:class:`Access` turns what a request presents into a :class:`Principal` — the *owner* of
everything the request touches (conversations, streams) plus the key's limits:

- an ``Authorization: Bearer wx-…`` header (or the WebSocket ``auth`` frame's key) that the
  :class:`~._keys.KeyCache` knows: the owner is the key's id;
- otherwise, while no active key exists (the cache re-checks every few seconds), **dev mode**:
  the owner is ``local``, whatever the request carried (so the OpenAI SDK's mandatory
  ``api_key`` can be anything) — but only when the server listens on a loopback address or
  was started with ``--allow-dev-mode-remote``. A server bound to a public address whose last
  key was revoked refuses everyone rather than falling open;
- otherwise 401 ``invalid_api_key``.

:func:`dev_mode_problem` is the start-up check: bound to a non-loopback address with no key
and no override, the server refuses to start.

:class:`HTTPError` is how a route says "answer this error": the app renders it in OpenAI's
shape, ``{"error": {"message", "type", "code", "param"}}``, with any extra headers
(``Retry-After``). Messages never carry secrets.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from .._asgi import BodyTooLarge, Receive, Request, read_body
from ._keys import KeyCache
from ._limits import KeyLimits

__all__ = [
    "LOCAL_OWNER",
    "Access",
    "Context",
    "HTTPError",
    "Principal",
    "dev_mode_problem",
    "is_loopback",
    "optional_str",
    "read_json",
    "required_str",
]

LOCAL_OWNER = "local"
"""The owner of everything in dev mode."""

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


def unauthorized(message: str = "a valid API key is required") -> HTTPError:
    """401 ``invalid_api_key``."""
    return HTTPError(401, "invalid_api_key", message)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: the ``owner`` of their data (a key id, or ``local``), the key's own
    ``limits`` (``None`` in dev mode: the server defaults) and whether this is dev mode."""

    owner: str
    limits: KeyLimits | None = None
    dev: bool = False


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dev_mode_problem(host: str, *, keys_exist: bool, allow_remote: bool) -> str | None:
    """Why the server must not start (dev mode on a public address), or ``None``."""
    if keys_exist or allow_remote or is_loopback(host):
        return None
    return (
        f"refusing to start: no API keys exist and {host!r} is not a loopback address, so "
        "anyone could use this server (dev mode). Create a key with `wenxin keys create "
        "--name NAME`, or pass --allow-dev-mode-remote if you really mean it"
    )


class Access:
    """Resolves requests to principals (see the module docstring)."""

    def __init__(self, keys: KeyCache, *, dev_mode_allowed: bool) -> None:
        self.keys = keys
        self.dev_mode_allowed = dev_mode_allowed

    async def from_header(self, authorization: str | None) -> Principal:
        """The principal of an HTTP request's ``Authorization`` header.

        Raises:
            HTTPError: 401 when no valid key is presented and dev mode does not apply.
        """
        if authorization:
            record = await self.keys.authenticate(authorization)
            if record is not None:
                return Principal(record.id, record.limits)
        return await self._dev_or_refuse()

    async def from_key(self, api_key: str | None) -> Principal:
        """The principal of a bare key (the WebSocket ``auth`` frame)."""
        if api_key:
            record = await self.keys.lookup(api_key)
            if record is not None:
                return Principal(record.id, record.limits)
        return await self._dev_or_refuse()

    async def dev_mode(self) -> bool:
        """Whether requests need no key right now."""
        return self.dev_mode_allowed and not await self.keys.keys_exist()

    async def _dev_or_refuse(self) -> Principal:
        if await self.keys.keys_exist():
            raise unauthorized()
        if not self.dev_mode_allowed:
            raise unauthorized("no API keys exist; create one with `wenxin keys create`")
        return Principal(LOCAL_OWNER, None, dev=True)


@dataclass(slots=True)
class Context:
    """One HTTP request as the app decoded it, and what the route learnt about it."""

    request: Request
    route: str
    received_at: float
    client: str
    params: dict[str, str] = field(default_factory=dict)
    principal: Principal | None = None
    audit: dict[str, Any] | None = None
    """Fields of this request's audit record (``None``: not audited)."""
    audit_taken: bool = False
    """A generation writes the audit record when it ends (it knows how it ended)."""


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
