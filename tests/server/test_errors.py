"""The error table of ``server/_errors.py`` (and ``docs/ERRORS.md``) as data: every code of
every row, the codes ERNIE may add, failures without a code, cuts and finish reasons. The
same rows through the real server: ``test_serve_error_mapping.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from wenxin_stream._error_codes import V1_CODES
from wenxin_stream._exceptions import (
    APIConnectionError,
    APITimeoutError,
    ClientRateLimitTimeout,
    IncompleteStreamError,
    api_error_from_openai,
    api_error_from_v1,
    api_error_from_v2,
)
from wenxin_stream.server._errors import ROWS, cut_error, openai_finish, upstream_failure

ROOT = Path(__file__).resolve().parents[2]


def test_every_code_of_every_row_maps_to_its_row() -> None:
    for row in ROWS:
        for v1 in row.v1:
            failure = upstream_failure(api_error_from_v1({"error_code": v1, "error_msg": "m"}))
            assert (failure.status, failure.type) == (row.status, row.type), (row.name, v1)
            assert failure.upstream_code == v1
            if row.code is not None:
                assert failure.code == row.code
            elif v1 in V1_CODES:
                assert failure.code == V1_CODES[v1].v2_code  # ERNIE's code, by its v2 name
        for v2 in row.v2:
            body = {"error": {"code": v2, "message": "m", "type": "t"}, "id": "as-1"}
            failure = upstream_failure(api_error_from_v2(400, body))
            assert (failure.status, failure.code) == (row.status, row.code or v2), (row.name, v2)
            assert failure.upstream_code == v2


def test_the_table_has_no_code_twice_and_names_the_issue_s_codes() -> None:
    v1 = [code for row in ROWS for code in row.v1]
    v2 = [code.lower() for row in ROWS for code in row.v2]
    assert len(v1) == len(set(v1))
    assert len(v2) == len(set(v2))
    by_row = {row.name: row for row in ROWS}
    assert {"account_overdue", "invalid_iam_token"} <= set(by_row["credentials"].v2)
    # a retired model is the client's choice, answered as Baidu answers it
    assert by_row["retired"].v2 == ("model_offline",)
    assert (by_row["retired"].status, by_row["retired"].code) == (403, "model_offline")
    assert {"characters_too_long", "tokens_too_long"} == set(by_row["too_long"].v2)
    assert "quota_exceeded" in by_row["quota"].v2


@pytest.mark.parametrize(
    ("status", "row_status", "code"),
    [
        (400, 400, "brand_new_code"),
        (413, 400, "brand_new_code"),
        (401, 502, "upstream_auth_failed"),
        (403, 502, "upstream_auth_failed"),
        (429, 429, "upstream_rate_limited"),
        (500, 502, "upstream_error"),
        (503, 503, "upstream_overloaded"),
        (404, 502, "upstream_error"),
    ],
)
def test_unknown_codes_are_placed_by_status(status: int, row_status: int, code: str) -> None:
    body = {"error": {"code": "brand_new_code", "message": "m", "type": "t"}}
    failure = upstream_failure(api_error_from_v2(status, body))
    assert (failure.status, failure.code) == (row_status, code)


def test_failures_without_a_code() -> None:
    unknown_v1 = upstream_failure(api_error_from_v1({"error_code": 999999, "error_msg": "?"}))
    assert (unknown_v1.status, unknown_v1.code) == (502, "upstream_error")
    assert upstream_failure(APITimeoutError("idle", timeout=3)).status == 504
    broken = upstream_failure(APIConnectionError("reset"))
    assert (broken.status, broken.code) == (502, "upstream_error")
    cut = upstream_failure(IncompleteStreamError("no [DONE]", api="v2"))
    assert (cut.status, cut.code) == (502, "upstream_error")
    waited = upstream_failure(ClientRateLimitTimeout(12.2, 1.0))
    assert (waited.status, waited.code, waited.retry_after) == (429, "upstream_rate_limited", 13)
    assert (b"retry-after", b"13") in waited.headers
    given = upstream_failure(
        api_error_from_v2(
            429,
            {"error": {"code": "rpm_rate_limit_exceeded", "message": "m"}},
            headers={"Retry-After": "7"},
        ),
        pause=3.0,
    )
    assert given.retry_after == 7  # ERNIE's own, when it is the longer
    quota = upstream_failure(api_error_from_v1({"error_code": 17, "error_msg": "daily"}))
    assert quota.retry_after is None  # no time is known
    assert (b"x-should-retry", b"false") in quota.headers


def test_end_reasons_and_finish_reasons() -> None:
    assert openai_finish("completed", "stop") == "stop"
    assert openai_finish("completed", "tool_calls") == "tool_calls"
    assert openai_finish("completed", "other") == "stop"
    assert openai_finish("completed", None) == "stop"
    assert openai_finish("length", None) == "length"
    assert openai_finish("content_filtered", "content_filter") == "content_filter"
    for cut in ("server_shutdown", "upstream_error", "incomplete", "timed_out", "cancelled"):
        assert openai_finish(cut, "stop") is None
    assert (cut_error("server_shutdown").status, cut_error("server_shutdown").code) == (
        503,
        "server_shutdown",
    )
    assert cut_error("cancelled").status == 502


def _doc_rows() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "ERRORS.md").read_text(encoding="utf-8")
    table = text.split("## The table", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_docs_errors_md_shows_the_same_table() -> None:
    rows = _doc_rows()
    assert list(rows) == [row.name for row in ROWS]
    for row in ROWS:
        name, status, type_, code, retry_after, should_retry, v1, v2 = rows[row.name]
        assert (int(status), type_) == (row.status, row.type), name
        assert code == (row.code or "ERNIE's (v2 name)"), name
        expected_retry = {"always": "always", "given": "if ERNIE sent one", "never": "—"}
        assert retry_after == expected_retry[row.retry_after], name
        assert should_retry == ("false" if row.should_retry is False else "—"), name
        assert [int(c) for c in v1.split(", ") if c != "—"] == list(row.v1), name
        assert v2.split(", ") == list(row.v2), name


@pytest.mark.parametrize(
    ("status", "body", "want"),
    [
        (400, {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400},
         (400, "invalid_request")),
        (400, {"error": {"message": "This model's maximum context length is 32768 tokens",
                         "type": "BadRequestError", "code": 400}},
         (400, "context_length_exceeded")),
        (401, {"error": "Unauthorized"}, (502, "upstream_auth_failed")),
        (404, {"object": "error", "message": "The model `x` does not exist.", "code": 404},
         (404, "model_not_found")),
        (429, {"error": {"message": "slow down", "code": 429}}, (429, "upstream_rate_limited")),
        (503, {"detail": "overloaded"}, (503, "upstream_overloaded")),
        (500, {"object": "error", "message": "boom", "code": 4}, (502, "upstream_error")),
    ],
)  # fmt: skip
def test_a_self_hosted_servers_errors_are_placed_by_status(
    status: int, body: object, want: tuple[int, str]
) -> None:
    """An OpenAI-compatible server's codes are not Qianfan's (vLLM's ``code`` is the status;
    a ``4`` must not read as Qianfan's rate limit 4): its status decides, and a too-long
    prompt is the one ``context_length_exceeded`` on every upstream."""
    failure = upstream_failure(api_error_from_openai(status, body))
    assert (failure.status, failure.code) == want


def test_a_copy_of_an_error_answers_the_same_and_shares_nothing() -> None:
    from wenxin_stream.server._http import HTTPError

    kept = HTTPError(
        502, "upstream_error", "ERNIE failed", retry_after=2.5, should_retry=False,
        upstream_code=336100,
    )  # fmt: skip
    try:
        raise kept
    except HTTPError:
        pass
    twin = kept.copy()
    assert twin is not kept
    assert type(twin) is HTTPError
    assert twin.__traceback__ is None  # raising it starts afresh: no frames of the first raise
    assert (twin.status, twin.body(), twin.event(), twin.headers, str(twin)) == (
        kept.status, kept.body(), kept.event(), kept.headers, str(kept),
    )  # fmt: skip
    twin.headers.append((b"x", b"y"))
    assert (b"x", b"y") not in kept.headers
