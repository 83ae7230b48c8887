"""ERNIE's error codes, both generations, in one table shared by client and emulator.

v1 answers errors as HTTP 200 with ``{"error_code": int, "error_msg": str}``; v2 answers a
4xx/5xx status with ``{"error": {"code": str, "message": str, "type": str}, "id": ...}``. Each
v1 code here has the v2 answer that means the same thing, so the emulator can inject "error
336501" on either route and the client can classify either shape with one function. The v2
table (:data:`V2_CODES`) is Baidu's current one (``shared/ERNIE-CURRENT.md`` §6.3, checked
2026-07-29), with its exact ``type`` strings — including ``Internal_error`` with a capital I —
and the Coding-Plan codes seen in 2026.

The ``kind`` of a code is what a client should do about it:

- ``"retryable"``: transient; retry with backoff (overload, rate limits, internal errors);
- ``"token"``: the access token is invalid or expired; refresh it once and replay;
- ``"permanent"``: retrying the same request cannot help (a bad request, a retired model, an
  overdue account, a Coding-Plan key on the wrong route).

OpenAI-compatible servers (vLLM, FastDeploy, SGLang, Ollama, OpenAI itself) have no shared
code table: :func:`openai_status` reads what they send — a real HTTP status, else a numeric
``code`` (vLLM puts the status there), else the ``code`` or ``type`` strings of
:data:`OPENAI_CODE_STATUS` / :data:`OPENAI_TYPE_STATUS` — and :func:`openai_kind` decides by that
status (429 and 5xx and 408 retryable, ``insufficient_quota`` never).

Sources: ``shared/ERNIE-PROTOCOL.md`` §1.9 (v1) and §2.6, ``shared/ERNIE-CURRENT.md`` §6.3 (v2)
and §7 (self-hosted ERNIE 4.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

ErrorKind = Literal["retryable", "token", "permanent"]


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One v1 error code with its message, its kind and its v2 counterpart."""

    code: int
    message: str
    kind: ErrorKind
    v2_status: int
    v2_code: str
    v2_type: str


def _e(code: int, message: str, kind: ErrorKind, status: int, v2: str, v2_type: str) -> ErrorCode:
    return ErrorCode(code, message, kind, status, v2, v2_type)


_IRE = "invalid_request_error"
_RATE = "rate_limit_exceeded"
_SERVER = "Internal_error"  # sic: Baidu's table spells the type with a capital I
_DENIED = "access_denied"
_UNSAFE = "unsafe_request"
_R: ErrorKind = "retryable"
_T: ErrorKind = "token"
_P: ErrorKind = "permanent"

_CODES = (
    _e(1, "Unknown error", _R, 500, "internal_error", _SERVER),
    _e(2, "Service temporarily unavailable", _R, 503, "service_unavailable", _SERVER),
    _e(3, "Unsupported openapi method", _P, 404, "not_found", _IRE),
    _e(4, "Open api request limit reached", _R, 429, "cluster_rate_limit_exceeded", _RATE),
    _e(
        6,
        "No permission to access data",
        _P,
        403,
        "no_parameter_permission",
        _DENIED,
    ),
    _e(13, "Get service token failed", _P, 401, "invalid_iam_token", _IRE),
    _e(14, "IAM Certification failed", _P, 401, "invalid_iam_token", _IRE),
    _e(15, "app not exists or create failed", _R, 503, "internal_error", _SERVER),
    _e(17, "Open api daily request limit reached", _P, 403, "quota_exceeded", _RATE),
    _e(
        18,
        "Open api qps request limit reached",
        _R,
        429,
        "user_rate_limit_exceeded",
        _RATE,
    ),
    _e(19, "Open api total request limit reached", _P, 403, "quota_exceeded", _RATE),
    _e(100, "Invalid parameter", _T, 401, "invalid_iam_token", _IRE),
    _e(110, "Access token invalid or no longer valid", _T, 401, "invalid_iam_token", _IRE),
    _e(111, "Access token expired", _T, 401, "invalid_iam_token", _IRE),
    _e(336000, "Internal error", _R, 500, "internal_error", _SERVER),
    _e(336001, "Invalid Argument", _P, 400, "invalid_argument", _IRE),
    _e(336002, "Invalid JSON", _P, 400, "malformed_json", _IRE),
    _e(336003, "Invalid Argument", _P, 400, "invalid_argument", _IRE),
    _e(336004, "Permission error", _P, 401, "no_parameter_permission", _DENIED),
    _e(336005, "API name not exist", _P, 400, "invalid_model", _IRE),
    _e(
        336006,
        "the length of messages must be an odd number",
        _P,
        400,
        "invalid_messages",
        _IRE,
    ),
    _e(
        336007,
        "the max length of current question is 4800",
        _P,
        400,
        "characters_too_long",
        _IRE,
    ),
    _e(336008, "Invalid Argument", _P, 400, "invalid_argument", _IRE),
    _e(336100, "try again", _R, 500, "dispatch_internal_error", _SERVER),
    _e(336101, "invalid HTTP method", _P, 405, "method_not_supported", _IRE),
    _e(336102, "Invalid Argument", _P, 400, "invalid_argument", _IRE),
    _e(336103, "the max input characters is exceeded", _P, 400, "tokens_too_long", _IRE),
    _e(336104, "system content is unsafe", _P, 403, "system_unsafe", _UNSAFE),
    _e(336105, "user_setting is invalid", _P, 403, "user_setting_unsafe", _UNSAFE),
    _e(336200, "Internal error", _R, 500, "internal_error", _SERVER),
    _e(336501, "Rate limit reached for RPM", _R, 429, "rpm_rate_limit_exceeded", _RATE),
    _e(336502, "Rate limit reached for TPM", _R, 429, "tpm_rate_limit_exceeded", _RATE),
    _e(336503, "Rate limit reached", _R, 429, "input_tpm_rate_limit_exceeded", _RATE),
    _e(336504, "Rate limit reached", _R, 429, "output_tpm_rate_limit_exceeded", _RATE),
    _e(336505, "Rate limit reached", _R, 429, "preemptible_rate_limit_exceeded", _RATE),
    _e(336507, "Rate limit reached", _R, 429, "cluster_rpm_rate_limit_exceeded", _RATE),
)

V1_CODES: Mapping[int, ErrorCode] = MappingProxyType({c.code: c for c in _CODES})
"""Every known v1 error code."""


@dataclass(frozen=True, slots=True)
class V2Code:
    """One v2 error code: its HTTP ``status``, ``type``, Baidu's ``message`` and its kind."""

    code: str
    status: int
    type: str
    message: str
    kind: ErrorKind


def _v2(code: str, status: int, v2_type: str, message: str, kind: ErrorKind) -> V2Code:
    return V2Code(code, status, v2_type, message, kind)


_V2_TABLE = (
    _v2("malformed_json", 400, _IRE, "Invalid Argument", _P),
    _v2("invalid_messages", 400, _IRE, "Invalid Argument", _P),
    _v2("characters_too_long", 400, _IRE, "the max input characters is exceeded", _P),
    _v2("tokens_too_long", 400, _IRE, "Prompt tokens too long", _P),
    _v2("invalid_argument", 400, _IRE, "Invalid Argument", _P),
    _v2("invalid_image_generation_prompt", 400, _IRE, "Invalid Argument", _P),
    _v2("invalid_image_generation_refer_image", 400, _IRE, "Invalid Argument", _P),
    _v2(
        "invalid_image_url",
        400,
        _IRE,
        "the image width and height are not within the allowed range",
        _P,
    ),
    _v2("invalid_plugin_argument", 400, _IRE, "Invalid Argument", _P),
    _v2("image_url_unsafe", 400, _UNSAFE, "the content of image_url.url field is unsafe", _P),
    _v2("no_parameter_permission", 401, _DENIED, "No permission", _P),
    # invalid_model is also answered 400 "model is empty" when `model` is missing.
    _v2(
        "invalid_model",
        401,
        _IRE,
        "The model does not exist or you do not have access to it.",
        _P,
    ),
    _v2("invalid_appid", 401, _IRE, "No permission to use the appid", _P),
    _v2("invalid_iam_token", 401, _IRE, "IAM Certification failed", _T),
    _v2("system_unsafe", 403, _UNSAFE, "the content of system field is invalid", _P),
    _v2("user_setting_unsafe", 403, _UNSAFE, "the content of user_setting field is invalid", _P),
    _v2("functions_unsafe", 403, _UNSAFE, "the content of functions field is invalid", _P),
    _v2("account_overdue", 403, _DENIED, "Access denied due to overdue account", _P),
    _v2("model_offline", 403, _DENIED, "The model is offline", _P),
    _v2("method_not_supported", 405, _IRE, "Only POST requests are accepted", _P),
    _v2("rpm_rate_limit_exceeded", 429, _RATE, "Rate limit reached for RPM", _R),
    _v2("tpm_rate_limit_exceeded", 429, _RATE, "Rate limit reached for TPM", _R),
    _v2("input_tpm_rate_limit_exceeded", 429, _RATE, "Rate limit reached for Input TPM", _R),
    _v2("output_tpm_rate_limit_exceeded", 429, _RATE, "Rate limit reached for Output TPM", _R),
    _v2("user_rate_limit_exceeded", 429, _RATE, "Rate limit reached for QPS", _R),
    _v2("cluster_rate_limit_exceeded", 429, _RATE, "Rate limit reached", _R),
    _v2("cluster_rpm_rate_limit_exceeded", 429, _RATE, "Rate limit reached", _R),
    _v2("cluster_tpm_rate_limit_exceeded", 429, _RATE, "Rate limit reached", _R),
    _v2("preemptible_rate_limit_exceeded", 429, _RATE, "Rate limit reached", _R),
    _v2("Offline_batch_reasoning_refused", 429, _RATE, "Rate limit reached", _R),
    _v2("internal_error", 500, _SERVER, "Internal error", _R),
    _v2("dispatch_internal_error", 500, _SERVER, "Internal error", _R),
    _v2("image_generation_interal_error", 500, _SERVER, "Internal error", _R),
    _v2("image_genration_interal_error", 500, _SERVER, "Internal error", _R),  # 2024 spelling
    # Coding Plan (third-party notes, 2026; the statuses are inferred from the codes' meaning).
    _v2(
        "coding_plan_api_key_not_allowed",
        403,
        _DENIED,
        "Coding Plan API keys are only accepted on /v2/coding/chat/completions",
        _P,
    ),
    _v2("coding_plan_subscription_expired", 403, _DENIED, "Coding Plan subscription expired", _P),
    _v2("coding_plan_rate_limit_exceeded", 429, _RATE, "Coding Plan rate limit reached", _R),
    _v2("coding_plan_cluster_rate_limited", 429, _RATE, "Coding Plan rate limit reached", _R),
)

V2_CODES: Mapping[str, V2Code] = MappingProxyType({c.code: c for c in _V2_TABLE})
"""Baidu's current v2 error table (and the Coding-Plan codes), by code."""

V2_CODE_KINDS: Mapping[str, ErrorKind] = MappingProxyType(
    {**{c.v2_code: c.kind for c in _CODES}, **{c.code: c.kind for c in _V2_TABLE}}
)
"""The kind of every known v2 error code string (the v2 table wins over the v1 twins)."""

V2_CODE_STATUS: Mapping[str, int] = MappingProxyType(
    {**{c.v2_code: c.v2_status for c in _CODES}, **{c.code: c.status for c in _V2_TABLE}}
)
"""The HTTP status each known v2 code comes with (to classify an error sent inside a stream,
whose HTTP status was 200)."""


def v1_kind(code: int) -> ErrorKind:
    """The kind of a v1 error code; unknown codes are permanent."""
    known = V1_CODES.get(code)
    return known.kind if known else "permanent"


def v2_kind(status: int, code: str | None) -> ErrorKind:
    """The kind of a v2 error: by its code when known, else by its HTTP status (429 and 5xx
    are retryable, everything else permanent). v2 has no token-expiry code: a bad or
    expired key is a 401 ``invalid_iam_token``, which only a caller with a key *source*
    (a minted IAM bearer token) can fix, so it is reported as ``"token"``."""
    if code == "invalid_iam_token":
        return "token"
    if code is not None and code in V2_CODE_KINDS:
        return V2_CODE_KINDS[code]
    if status == 429 or status >= 500:
        return "retryable"
    return "permanent"


OPENAI_CODE_STATUS: Mapping[str, int] = MappingProxyType(
    {
        # OpenAI's own codes
        "context_length_exceeded": 400,
        "invalid_api_key": 401,
        "model_not_found": 404,
        "rate_limit_exceeded": 429,
        "insufficient_quota": 429,
        "server_error": 500,
        # FastDeploy's ErrorCode values
        "invalid_value": 400,
        "missing_required_parameter": 400,
        "model_not_support": 404,
        "timeout": 504,
        "connection_error": 502,
        "internal_error": 500,
        # FastDeploy's finish_reason after its engine recovered from a failure: the answer
        # was cut (``_wire_openai`` raises it as an error of this code)
        "recover_stop": 500,
    }
)
"""The HTTP status an OpenAI-compatible server's ``error.code`` string means (used when the
error came inside a stream, whose HTTP status was 200)."""

OPENAI_TYPE_STATUS: Mapping[str, int] = MappingProxyType(
    {
        # OpenAI's types
        "invalid_request_error": 400,
        "authentication_error": 401,
        "permission_error": 403,
        "not_found_error": 404,
        "rate_limit_error": 429,
        "insufficient_quota": 429,
        "server_error": 500,
        # vLLM's (the class names of its HTTP errors)
        "BadRequestError": 400,
        "Unauthorized": 401,
        "NotFoundError": 404,
        "RateLimitError": 429,
        "InternalServerError": 500,
        "ServiceUnavailableError": 503,
        # FastDeploy's ErrorType values
        "timeout_error": 504,
        "internal_error": 500,
        "api_connection_error": 502,
    }
)
"""The HTTP status an OpenAI-compatible server's ``error.type`` means (after the code)."""

OPENAI_PERMANENT_CODES = frozenset({"insufficient_quota"})
"""Codes no retry can fix although their status (429) is otherwise retryable."""

STREAM_ERROR_STATUS = 500
"""The status of an error inside a stream that says nothing more: the server accepted the
request (bad requests are refused before a stream starts), so its engine failed."""


def openai_status(status: int, code: str | None, error_type: str | None) -> int:
    """The HTTP status an OpenAI-compatible error stands for: ``status`` itself unless it is
    2xx (an error inside a stream), else a numeric ``code``, the ``code`` or ``type`` tables,
    else :data:`STREAM_ERROR_STATUS`."""
    if not 200 <= status < 300:
        return status
    if code is not None and code.isdigit() and 400 <= int(code) <= 599:
        return int(code)
    if code is not None and code in OPENAI_CODE_STATUS:
        return OPENAI_CODE_STATUS[code]
    if error_type is not None and error_type in OPENAI_TYPE_STATUS:
        return OPENAI_TYPE_STATUS[error_type]
    return STREAM_ERROR_STATUS


def openai_kind(status: int, code: str | None, error_type: str | None) -> ErrorKind:
    """The kind of an OpenAI-compatible error (see :func:`openai_status`): 408, 429 and 5xx
    are retryable, except ``insufficient_quota``; a key is static, so a 401 is permanent."""
    if code in OPENAI_PERMANENT_CODES or error_type in OPENAI_PERMANENT_CODES:
        return "permanent"
    effective = openai_status(status, code, error_type)
    if effective in (408, 429) or effective >= 500:
        return "retryable"
    return "permanent"
