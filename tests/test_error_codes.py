from __future__ import annotations

import pytest

from wenxin_stream._error_codes import (
    V1_CODES,
    V2_CODE_KINDS,
    V2_CODE_STATUS,
    V2_CODES,
    v1_kind,
    v2_kind,
)


@pytest.mark.parametrize("code", [1, 2, 4, 15, 18, 336000, 336100, 336200, 336501, 336502])
def test_retryable_v1_codes(code: int) -> None:
    assert v1_kind(code) == "retryable"


@pytest.mark.parametrize("code", [100, 110, 111])
def test_token_v1_codes(code: int) -> None:
    assert v1_kind(code) == "token"


@pytest.mark.parametrize("code", [3, 6, 14, 17, 19, 336001, 336002, 336003, 336006, 999999])
def test_permanent_v1_codes(code: int) -> None:
    assert v1_kind(code) == "permanent"


def test_every_v1_code_has_a_consistent_v2_counterpart() -> None:
    for info in V1_CODES.values():
        assert 400 <= info.v2_status < 600
        assert info.message
        assert V2_CODE_KINDS[info.v2_code] in ("retryable", "token", "permanent")
        if info.kind == "retryable":
            assert info.v2_status == 429 or info.v2_status >= 500


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "rpm_rate_limit_exceeded", "retryable"),
        (429, "tpm_rate_limit_exceeded", "retryable"),
        (429, None, "retryable"),
        (500, "internal_error", "retryable"),
        (503, "something_new", "retryable"),
        (401, "invalid_iam_token", "token"),
        (400, "malformed_json", "permanent"),
        (400, "invalid_model", "permanent"),
        (403, None, "permanent"),
        (418, "teapot", "permanent"),
    ],
)
def test_v2_kinds(status: int, code: str | None, kind: str) -> None:
    assert v2_kind(status, code) == kind


def test_the_2026_v2_table() -> None:
    offline = V2_CODES["model_offline"]
    assert (offline.status, offline.type, offline.message, offline.kind) == (
        403,
        "access_denied",
        "The model is offline",
        "permanent",
    )
    assert V2_CODES["account_overdue"].status == 403
    assert V2_CODES["internal_error"].type == "Internal_error"  # sic, capital I
    assert V2_CODES["invalid_iam_token"].type == "invalid_request_error"
    assert V2_CODES["image_url_unsafe"].type == "unsafe_request"
    for code in ("image_generation_interal_error", "image_genration_interal_error"):
        assert V2_CODES[code].kind == "retryable"  # both spellings are accepted


@pytest.mark.parametrize(
    ("code", "kind", "status"),
    [
        ("model_offline", "permanent", 403),
        ("account_overdue", "permanent", 403),
        ("invalid_image_url", "permanent", 400),
        ("no_parameter_permission", "permanent", 401),
        ("coding_plan_api_key_not_allowed", "permanent", 403),
        ("coding_plan_subscription_expired", "permanent", 403),
        ("coding_plan_rate_limit_exceeded", "retryable", 429),
        ("coding_plan_cluster_rate_limited", "retryable", 429),
        ("Offline_batch_reasoning_refused", "retryable", 429),
        ("dispatch_internal_error", "retryable", 500),
        ("quota_exceeded", "permanent", 403),  # a v1 twin's code, not in the v2 table
    ],
)
def test_every_code_has_a_kind_and_a_status(code: str, kind: str, status: int) -> None:
    assert V2_CODE_KINDS[code] == kind
    assert V2_CODE_STATUS[code] == status
    assert v2_kind(200, code) == kind  # also inside a stream (HTTP 200)
