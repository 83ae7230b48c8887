"""One mapping from anything that goes wrong upstream (or cuts an answer) to what we answer.

Theory of operation
===================

ERNIE fails in two generations of codes (v1 integers in HTTP 200 bodies, v2 strings with a
status), and the SDK adds failures of its own (timeouts, broken streams, the client-side rate
limiter's refusal). Whoever is to blame decides our answer, so every row of :data:`ROWS` is a
*blame*, listing the v1 and v2 codes that mean it, and saying what our API answers:

=================  ======  ======================  =========================  ===============
row                status  type                    code                       Retry-After
=================  ======  ======================  =========================  ===============
``invalid``        400     invalid_request_error   ERNIE's (v2 name)          —
``too_long``       400     invalid_request_error   context_length_exceeded    —
``unsafe``         400     invalid_request_error   ERNIE's (v2 name)          —
``model``          404     invalid_request_error   model_not_found            —
``retired``        403     invalid_request_error   model_offline              —
``rate``           429     rate_limit_error        upstream_rate_limited      always
``quota``          429     insufficient_quota      insufficient_quota         if ERNIE said
``credentials``    502     upstream_error          upstream_auth_failed       —
``rejected``       502     upstream_error          upstream_rejected          —
``overloaded``     503     server_error            upstream_overloaded        if ERNIE said
``internal``       502     upstream_error          upstream_error             if ERNIE said
=================  ======  ======================  =========================  ===============

plus the failures that carry no code: a timeout is 504 ``upstream_timeout``; a broken
connection or stream 502 ``upstream_error``; the client-side limiter's refusal
(:class:`~wenxin_stream.ClientRateLimitTimeout`) is the ``rate`` row, with the wait it
computed. An unknown code is placed by ERNIE's HTTP status (400/413 → ``invalid``, 401/403 →
``credentials``, 429 → ``rate``, 503 → ``overloaded``, anything else → ``internal``).

The client's own mistakes keep ERNIE's code and message, so the client can fix its request;
failures of *our* configuration (credentials, permissions, billing, a request ERNIE could not
parse) are 502 — the client did nothing wrong — with a message that says the gateway's
upstream credentials were refused and never shows them (the SDK redacts every message). Rows
that no retry can fix add ``x-should-retry: false`` (the official OpenAI SDKs obey it).

A rate limit's ``Retry-After`` is ERNIE's own when it sent one, else the pause the server's
upstream client now imposes on every request (the SDK's limiter, which pauses for ERNIE's
``Retry-After`` or blocks the budget the code names: see ``_ratelimit``), at least 1 second.

**Channels.** With several upstream channels (``_channels``), the same table decides what
moves a request to another channel (:func:`blame`): the client's own mistakes (every 4xx row
but the two 429s) never do — another channel would refuse them too —, a rate limit or a quota
does (the channel is merely busy or spent), and every other failure does and counts against
the channel's breaker. When no channel can take a request at all, :class:`NoChannelError` is
answered 503 ``no_channel_available`` with the ``Retry-After`` of the first channel to come
back.
Refusals of our own (a key's rates, streams and budgets: ``_limits``, ``_budgets``) are not
rows: they happen before ERNIE is asked. They follow the same conventions — a spent budget is
429 ``budget_exceeded`` of type ``insufficient_quota`` with ``x-should-retry: false``, like
the ``quota`` row, and ``Retry-After`` until the budget's period resets (``docs/ERRORS.md``,
"Our own limits").

**Cuts.** An answer that ends without finishing (:data:`FINISHED_REASONS` are those that do)
is never shown as finished: :func:`cut_error` gives the error of an end reason that carries no
failure of its own (``server_shutdown``, ``server_crashed``, ``interrupted``: 503), and
:data:`OPENAI_FINISH` the ``finish_reason`` an OpenAI client sees for each end reason that
finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from .._error_codes import V1_CODES
from .._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ClientRateLimitTimeout,
    ContextLengthError,
    InvalidRequestError,
    WenxinError,
)
from ._http import HTTPError

__all__ = [
    "FINISHED_REASONS",
    "OPENAI_FINISH",
    "ROWS",
    "NoChannelError",
    "Row",
    "blame",
    "cut_error",
    "forget_traceback",
    "openai_finish",
    "upstream_failure",
]


@dataclass(frozen=True, slots=True)
class Row:
    """One blame: the ERNIE codes that mean it and what our API answers for them.

    ``code`` ``None`` means ERNIE's own code (its v2 name); ``retry_after`` is ``"always"``
    (ERNIE's, else the upstream client's pause), ``"given"`` (only ERNIE's) or ``"never"``;
    ``should_retry`` ``False`` adds ``x-should-retry: false``.
    """

    name: str
    status: int
    type: str
    code: str | None
    message: str
    retry_after: str
    should_retry: bool | None
    v1: tuple[int, ...]
    v2: tuple[str, ...]


_IRE = "invalid_request_error"

ROWS: tuple[Row, ...] = (
    Row("invalid", 400, _IRE, None, "ERNIE refused the request", "never", None,
        (336001, 336003, 336006, 336008, 336102, 336303, 337006),
        ("invalid_argument", "invalid_messages", "invalid_image_url", "invalid_plugin_argument",
         "invalid_image_generation_prompt", "invalid_image_genration_prompt",
         "invalid_image_generation_refer_image", "invalid_image_genration_refer_image")),
    Row("too_long", 400, _IRE, "context_length_exceeded", "the input is too long for the model",
        "never", None, (336007, 336103), ("characters_too_long", "tokens_too_long")),
    Row("unsafe", 400, _IRE, None, "ERNIE's safety review refused the request", "never", None,
        (336104, 336105),
        ("system_unsafe", "user_setting_unsafe", "functions_unsafe", "image_url_unsafe")),
    Row("model", 404, _IRE, "model_not_found", "ERNIE does not serve this model", "never", None,
        (3, 336005), ("invalid_model", "not_found")),
    Row("retired", 403, _IRE, "model_offline",
        "the model is retired: ERNIE no longer serves it (see /v1/models)", "never", False,
        (), ("model_offline",)),
    Row("rate", 429, "rate_limit_error", "upstream_rate_limited",
        "the upstream ERNIE API is rate limited", "always", None,
        (4, 18, 336501, 336502, 336503, 336504, 336505, 336507),
        ("rpm_rate_limit_exceeded", "tpm_rate_limit_exceeded", "input_tpm_rate_limit_exceeded",
         "output_tpm_rate_limit_exceeded", "user_rate_limit_exceeded",
         "cluster_rate_limit_exceeded", "cluster_rpm_rate_limit_exceeded",
         "cluster_tpm_rate_limit_exceeded", "preemptible_rate_limit_exceeded",
         "Offline_batch_reasoning_refused", "coding_plan_rate_limit_exceeded",
         "coding_plan_cluster_rate_limited")),
    Row("quota", 429, "insufficient_quota", "insufficient_quota",
        "the gateway's ERNIE quota is used up", "given", False, (17, 19), ("quota_exceeded",)),
    Row("credentials", 502, "upstream_error", "upstream_auth_failed",
        "ERNIE refused this gateway's upstream credentials or permissions (the operator must "
        "fix them; nothing is wrong with your request)", "never", False,
        (6, 13, 14, 100, 110, 111, 336004),
        ("invalid_iam_token", "invalid_appid", "no_parameter_permission", "account_overdue",
         "coding_plan_api_key_not_allowed", "coding_plan_subscription_expired",
         "AccessDenied")),
    Row("rejected", 502, "upstream_error", "upstream_rejected",
        "ERNIE could not parse the gateway's request (a gateway bug)", "never", False,
        (336002, 336101), ("malformed_json", "method_not_supported")),
    Row("overloaded", 503, "server_error", "upstream_overloaded", "ERNIE is overloaded",
        "given", None, (2, 336100), ("service_unavailable", "dispatch_internal_error")),
    Row("internal", 502, "upstream_error", "upstream_error", "ERNIE failed", "given", None,
        (1, 15, 336000, 336200),
        ("internal_error", "image_generation_interal_error", "image_genration_interal_error")),
)  # fmt: skip
"""The blames, in the order of ``docs/ERRORS.md`` (which shows the same table)."""

_BY_NAME = MappingProxyType({row.name: row for row in ROWS})
_BY_V1 = MappingProxyType({code: row for row in ROWS for code in row.v1})
_BY_V2 = MappingProxyType({code.lower(): row for row in ROWS for code in row.v2})
_BY_STATUS = MappingProxyType(
    {400: "invalid", 413: "invalid", 401: "credentials", 403: "credentials", 429: "rate",
     503: "overloaded"}
)  # fmt: skip

_BY_OPENAI_STATUS = MappingProxyType({**_BY_STATUS, 404: "model"})
"""An OpenAI-compatible server's statuses (vLLM and FastDeploy answer an unknown model 404)."""

FINISHED_REASONS = frozenset({"completed", "length", "content_filtered"})
"""End reasons of an answer that finished (stored ``complete``); every other one is a cut."""

OPENAI_FINISH = MappingProxyType({"length": "length", "content_filtered": "content_filter"})
"""The OpenAI ``finish_reason`` of each finished end reason but ``completed``, whose finish
reason is ERNIE's (``stop``, ``tool_calls``, ``function_call``; anything else ``stop``)."""


def openai_finish(end_reason: str | None, finish_reason: str | None) -> str | None:
    """The ``finish_reason`` an OpenAI client sees for an answer that ended with
    ``end_reason`` (ERNIE's ``finish_reason`` as the SDK normalised it), or ``None`` for a
    cut: a cut has no finish reason, it is an error (:func:`cut_error`)."""
    if end_reason not in FINISHED_REASONS:
        return None
    if end_reason in OPENAI_FINISH:
        return OPENAI_FINISH[end_reason]
    return finish_reason if finish_reason in ("stop", "tool_calls", "function_call") else "stop"


def cut_error(end_reason: str) -> HTTPError:
    """The error of an answer cut by ``end_reason`` when no failure of its own explains it."""
    if end_reason == "server_shutdown":
        return HTTPError(
            503,
            "server_shutdown",
            "the server shut down before the answer was complete; ask again",
        )
    if end_reason == "server_crashed":
        return HTTPError(
            503,
            "server_crashed",
            "the server producing the answer stopped before it was complete; ask again",
        )
    if end_reason == "interrupted":
        return HTTPError(
            503,
            "interrupted",
            "the server producing the answer stopped, and the answer could not be continued "
            "elsewhere (a tool call, a safety stop, or continuing is switched off); ask again",
        )
    return HTTPError(502, "incomplete", f"the answer ended before it was complete ({end_reason})")


class NoChannelError(APIConnectionError):
    """No channel of the gateway can take the request now: each is cooling down after
    failures (its breaker is open) or failed this very request. ``retry_after``: seconds
    until the first breaker lets a probe through (``None``: unknown)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


Blame = Literal["client", "busy", "channel"]


def blame(error: WenxinError) -> Blame:
    """Whose fault an upstream ``error`` is, for failover (see the module docstring):
    ``client`` (a 4xx row but ``rate`` and ``quota``: never moved to another channel),
    ``busy`` (a rate limit, ERNIE's or the channel's own limiter: moved, not held against the
    channel) or ``channel`` (anything else: moved, and counted by the channel's breaker)."""
    if isinstance(error, ClientRateLimitTimeout):
        return "busy"
    if isinstance(error, InvalidRequestError):
        return "client"
    if not isinstance(error, APIError):
        return "channel"  # timeouts, broken connections and streams, protocol errors
    row = _row_of(error)
    if row.name == "rate":
        return "busy"
    if row.status < 500 and row.name != "quota":
        return "client"
    return "channel"


def _row_of(error: APIError) -> Row:
    if isinstance(error, ContextLengthError):  # any upstream's "the prompt is too long"
        return _BY_NAME["too_long"]
    code = error.code
    if error.api == "openai":  # a self-hosted server's codes are not Qianfan's: its status
        return _BY_NAME[_BY_OPENAI_STATUS.get(error.status_code, "internal")]
    if isinstance(code, int) and code in _BY_V1:
        return _BY_V1[code]
    if isinstance(code, str) and code.lower() in _BY_V2:
        return _BY_V2[code.lower()]
    status = error.status_code if error.api != "v1" or error.status_code != 200 else 500
    return _BY_NAME[_BY_STATUS.get(status, "internal")]


def _ernie_code(error: APIError) -> str | None:
    """ERNIE's code under its v2 name (v1 codes translated), as the client is shown it; a
    self-hosted server's only when it is a name (vLLM's numbers are its HTTP status)."""
    code = error.code
    if error.api == "openai":
        if isinstance(code, str) and code and not (code.isascii() and code.isdigit()):
            return code
        return "invalid_request"
    if isinstance(code, int):
        known = V1_CODES.get(code)
        return known.v2_code if known is not None else str(code)
    return code


def upstream_failure(error: WenxinError, *, pause: float = 0.0) -> HTTPError:
    """What our API answers for an upstream ``error`` (see the module docstring); ``pause`` is
    how long the upstream client now holds every request (the ``Retry-After`` of a rate limit
    ERNIE gave none for)."""
    if isinstance(error, ClientRateLimitTimeout):
        row = _BY_NAME["rate"]
        return HTTPError(
            row.status,
            row.code or "",
            f"{row.message}: the gateway's requests to ERNIE are paused for "
            f"{math.ceil(max(error.wait, pause))} more seconds by ERNIE's rate limits",
            type=row.type,
            retry_after=max(error.wait, pause),
        )
    if isinstance(error, NoChannelError):
        return HTTPError(
            503,
            "no_channel_available",
            f"no upstream channel can take the request now: {error}",
            type="server_error",
            retry_after=max(1.0, error.retry_after or 0.0),
        )
    if isinstance(error, APITimeoutError):
        return HTTPError(504, "upstream_timeout", f"ERNIE timed out: {error}")
    if not isinstance(error, APIError):
        what = (
            "the connection to ERNIE failed"
            if isinstance(error, APIConnectionError)
            else ("ERNIE's answer broke off")
        )
        return HTTPError(502, "upstream_error", f"{what}: {error}")
    row = _row_of(error)
    ernie = _ernie_code(error)
    retry_after = error.retry_after if row.retry_after != "never" else None
    if row.retry_after == "always":
        retry_after = max(retry_after or 0.0, pause, 1.0)
    label = f"ERNIE error {error.code}" if error.code is not None else "ERNIE error"
    return HTTPError(
        row.status,
        row.code or ernie or "upstream_error",
        f"{row.message}: {error.message} ({label})",
        type=row.type,
        retry_after=retry_after,
        should_retry=row.should_retry,
        upstream_code=error.code,
        param="messages" if row.name == "too_long" else None,
    )


def forget_traceback(error: BaseException) -> None:
    """Drop the frames of a handled ``error`` and of the errors it was raised from.

    An error kept by the object it was raised in (the SDK's stream keeps its error, to raise
    it again on a later read) refers through its traceback to the frames it passed, and they
    to that object: a reference cycle, which keeps every object of those frames alive until
    a full collection — and the server runs few (``_gc``). Call this only once the error is
    handled for good: it is not re-raised and its traceback is not logged any more."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
