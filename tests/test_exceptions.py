"""The exception tree: classification of every error code, request ids, Retry-After, messages,
redaction of credentials, pickling."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest

import wenxin_stream
from wenxin_stream import _exceptions
from wenxin_stream._error_codes import V1_CODES, V2_CODE_KINDS, v1_kind
from wenxin_stream._events import EndReason
from wenxin_stream._exceptions import (
    EXCERPT_CHARS,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientRateLimitTimeout,
    ConfigurationError,
    ContextLengthError,
    IncompleteStreamError,
    InternalServerError,
    InvalidRequestError,
    LocalProtocolError,
    MalformedResponseError,
    MissingCredentialsError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RemoteProtocolError,
    SSELimitError,
    TokenExpiredError,
    WenxinError,
    api_error_from_oauth,
    api_error_from_v1,
    api_error_from_v2,
    error_kind,
    excerpt,
    is_retryable,
)
from wenxin_stream._redact import redact
from wenxin_stream._validation import Problem

FIXTURES = Path(__file__).parent / "fixtures" / "wire"

TOKEN = "24.6f1c0a9b8e7d6c5b4a3928170615f4e3.2592000.1716124427.282335-45678901"
SECRET = "kQ9sZ2xV7wB4nM1pL8rT3yU6"
API_KEY = "bce-v3/ALTAK-7h3kZp2QxW9/5b8c1d4e7f0a3b6c9d2e5f8a1b4c7d0e3f6a9b2c"
SIGNATURE = (
    "bce-auth-v1/4f2e9c1a7b3d/2024-04-06T08:23:49Z/1800/content-type;host;x-bce-date/"
    "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
)


# --- the tree -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (InvalidRequestError, WenxinError),
        (ConfigurationError, WenxinError),
        (ConfigurationError, ValueError),
        (MissingCredentialsError, WenxinError),
        (ClientRateLimitTimeout, WenxinError),
        (APIError, WenxinError),
        (BadRequestError, APIError),
        (AuthenticationError, APIError),
        (TokenExpiredError, AuthenticationError),
        (PermissionDeniedError, APIError),
        (NotFoundError, APIError),
        (RateLimitError, APIError),
        (InternalServerError, APIError),
        (APIConnectionError, WenxinError),
        (APITimeoutError, APIConnectionError),
        (ProtocolError, WenxinError),
        (LocalProtocolError, ProtocolError),
        (RemoteProtocolError, ProtocolError),
        (SSELimitError, RemoteProtocolError),
        (MalformedResponseError, RemoteProtocolError),
        (IncompleteStreamError, RemoteProtocolError),
    ],
)
def test_tree(child: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(child, parent)


def test_docstring_draws_every_exception_class() -> None:
    doc = _exceptions.__doc__ or ""
    for name in _exceptions.__all__:
        obj = getattr(_exceptions, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert name in doc, name


def _drawn_tree() -> dict[str, str]:
    """Each class of the docstring's drawing and its parent, read from the indentation."""
    doc = _exceptions.__doc__ or ""
    drawing = doc.split("::", 1)[1].split("\n\n", 2)[1]
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in drawing.splitlines():
        found = re.match(r"^([ │├└─]*)([A-Z]\w+)", line)
        if found is None:
            continue  # the second line of a long description
        depth, name = len(found.group(1)), found.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_the_drawing_is_the_tree() -> None:
    """The drawing in the module docstring is exactly the class hierarchy: every drawn class
    has the drawn parent as its first base, and every public error of the package is drawn."""
    parents = _drawn_tree()
    for name, parent in parents.items():
        cls = getattr(_exceptions, name)
        assert cls.__bases__[0] is getattr(_exceptions, parent), (name, parent)
    public_errors = {
        name
        for name in wenxin_stream.__all__
        if isinstance(obj := getattr(wenxin_stream, name), type) and issubclass(obj, Exception)
    }
    assert public_errors == {*parents, "WenxinError"}


def test_every_public_error_lives_in_the_exceptions_module() -> None:
    for name in wenxin_stream.__all__:
        obj = getattr(wenxin_stream, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert obj.__module__ == "wenxin_stream._exceptions", name
            assert getattr(_exceptions, name) is obj


def test_a_connection_error_is_not_an_api_error() -> None:
    """The documented decision: APIError means the server answered (status, code, request
    id); a failed or broken connection has none of these. Both are retryable all the same."""
    assert not issubclass(APIConnectionError, APIError)
    assert not issubclass(APITimeoutError, APIError)
    assert "Why APIConnectionError is not an APIError" in (_exceptions.__doc__ or "")
    assert is_retryable(APIConnectionError("reset"))
    assert is_retryable(APITimeoutError("idle", timeout=1.0))
    with pytest.raises((APIError, APIConnectionError)):
        raise APIConnectionError("reset")


def test_the_moved_errors_keep_their_messages_and_attributes() -> None:
    error = ConfigurationError(
        "qps_limit", "must not be negative, got -1.0", variable="QIANFAN_QPS_LIMIT"
    )
    assert str(error) == "qps_limit (QIANFAN_QPS_LIMIT): must not be negative, got -1.0"
    assert (error.field, error.variable) == ("qps_limit", "QIANFAN_QPS_LIMIT")
    assert str(ConfigurationError("x", "bad")) == "x (?): bad"
    timeout = ClientRateLimitTimeout(9.5, 0.2)
    assert (timeout.wait, timeout.max_wait) == (9.5, 0.2)
    assert "9.5s away, longer than max_wait=0.2s" in str(timeout)
    assert not timeout.retryable
    assert not MissingCredentialsError("none").retryable
    for exc in (error, timeout, MissingCredentialsError("none")):
        again = pickle.loads(pickle.dumps(exc))
        assert (type(again), str(again)) == (type(exc), str(exc))


def test_all_is_complete() -> None:
    for name in _exceptions.__all__:
        assert hasattr(_exceptions, name)


def test_stream_attributes_default_and_settable() -> None:
    exc = RateLimitError("x", api="v2", code="rpm_rate_limit_exceeded", status_code=429)
    assert exc.partial_text == ""
    assert exc.end_reason is None
    exc.partial_text = "你好"
    exc.end_reason = EndReason.UPSTREAM_ERROR
    assert exc.partial_text == "你好"
    assert exc.end_reason is EndReason.UPSTREAM_ERROR
    assert WenxinError.partial_text == ""  # the class default is untouched
    assert APIConnectionError().partial_text == ""


def test_sse_limit_error_unchanged() -> None:
    exc = SSELimitError("line", 10)
    assert (exc.kind, exc.limit) == ("line", 10)
    assert str(exc) == "SSE line exceeds the configured limit of 10 bytes"


# --- v1 codes -------------------------------------------------------------------------------

V1_EXPECTED: dict[int, type[APIError]] = {
    1: InternalServerError,
    2: InternalServerError,
    3: NotFoundError,
    4: RateLimitError,
    6: PermissionDeniedError,
    13: AuthenticationError,
    14: AuthenticationError,
    15: InternalServerError,
    17: PermissionDeniedError,
    18: RateLimitError,
    19: PermissionDeniedError,
    100: TokenExpiredError,
    110: TokenExpiredError,
    111: TokenExpiredError,
    336000: InternalServerError,
    336001: BadRequestError,
    336002: BadRequestError,
    336003: BadRequestError,
    336004: PermissionDeniedError,
    336005: NotFoundError,
    336006: BadRequestError,
    336007: ContextLengthError,
    336008: BadRequestError,
    336100: InternalServerError,
    336101: BadRequestError,
    336102: BadRequestError,
    336103: ContextLengthError,
    336104: PermissionDeniedError,
    336105: PermissionDeniedError,
    336200: InternalServerError,
    336501: RateLimitError,
    336502: RateLimitError,
    336503: RateLimitError,
    336504: RateLimitError,
    336505: RateLimitError,
    336507: RateLimitError,
}
V1_RETRYABLE = {1, 2, 4, 15, 18, 336000, 336100, 336200, 336501, 336502, 336503, 336504}
V1_RETRYABLE |= {336505, 336507}
V1_TOKEN = {100, 110, 111}


def test_expectations_cover_the_code_table() -> None:
    assert set(V1_EXPECTED) == set(V1_CODES)


@pytest.mark.parametrize("code", sorted(V1_CODES))
def test_v1_code_classification(code: int) -> None:
    known = V1_CODES[code]
    exc = api_error_from_v1({"error_code": code, "error_msg": known.message})
    assert type(exc) is V1_EXPECTED[code]
    assert exc.api == "v1"
    assert exc.code == code
    assert exc.status_code == 200
    assert exc.message == known.message
    assert exc.kind == v1_kind(code)
    expected_kind = (
        "retryable" if code in V1_RETRYABLE else "token" if code in V1_TOKEN else "permanent"
    )
    assert exc.kind == expected_kind
    assert exc.retryable is (code in V1_RETRYABLE)
    assert is_retryable(exc) is (code in V1_RETRYABLE)
    assert exc.token_expired is (code in V1_TOKEN)


def test_v1_unknown_code_is_a_permanent_plain_api_error() -> None:
    exc = api_error_from_v1({"error_code": 987654, "error_msg": "new"})
    assert type(exc) is APIError
    assert exc.kind == "permanent"
    assert not exc.retryable


def test_v1_code_as_digit_string_and_missing_message() -> None:
    exc = api_error_from_v1({"error_code": "336100"})
    assert isinstance(exc, InternalServerError)
    assert exc.code == 336100
    assert exc.message == "try again"  # from the code table
    assert api_error_from_v1({"error_code": 999, "error_msg": 5}).message == ""


def test_v1_str_format() -> None:
    exc = api_error_from_v1({"error_code": 336100, "error_msg": "try again", "id": "as-xxx"})
    assert str(exc) == "[v1 error 336100] try again (request id as-xxx)"
    exc = api_error_from_v1({"error_code": 336100, "error_msg": "try again"})
    assert str(exc) == "[v1 error 336100] try again"
    exc = api_error_from_v1({"error_code": 336100, "error_msg": ""})
    assert str(exc) == "[v1 error 336100] try again"


def test_v1_fixture_error_bodies() -> None:
    body = json.loads((FIXTURES / "v1_error_110.json").read_text())
    exc = api_error_from_v1(body)
    assert isinstance(exc, TokenExpiredError)
    assert exc.body == body
    body = json.loads((FIXTURES / "v1_error_336100.json").read_text())
    exc = api_error_from_v1(body)
    assert exc.request_id == "as-wdqkz1v5cf"
    assert exc.retryable


def test_v1_non_200_gateway_bodies() -> None:
    exc = api_error_from_v1(b"<html>bad gateway</html>", status_code=502)
    assert isinstance(exc, InternalServerError)
    assert exc.code is None
    assert exc.retryable
    assert "HTTP 502 Bad Gateway" in str(exc)
    assert "non-JSON body" in str(exc)
    exc = api_error_from_v1(
        b"",
        status_code=403,
        headers={"X-Bce-Error-Code": "AccessDenied", "X-Bce-Error-Message": "denied"},
    )
    assert isinstance(exc, PermissionDeniedError)
    assert (exc.code, exc.message) == ("AccessDenied", "denied")
    exc = api_error_from_v1({"result": "x"}, status_code=500)
    assert "without error_code" in exc.message
    exc = api_error_from_v1({"error_code": [1]}, status_code=400)
    assert exc.code == "[1]"
    assert isinstance(exc, BadRequestError)


# --- v2 -------------------------------------------------------------------------------------


def test_v2_observed_400_malformed_json() -> None:
    raw = (FIXTURES / "v2_400_malformed_json.json").read_bytes()
    exc = api_error_from_v2(400, raw)
    assert isinstance(exc, BadRequestError)
    assert exc.code == "malformed_json"
    assert exc.error_type == "invalid_request_error"
    assert exc.message == "Invalid Argument"
    assert exc.request_id == "as-yf9gcf138h"
    assert exc.kind == "permanent"
    assert str(exc) == (
        "[v2 error malformed_json, HTTP 400] Invalid Argument (request id as-yf9gcf138h)"
    )


def test_v2_observed_429_rpm() -> None:
    body = json.loads((FIXTURES / "v2_429_rpm.json").read_text())
    exc = api_error_from_v2(429, body, headers={"Retry-After": "7"})
    assert isinstance(exc, RateLimitError)
    assert exc.retryable
    assert exc.retry_after == 7.0
    assert exc.request_id == "as-wbx23eriqh"
    assert exc.error_type == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("status", "body", "cls", "kind"),
    [
        (
            401,
            {"error": {"code": "invalid_iam_token", "message": "IAM Certification failed"}},
            TokenExpiredError,
            "token",
        ),
        (
            401,
            {"error": {"code": "invalid_appid", "message": "x"}},
            AuthenticationError,
            "permanent",
        ),
        (
            401,
            {"error": {"code": "invalid_model", "message": "The model does not exist"}},
            NotFoundError,
            "permanent",
        ),
        (
            400,
            {"error": {"code": "invalid_model", "message": "model is empty"}},
            NotFoundError,
            "permanent",
        ),
        (
            403,
            {"code": "AccessDenied", "message": "Access denied."},
            PermissionDeniedError,
            "permanent",
        ),
        (404, {"error": {"code": "x", "message": "y"}}, NotFoundError, "permanent"),
        (
            405,
            {"error": {"code": "method_not_supported", "message": "Only POST"}},
            BadRequestError,
            "permanent",
        ),
        (418, None, BadRequestError, "permanent"),
        (
            500,
            {"error": {"code": "internal_error", "message": "x"}},
            InternalServerError,
            "retryable",
        ),
        (502, b"<html>", InternalServerError, "retryable"),
        (503, b"", InternalServerError, "retryable"),
        (504, "   ", InternalServerError, "retryable"),
        (429, b"[1, 2]", RateLimitError, "retryable"),
    ],
)
def test_v2_status_classification(
    status: int, body: object, cls: type[APIError], kind: str
) -> None:
    exc = api_error_from_v2(status, body)
    assert type(exc) is cls
    assert exc.kind == kind
    assert exc.status_code == status
    assert f"HTTP {status}" in str(exc)


def test_v2_garbage_bodies_name_the_status() -> None:
    assert api_error_from_v2(502, b"").message == "HTTP 502 Bad Gateway with an empty body"
    assert api_error_from_v2(599, None).message == "HTTP 599 with no body"
    msg = api_error_from_v2(500, b"oops").message
    assert msg == "HTTP 500 Internal Server Error with a non-JSON body: 'oops'"
    assert "not an object" in api_error_from_v2(500, b"[1]").message
    assert "type int" in api_error_from_v2(500, 5).message
    assert "without a message" in api_error_from_v2(500, {"error": {}}).message
    exc = api_error_from_v2(400, {"error": "plain text error"})
    assert exc.message == "plain text error"


@pytest.mark.parametrize("code", sorted(V2_CODE_KINDS))
def test_v2_codes_inside_a_stream_classified_by_code(code: str) -> None:
    exc = api_error_from_v2(200, {"error": {"code": code, "message": "m"}})
    expected = "token" if code == "invalid_iam_token" else V2_CODE_KINDS[code]
    assert exc.kind == expected
    if expected == "retryable":
        assert isinstance(exc, RateLimitError | InternalServerError)
    assert type(exc) is not APIError


def test_v2_unknown_code_inside_a_stream() -> None:
    exc = api_error_from_v2(200, {"error": {"code": "brand_new", "message": "m"}})
    assert type(exc) is APIError
    assert exc.kind == "permanent"


def test_v2_header_fallbacks() -> None:
    exc = api_error_from_v2(
        403,
        b"",
        headers={"x-bce-error-code": "SignatureDoesNotMatch", "x-bce-error-message": "bad sig"},
    )
    assert (exc.code, exc.message) == ("SignatureDoesNotMatch", "bad sig")


# --- OAuth ----------------------------------------------------------------------------------


def test_oauth_errors() -> None:
    body = json.loads((FIXTURES / "oauth_401_unknown_client.json").read_text())
    exc = api_error_from_oauth(401, body)
    assert type(exc) is AuthenticationError
    assert exc.kind == "permanent"
    assert not exc.token_expired
    assert str(exc) == "[oauth error invalid_client, HTTP 401] unknown client id"
    assert isinstance(api_error_from_oauth(200, {"error": "rate_limit_exceeded"}), RateLimitError)
    assert api_error_from_oauth(200, {"error": "rate_limit_exceeded"}).retryable
    assert isinstance(api_error_from_oauth(200, {"error": "unknown_error"}), InternalServerError)
    assert isinstance(api_error_from_oauth(400, {"error": "invalid_request"}), BadRequestError)
    exc = api_error_from_oauth(500, b"")
    assert isinstance(exc, InternalServerError)
    assert exc.retryable
    assert exc.code is None
    assert "HTTP 500" in exc.message
    assert error_kind("oauth", "invalid_client", 500) == "permanent"
    assert error_kind("oauth", "other", 401) == "permanent"


# --- request ids and Retry-After ------------------------------------------------------------


def test_request_id_sources() -> None:
    body = {"error_code": 2, "error_msg": "x"}
    assert api_error_from_v1(body, headers={"X-Baidu-Request-Id": "h-1"}).request_id == "h-1"
    assert api_error_from_v1(body, headers={"x-baidu-request-id": "h-2"}).request_id == "h-2"
    assert api_error_from_v1(body, headers={"Request_id": "sdk-py-1"}).request_id == "sdk-py-1"
    assert api_error_from_v1(body, headers={"Other": "1"}).request_id is None
    assert api_error_from_v1(body, headers={}).request_id is None
    with_id = {**body, "id": "as-body"}
    assert api_error_from_v1(with_id, headers={"X-Baidu-Request-Id": "h"}).request_id == "as-body"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({"retry-after-ms": "soon", "Retry-After": "2"}, 2.0),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    exc = api_error_from_v2(429, {"error": {"code": "rpm_rate_limit_exceeded"}}, headers=headers)
    assert exc.retry_after == expected
    assert exc.headers == headers


# --- other errors ---------------------------------------------------------------------------


def test_is_retryable_for_every_family() -> None:
    assert is_retryable(APIConnectionError())
    assert is_retryable(APITimeoutError("idle", timeout=30))
    assert is_retryable(IncompleteStreamError("cut", api="v1"))
    assert not is_retryable(MalformedResponseError("bad"))
    assert not is_retryable(SSELimitError("line", 1))
    problem = Problem("messages", "empty", 336006, "invalid_messages")
    assert not is_retryable(InvalidRequestError(problem))
    assert not is_retryable(ValueError())
    assert APIConnectionError().retryable
    assert not MalformedResponseError("bad").retryable


def test_timeout_error() -> None:
    exc = APITimeoutError("first_token", timeout=2.5)
    assert exc.timeout_kind == "first_token"
    assert exc.timeout == 2.5
    assert str(exc) == "first token timeout of 2.5s expired"
    assert str(APITimeoutError("connect")) == "connect timeout expired"
    assert str(APITimeoutError("deadline", message="custom")) == "custom"


def test_invalid_request_error() -> None:
    problem = Problem("temperature", "temperature must be in range (0, 1]", 336003, "x")
    exc = InvalidRequestError(problem, hint="try 0.8")
    assert exc.problem is problem
    assert exc.field == "temperature"
    assert str(exc) == (
        "invalid request: temperature must be in range (0, 1] (field 'temperature'); try 0.8"
    )


def test_incomplete_stream_error() -> None:
    exc = IncompleteStreamError("x", api="v2", content_finished=True, finish_reason="stop")
    assert (exc.api, exc.content_finished, exc.finish_reason) == ("v2", True, "stop")


def test_malformed_excerpt_is_short() -> None:
    body = b'{"result": "' + "很长的回答".encode() * 10_000 + b'"'
    exc = MalformedResponseError("bad JSON", body, api="v1")
    assert exc.excerpt is not None
    assert len(exc.excerpt) <= EXCERPT_CHARS + 1
    assert exc.excerpt.endswith("…")
    assert len(str(exc)) < 400
    assert MalformedResponseError("no data").excerpt is None
    assert str(MalformedResponseError("no data")) == "no data"


def test_excerpt_handles_invalid_utf8() -> None:
    assert excerpt(b"\xff\xfeabc") == "\ufffd\ufffdabc"
    assert excerpt("short") == "short"
    assert excerpt(bytearray(b"x" * 10), limit=4) == "xxxx…"


def test_pickle_round_trip() -> None:
    exc = api_error_from_v2(429, {"error": {"code": "rpm_rate_limit_exceeded", "message": "m"}})
    exc.partial_text = "部分"
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is RateLimitError
    assert str(copy) == str(exc)
    assert copy.partial_text == "部分"
    assert copy.kind == "retryable"
    timeout = pickle.loads(pickle.dumps(APITimeoutError("idle", timeout=1.0)))
    assert timeout.timeout_kind == "idle"
    limit = pickle.loads(pickle.dumps(SSELimitError("event", 5)))
    assert (limit.kind, limit.limit) == ("event", 5)


def test_repr() -> None:
    exc = api_error_from_v1({"error_code": 18, "error_msg": "qps", "id": "as-1"})
    assert repr(exc) == (
        "RateLimitError(api='v1', code=18, status_code=200, request_id='as-1', message='qps')"
    )


# --- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"POST /chat/completions?access_token={TOKEN}&x=1", TOKEN),
        (
            f"https://aip.baidubce.com/oauth/2.0/token?grant_type=client_credentials"
            f"&client_id=abc123&client_secret={SECRET}",
            SECRET,
        ),
        (f'{{"access_token": "{TOKEN}", "expires_in": 2592000}}', TOKEN),
        (f'{{"refresh_token":"{TOKEN}"}}', TOKEN),
        (f"Authorization: Bearer {API_KEY}", API_KEY),
        (f"authorization={SIGNATURE}", SIGNATURE),
        (f"signed with {SIGNATURE} at noon", "0a1b2c3d4e5f6071"),
        (f"key {API_KEY} rejected", "ALTAK-7h3kZp2QxW9"),
        (f"header 'Authorization': 'token {SECRET}'", SECRET),
        (f"bearer {SECRET}", SECRET),
    ],
)
def test_redact_masks_secrets(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert "***" in masked


def test_redact_keeps_ordinary_text() -> None:
    text = "Access token invalid or no longer valid; 请稍后再试 (request id as-1)"
    assert redact(text) == text
    assert redact("access_token=") == "access_token=***"


@pytest.mark.parametrize(
    "make",
    [
        lambda m: api_error_from_v1({"error_code": 110, "error_msg": m, "id": m}),
        lambda m: api_error_from_v2(401, {"error": {"code": "invalid_iam_token", "message": m}}),
        lambda m: api_error_from_v2(502, m.encode()),
        lambda m: api_error_from_v1(m.encode(), status_code=502),
        lambda m: api_error_from_oauth(401, {"error": "invalid_client", "error_description": m}),
        lambda m: MalformedResponseError(f"bad {m}", m.encode()),
        lambda m: APIConnectionError(f"failed to connect to {m}"),
        lambda m: InvalidRequestError(Problem("x", m, 1, "y")),
    ],
)
def test_no_secret_survives_in_str_or_repr(make: object) -> None:
    message = (
        f"GET https://aip.baidubce.com/x?access_token={TOKEN} with Authorization: Bearer "
        f"{API_KEY} and {SIGNATURE} client_secret={SECRET}"
    )
    exc = make(message)  # type: ignore[operator]
    for text in (str(exc), repr(exc)):
        for secret in (TOKEN, SECRET, "ALTAK-7h3kZp2QxW9", "0a1b2c3d4e5f6071"):
            assert secret not in text


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, "model_offline", PermissionDeniedError),
        (200, "model_offline", PermissionDeniedError),  # inside a stream
        (200, "account_overdue", PermissionDeniedError),
        (200, "invalid_image_url", BadRequestError),
        (200, "coding_plan_rate_limit_exceeded", RateLimitError),
        (200, "image_generation_interal_error", InternalServerError),
        (401, "invalid_model", NotFoundError),
        (200, "invalid_model", NotFoundError),
    ],
)
def test_the_2026_codes_get_their_class(status: int, code: str, cls: type[APIError]) -> None:
    body = {"error": {"code": code, "message": "m", "type": "t"}, "id": "as-x"}
    exc = api_error_from_v2(status, body)
    assert type(exc) is cls
    assert exc.code == code
    assert exc.retryable is (cls in (RateLimitError, InternalServerError))
