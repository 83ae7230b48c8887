"""Every error wenxin-stream raises, in one tree rooted at :class:`WenxinError`.

::

    WenxinError                           .partial_text, .end_reason (set during streams)
    ├── InvalidRequestError               a request breaks ERNIE's rules; raised before any I/O
    ├── ConfigurationError                a setting is invalid (.field, .variable); a ValueError
    ├── MissingCredentialsError           no credentials and the emulator fallback is off
    ├── ClientRateLimitTimeout            the client-side rate limit would wait past max_wait
    ├── APIError                          the server answered with an error (.api .code .message
    │   │                                 .request_id .status_code .body .kind .retryable)
    │   ├── BadRequestError               336001-336003, 336006-336103, v2 400 and other 4xx
    │   │   └── ContextLengthError        336007, 336103, v2 tokens_too_long, OpenAI-style too long
    │   ├── AuthenticationError           13, 14, v2 401, OAuth invalid_client
    │   │   └── TokenExpiredError         100, 110, 111, v2 401 invalid_iam_token: refresh, replay
    │   ├── PermissionDeniedError         6, 17, 19, 336004, 336104/5, v2 403 (model_offline…)
    │   ├── NotFoundError                 3, 336005, v2 invalid_model (400 or 401) / 404
    │   ├── RateLimitError                4, 18, 336501-336507, v2 429
    │   └── InternalServerError           1, 2, 15, 336000, 336100, 336200, v2 5xx
    ├── APIConnectionError                the transport failed (raised by the SDK)
    │   └── APITimeoutError               .timeout_kind: connect | first_token | idle | deadline
    └── ProtocolError                     a stream or message broke its protocol
        ├── LocalProtocolError            we were asked to produce something invalid
        └── RemoteProtocolError           the peer sent something invalid
            ├── SSELimitError             a line or event exceeded its configured size limit
            ├── MalformedResponseError    invalid JSON or wrong shape (.excerpt, short, redacted)
            └── IncompleteStreamError     the stream ended without its terminal event

The four after ``WenxinError`` are raised locally, before anything is sent (or, for
``ClientRateLimitTimeout``, instead of sending); everything else is about an exchange with the
server. ``except WenxinError`` catches every error of the package; ``except (APIError,
APIConnectionError, RemoteProtocolError)`` catches "the exchange failed" without the caller's
own mistakes.

Errors are split by blame, as h11 does: a ``LocalProtocolError`` is a bug on our side of the
wire (for example an SSE event name containing a newline), a ``RemoteProtocolError`` is the
peer's fault (for example an SSE line longer than the configured limit).

**Why APIConnectionError is not an APIError** (openai-python puts it under its ``APIError``).
Here ``APIError`` means *the server answered* and carries what it said: the API generation,
the HTTP status, and the code and request id when it sent them. A connection that failed or
broke has none of these, so as a subclass it would need ``status_code = None``, and every
reader of those attributes (``except APIError as e: e.status_code``) would have to handle a
case that is not an answer at all; the gateway's relay, which reports ``ERNIE answered error
{code}`` for an ``APIError``, would print ``None`` for a reset connection. openai-python can
afford it because its ``APIError`` is the "anything about the HTTP call" class and the "server
answered" class is ``APIStatusError``; our ``APIError`` is that second class (under the name
users of ERNIE SDKs know). Callers who want both catch the two explicitly (above), or
``WenxinError``. Retries do not depend on the placement: :func:`is_retryable` decides for
both families.

Retryability is decided in ONE place, :func:`is_retryable` (``WenxinError.retryable`` reads it):
an :class:`APIError` is retryable when its :attr:`~APIError.kind` (from ``_error_codes``) is
``"retryable"``; connection errors, timeouts and incomplete streams are transient and so
retryable too. Whether a retry is *safe* also depends on whether text already reached the caller
(``partial_text``), which only the SDK knows.

The factories :func:`api_error_from_v1`, :func:`api_error_from_v2`,
:func:`api_error_from_openai` (any OpenAI-compatible server: vLLM, FastDeploy, OpenAI's own
shape) and :func:`api_error_from_oauth` turn what the server said into the right subclass.
No message built here ever contains a credential: every server-supplied text passes through
:func:`~wenxin_stream._redact.redact`.

(About 650 lines, over the house's 600: the tree and the mapping of every server answer onto
it are one concept, and the mapping tables are where a reader checks which class a code gets.)
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._error_codes import (
    V1_CODES,
    V2_CODE_STATUS,
    ErrorKind,
    openai_kind,
    openai_status,
    v1_kind,
    v2_kind,
)
from ._redact import redact

if TYPE_CHECKING:
    from ._events import EndReason
    from ._validation import Problem

__all__ = [
    "EXCERPT_CHARS",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "ApiGeneration",
    "AuthenticationError",
    "BadRequestError",
    "ClientRateLimitTimeout",
    "ConfigurationError",
    "ContextLengthError",
    "IncompleteStreamError",
    "InternalServerError",
    "InvalidRequestError",
    "LocalProtocolError",
    "MalformedResponseError",
    "MissingCredentialsError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RemoteProtocolError",
    "SSELimitError",
    "TimeoutKind",
    "TokenExpiredError",
    "WenxinError",
    "api_error_from_oauth",
    "api_error_from_openai",
    "api_error_from_v1",
    "api_error_from_v2",
    "detached",
    "error_kind",
    "excerpt",
    "is_retryable",
]

ApiGeneration = Literal["v1", "v2", "oauth", "openai"]
"""Which protocol an :class:`APIError` came from: v1 chat, v2 chat, the v1 OAuth endpoint, or
an OpenAI-compatible server (``api="openai"``: vLLM, FastDeploy, SGLang…)."""

TimeoutKind = Literal["connect", "first_token", "idle", "deadline"]
"""What an :class:`APITimeoutError` bounded."""

EXCERPT_CHARS = 200
"""The most characters of a server body an error message quotes."""


def excerpt(data: bytes | bytearray | str, limit: int = EXCERPT_CHARS) -> str:
    """A short, redacted, printable excerpt of ``data`` for an error message: at most ``limit``
    characters (plus an ellipsis when cut)."""
    if isinstance(data, bytes | bytearray):
        text = bytes(data[: limit * 4]).decode("utf-8", "replace")
    else:
        text = data
    cut = len(text) > limit
    text = redact(text[: limit + 64])[:limit]  # redact first: a cut must not split a secret
    return text + "…" if cut else text


_E = TypeVar("_E", bound=BaseException)


def detached(exc: _E) -> _E:
    """A copy of ``exc`` without its traceback (its cause copied the same way, or dropped), to
    keep on a longer-lived object and raise again: raising the kept error itself would give it
    a traceback through the raising frame, whose locals hold the object that keeps it — a
    reference cycle, freed only by the cyclic collector (which the server runs seldom). Each
    raise of a fresh copy makes no cycle. ``exc`` itself when it cannot be copied (an
    exception class whose constructor the copy cannot call)."""
    twin = _copy(exc)
    return exc if twin is None else twin


def _copy(exc: _E, depth: int = 8) -> _E | None:
    try:
        twin = copy.copy(exc)
    except Exception:  # a foreign class whose copy fails
        return None
    twin.__traceback__ = None
    cause = exc.__cause__
    twin.__cause__ = twin.__context__ = _copy(cause, depth - 1) if cause and depth else None
    twin.__suppress_context__ = exc.__suppress_context__
    return twin


def _rebuild(cls: type[WenxinError], args: tuple[Any, ...], state: dict[str, Any]) -> WenxinError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class WenxinError(Exception):
    """Base class of every exception raised by wenxin-stream.

    ``partial_text`` (text already delivered to the caller, ``""`` by default) and
    ``end_reason`` (how the stream ended, ``None`` by default) are attached by the SDK to errors
    raised while a stream is running.
    """

    partial_text: str = ""
    end_reason: EndReason | None = None

    @property
    def retryable(self) -> bool:
        """Whether the error is transient (see :func:`is_retryable`)."""
        return is_retryable(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors would break the default pickling of exceptions.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class ProtocolError(WenxinError):
    """A byte stream or message did not follow its protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to produce something the protocol cannot carry."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class SSELimitError(RemoteProtocolError):
    """An SSE line or event grew past the decoder's configured limit.

    ``kind`` is ``"line"`` or ``"event"``; ``limit`` is the configured maximum in bytes.
    """

    def __init__(self, kind: str, limit: int) -> None:
        self.kind = kind
        self.limit = limit
        super().__init__(f"SSE {kind} exceeds the configured limit of {limit} bytes")


class MalformedResponseError(RemoteProtocolError):
    """The server sent invalid JSON, or JSON of the wrong shape.

    ``excerpt`` holds at most :data:`EXCERPT_CHARS` characters of the offending data, redacted
    (never the whole body); ``api`` names the protocol when known.
    """

    def __init__(
        self,
        message: str,
        data: bytes | bytearray | str | None = None,
        *,
        api: ApiGeneration | None = None,
    ) -> None:
        self.api = api
        self.excerpt = None if data is None else excerpt(data)
        text = redact(message)
        if self.excerpt is not None:
            text = f"{text}: {self.excerpt!r}"
        super().__init__(text)


class IncompleteStreamError(RemoteProtocolError):
    """The stream ended without its terminal event (v1: a chunk with ``is_end: true``; v2:
    ``data: [DONE]``), so the answer may be cut short.

    ``content_finished`` is true when the answer itself had finished (v2 sent a
    ``finish_reason``) and only the end-of-stream marker (and perhaps usage) is missing;
    ``finish_reason`` is that raw reason.
    """

    def __init__(
        self,
        message: str,
        *,
        api: ApiGeneration,
        content_finished: bool = False,
        finish_reason: str | None = None,
    ) -> None:
        self.api = api
        self.content_finished = content_finished
        self.finish_reason = finish_reason
        super().__init__(message)


class InvalidRequestError(WenxinError):
    """A request that breaks ERNIE's rules, raised locally before anything is sent.

    ``problem`` is the :class:`~wenxin_stream._validation.Problem` found and ``field`` the
    offending request field.
    """

    def __init__(self, problem: Problem, *, hint: str | None = None) -> None:
        self.problem = problem
        self.field = problem.field
        text = f"invalid request: {problem.message} (field {problem.field!r})"
        if hint:
            text = f"{text}; {hint}"
        super().__init__(redact(text))


class ConfigurationError(WenxinError, ValueError):
    """A setting is invalid (a malformed URL, a negative limit, QPS and RPM both set).

    ``field`` names the :class:`~wenxin_stream._settings.Settings` field and ``variable`` its
    environment variable (``None`` if it has none). The message never echoes a secret.
    """

    def __init__(self, field: str, problem: str, *, variable: str | None = None) -> None:
        self.field = field
        self.variable = variable
        super().__init__(f"{field} ({variable or '?'}): {problem}")


class MissingCredentialsError(WenxinError):
    """No usable ERNIE credentials were configured and the emulator fallback is off."""


class ClientRateLimitTimeout(WenxinError):
    """The client-side rate limiter would have to wait longer than ``max_wait`` for a slot.

    Raised locally, before anything is sent; not an :class:`APIError` and not retryable
    (retrying would only queue again). ``wait`` is the wait that was needed (seconds),
    ``max_wait`` the bound.
    """

    def __init__(self, wait: float, max_wait: float) -> None:
        self.wait = wait
        self.max_wait = max_wait
        super().__init__(
            f"client-side rate limit: the next slot is {wait:.3g}s away, "
            f"longer than max_wait={max_wait:g}s"
        )


class APIConnectionError(WenxinError):
    """The connection to the server failed, or broke before the response was complete."""

    def __init__(self, message: str = "connection error") -> None:
        super().__init__(redact(message))


class APITimeoutError(APIConnectionError):
    """A timeout expired. ``timeout_kind`` says which one: ``"connect"`` (establishing the
    connection), ``"first_token"`` (waiting for the first event), ``"idle"`` (the gap between
    two chunks) or ``"deadline"`` (the whole request); ``timeout`` is the limit in seconds."""

    def __init__(
        self, timeout_kind: TimeoutKind, *, timeout: float | None = None, message: str = ""
    ) -> None:
        self.timeout_kind: TimeoutKind = timeout_kind
        self.timeout = timeout
        if not message:
            limit = f" of {timeout:g}s" if timeout is not None else ""
            message = f"{timeout_kind.replace('_', ' ')} timeout{limit} expired"
        super().__init__(message)


class APIError(WenxinError):
    """The server answered with an error.

    Attributes:
        api: ``"v1"``, ``"v2"``, ``"oauth"`` or ``"openai"``.
        code: The v1 ``error_code`` (int), the v2 or OpenAI-style ``error.code`` (str; vLLM's
            numeric code as its digits), the OAuth ``error`` string, or ``None`` when the body
            carried none.
        message: The server's message (redacted).
        request_id: The ``id`` of the error body, else the ``X-Baidu-Request-Id`` /
            ``Request_id`` response header, else ``None``.
        status_code: The HTTP status (200 for v1 errors, which ERNIE sends as HTTP 200).
        error_type: The v2 ``error.type`` when given.
        body: The parsed error JSON (``None`` if the body was not JSON).
        headers: The response headers, when the caller passed them.
        retry_after: Seconds from a ``Retry-After`` (or ``retry-after-ms``) header, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        api: ApiGeneration,
        code: int | str | None,
        status_code: int,
        request_id: str | None = None,
        error_type: str | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.api: ApiGeneration = api
        self.code = code
        self.message = redact(message)
        self.status_code = status_code
        self.request_id = request_id
        self.error_type = error_type
        self.body = body
        self.headers = headers
        self.retry_after = retry_after
        super().__init__(self._describe())

    def _describe(self) -> str:
        head = f"{self.api} error" if self.code is None else f"{self.api} error {self.code}"
        if self.api != "v1" or self.status_code != 200:
            head += f", HTTP {self.status_code}"
        text = f"[{head}] {self.message}" if self.message else f"[{head}]"
        if self.request_id:
            text += f" (request id {redact(self.request_id)})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(api={self.api!r}, code={self.code!r}, "
            f"status_code={self.status_code}, "
            f"request_id={None if self.request_id is None else redact(self.request_id)!r}, "
            f"message={self.message!r})"
        )

    @property
    def kind(self) -> ErrorKind:
        """What to do about the error: ``"retryable"``, ``"token"`` (refresh the access token
        once and replay) or ``"permanent"`` (see :func:`error_kind`)."""
        return error_kind(self.api, self.code, self.status_code, self.error_type)

    @property
    def token_expired(self) -> bool:
        """Whether the access token is invalid or expired (refresh it once, then replay)."""
        return self.kind == "token"


class BadRequestError(APIError):
    """The request was rejected as invalid (v1 336001-336003, 336006-336103; v2 400 and any
    4xx without a more specific class)."""


class ContextLengthError(BadRequestError):
    """The prompt (plus the room asked for the answer) is longer than the model takes: v1
    336007 / 336103, v2 ``tokens_too_long`` / ``characters_too_long``, an OpenAI-compatible
    server's ``context_length_exceeded`` or "maximum context length" / ``max_model_len``
    refusal. Shorten the conversation or ``max_tokens``; retrying as is cannot help."""


class AuthenticationError(APIError):
    """The credentials were rejected (v1 13, 14; v2 401; OAuth ``invalid_client``)."""


class TokenExpiredError(AuthenticationError):
    """The access token is invalid or expired (v1 100, 110, 111; v2 401 ``invalid_iam_token``):
    refresh it once and replay the request."""


class PermissionDeniedError(APIError):
    """The account may not do this (v1 6, 17, 19, 336004, unsafe system/user_setting; v2 403:
    ``model_offline`` for a retired model, ``account_overdue``, the ``*_unsafe`` and
    Coding-Plan codes)."""


class NotFoundError(APIError):
    """The endpoint or model does not exist (v1 3, 336005; v2 ``invalid_model`` — 400 for an
    empty model, 401 "does not exist or you do not have access to it" — and 404)."""


class RateLimitError(APIError):
    """A rate limit or quota was hit (v1 4, 18, 336501-336507; v2 429). Retry with backoff."""


class InternalServerError(APIError):
    """The server failed or is overloaded (v1 1, 2, 15, 336000, 336100, 336200; v2 5xx)."""


# ---------------------------------------------------------------------------------------------
# Classification: one function for the kind, one for the subclass.


def error_kind(
    api: ApiGeneration, code: int | str | None, status_code: int, error_type: str | None = None
) -> ErrorKind:
    """The kind of an API error, from its protocol, code, HTTP status and (OpenAI-compatible
    servers only) type: the single source of truth for retryability, read by
    :attr:`APIError.kind` and :func:`is_retryable`."""
    if api == "openai":
        return openai_kind(status_code, None if code is None else str(code), error_type)
    if api == "v1" and isinstance(code, int):
        return v1_kind(code)
    if api == "oauth":
        if code in ("rate_limit_exceeded", "unknown_error"):
            return "retryable"
        return v2_kind(status_code, None) if code != "invalid_client" else "permanent"
    return v2_kind(status_code, code if isinstance(code, str) else None)


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is transient, so that the same request may succeed later: API errors of
    kind ``"retryable"``, connection errors and timeouts, and streams that ended early. Token
    errors are not retryable as such (they need a token refresh first). Replaying is only safe
    if no text reached the caller yet (``exc.partial_text == ""``)."""
    if isinstance(exc, APIError):
        return exc.kind == "retryable"
    return isinstance(exc, APIConnectionError | IncompleteStreamError)


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}
_V1_CLASS: dict[int, type[APIError]] = {
    3: NotFoundError,
    336005: NotFoundError,
    336004: PermissionDeniedError,
}
_OAUTH_CLASS: dict[str, type[APIError]] = {
    "invalid_client": AuthenticationError,
    "rate_limit_exceeded": RateLimitError,
    "invalid_request": BadRequestError,
    "unknown_error": InternalServerError,
}


def _class_for_status(status: int) -> type[APIError]:
    if status >= 500:
        return InternalServerError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return BadRequestError if status >= 400 else APIError


_TOO_LONG_V1 = frozenset({336007, 336103})
_TOO_LONG_V2 = frozenset({"tokens_too_long", "characters_too_long"})


def _class_for(api: ApiGeneration, code: int | str | None, status: int) -> type[APIError]:
    if code in _TOO_LONG_V1 if api == "v1" else code in _TOO_LONG_V2:
        return ContextLengthError
    if error_kind(api, code, status) == "token":
        return TokenExpiredError
    if api == "v1" and isinstance(code, int):
        known = V1_CODES.get(code)
        if code in _V1_CLASS:
            return _V1_CLASS[code]
        return _class_for_status(known.v2_status) if known else _class_for_status(status)
    if api == "oauth":
        known_oauth = _OAUTH_CLASS.get(code) if isinstance(code, str) else None
        return known_oauth or _class_for_status(status)
    if code == "invalid_model":  # 400 "model is empty", 401 "does not exist or no access"
        return NotFoundError
    if status < 400 and isinstance(code, str):
        status = V2_CODE_STATUS.get(code, status)
    return _class_for_status(status)


# ---------------------------------------------------------------------------------------------
# Factories.


def _header(headers: Mapping[str, str] | None, *names: str) -> str | None:
    """A header value by case-insensitive name (the first of ``names`` present)."""
    if not headers:
        return None
    lowered: dict[str, str] | None = None
    for name in names:
        value = headers.get(name)
        if value is None:
            if lowered is None:
                lowered = {k.lower(): v for k, v in headers.items()}
            value = lowered.get(name.lower())
        if value:
            return value
    return None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds only; an
    HTTP-date needs a clock and is ignored)."""
    for name, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        value = _header(headers, name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _request_id(body: Mapping[str, Any] | None, headers: Mapping[str, str] | None) -> str | None:
    rid = body.get("id") if body is not None else None
    if isinstance(rid, str) and rid:
        return rid
    return _header(headers, "X-Baidu-Request-Id", "Request_id", "X-Request-Id")


def _parse_body(body: object) -> tuple[Mapping[str, Any] | None, str | None]:
    """The error body as a JSON object, or (None, a description of what it was instead)."""
    if isinstance(body, Mapping):
        return body, None
    if body is None:
        return None, "no body"
    if isinstance(body, bytes | bytearray | str):
        if not (body.strip() if isinstance(body, str) else bytes(body).strip()):
            return None, "an empty body"
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return None, f"a non-JSON body: {excerpt(body)!r}"
        if isinstance(parsed, dict):
            return parsed, None
        return None, f"a JSON body that is not an object: {excerpt(body)!r}"
    return None, f"a body of type {type(body).__name__}"


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _build(
    api: ApiGeneration,
    code: int | str | None,
    message: str,
    status: int,
    body: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    error_type: str | None = None,
    cls: type[APIError] | None = None,
) -> APIError:
    """The error of class ``cls`` (by default the one :func:`_class_for` picks), with the
    request id and ``Retry-After`` read from ``body`` and ``headers``."""
    if cls is None:
        cls = _class_for(api, code, status)
    return cls(
        message,
        api=api,
        code=code,
        status_code=status,
        request_id=_request_id(body, headers),
        error_type=error_type,
        body=body,
        headers=headers,
        retry_after=_retry_after(headers),
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _error_object_fields(
    parsed: Mapping[str, Any] | None,
) -> tuple[object, str | None, str | None]:
    """(code as sent, message, type) of an error body shaped as v2's and OpenAI's are: the
    fields nested under ``error`` or flat beside it; ``{"error": "text"}`` gives the message;
    no body, none of them. Both :func:`api_error_from_v2` and :func:`api_error_from_openai`
    read bodies this way."""
    if parsed is None:
        return None, None, None
    error = parsed.get("error")
    source: Mapping[str, Any] = error if isinstance(error, Mapping) else parsed
    message = _str(source.get("message"))
    if isinstance(error, str):
        message = message or error
    return source.get("code"), message, _str(source.get("type"))


def api_error_from_v1(
    body: object, *, headers: Mapping[str, str] | None = None, status_code: int = 200
) -> APIError:
    """The error a v1 response carries: ``{"error_code": int, "error_msg": str, "id"?}``.

    ``body`` is the parsed JSON (or the raw bytes/str, for non-200 answers from a gateway);
    ``status_code`` is 200 for ordinary v1 errors. A body without ``error_code`` gives an
    :class:`APIError` classified by the HTTP status, with a message saying what came instead.
    """
    parsed, what = _parse_body(body)
    raw_code = parsed.get("error_code") if parsed is not None else None
    code: int | str | None
    if isinstance(raw_code, int) and not isinstance(raw_code, bool):
        code = raw_code
    elif isinstance(raw_code, str) and raw_code.strip().isdigit():
        code = int(raw_code)
    else:
        code = _header(headers, "X-Bce-Error-Code") or (None if raw_code is None else str(raw_code))
    if parsed is not None and "error_code" in parsed:
        known = V1_CODES.get(code) if isinstance(code, int) else None
        message = _str(parsed.get("error_msg")) or (known.message if known else "")
    else:
        message = _header(headers, "X-Bce-Error-Message") or (
            f"{_status_text(status_code)} with {what or 'a JSON body without error_code'}"
        )
    return _build("v1", code, message, status_code, parsed, headers)


def api_error_from_v2(
    status: int, body: object, *, headers: Mapping[str, str] | None = None
) -> APIError:
    """The error a v2 response carries: ``{"error": {"code", "message", "type"}, "id"}``.

    Also understands the BCE gateway's ``{"code": "AccessDenied", "message": ...}`` and empty or
    garbage bodies (the message then names the HTTP status and quotes a short excerpt). Errors
    inside a stream arrive with ``status`` 200 and are classified by their code.
    """
    parsed, what = _parse_body(body)
    raw_code, message, error_type = _error_object_fields(parsed)
    code = (None if raw_code is None else str(raw_code)) or _header(headers, "X-Bce-Error-Code")
    message = message or _header(headers, "X-Bce-Error-Message")
    if not message:
        message = f"{_status_text(status)} with {what or 'an error body without a message'}"
    return _build("v2", code, message, status, parsed, headers, error_type)


def api_error_from_oauth(
    status: int, body: object, *, headers: Mapping[str, str] | None = None
) -> APIError:
    """The error of the v1 OAuth token endpoint: ``{"error": str, "error_description": str}``
    (``invalid_client`` means a wrong API key or secret key)."""
    parsed, what = _parse_body(body)
    code = _str(parsed.get("error")) if parsed is not None else None
    message = _str(parsed.get("error_description")) if parsed is not None else None
    if not message:
        message = f"{_status_text(status)} with {what or 'an error body without a description'}"
    return _build("oauth", code, message, status, parsed, headers)


_CONTEXT_PHRASES = (
    "maximum context length",
    "max_model_len",
    "context length",
    "input text is too long",
)


def _is_context_length(code: str | None, message: str) -> bool:
    if code == "context_length_exceeded":
        return True
    lowered = message.lower()
    return any(phrase in lowered for phrase in _CONTEXT_PHRASES)


def api_error_from_openai(
    status: int, body: object, *, headers: Mapping[str, str] | None = None
) -> APIError:
    """The error an OpenAI-compatible server's response carries, in any of their shapes:

    - OpenAI's ``{"error": {"message", "type", "param", "code"}}`` (also FastDeploy's and
      current vLLM's; ``code`` a string, a number or null);
    - older vLLM's and FastDeploy's flat ``{"object": "error", "message", "type", "code": 400}``
      (also nested under ``error`` inside a stream);
    - ``{"error": "Unauthorized"}`` (vLLM's API-key check) and FastAPI's ``{"detail": …}``;
    - empty or garbage bodies (the message names the HTTP status and quotes an excerpt).

    The class follows :func:`~wenxin_stream._error_codes.openai_status` (the HTTP status, or
    inside a stream the numeric code, the code or the type); a 4xx that says the prompt is too
    long is a :class:`ContextLengthError`. ``code`` keeps what the server sent, as a string.
    """
    parsed, what = _parse_body(body)
    raw_code, message, error_type = _error_object_fields(parsed)
    code: str | None = None
    if raw_code is not None and not isinstance(raw_code, bool | dict | list):
        code = str(raw_code)
    detail = parsed.get("detail") if parsed is not None else None
    if message is None and detail is not None:  # FastAPI's own errors
        message = detail if isinstance(detail, str) else excerpt(json.dumps(detail))
    if not message:
        message = f"{_status_text(status)} with {what or 'an error body without a message'}"
    effective = openai_status(status, code, error_type)
    cls = _class_for_status(effective)
    if 400 <= effective < 500 and effective != 429 and _is_context_length(code, message):
        cls = ContextLengthError
    return _build("openai", code, message, status, parsed, headers, error_type, cls)
