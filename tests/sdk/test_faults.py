"""Every fault key of docs/EMULATOR.md through both twins and both API generations.

The rules under test (``_stream_core``): an attempt is replayed only while nothing reached the
caller; afterwards the error is raised with exactly the delivered text in ``partial_text`` and
the stream's one ``end_reason``. Pacing keys (``ttft``, ``interval``, ``chunks``) are in
test_streaming, ``endless`` in test_cancellation, ``stall`` timeouts also in test_timeouts,
``times`` with retries also in test_retries.
"""

from __future__ import annotations

import pytest
from sdk_helpers import UTF8_ANSWER, UTF8_PROMPT, Emu, Factory, fault, unique

from wenxin_stream import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    EndReason,
    FinishEvent,
    FinishReason,
    IncompleteStreamError,
    InternalServerError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    SafetyEvent,
    SSELimitError,
    TextDelta,
    Timeout,
    TokenExpiredError,
    TruncatedEvent,
    UnknownFieldsEvent,
    UsageEvent,
)

PROMPT = "讲讲黄河的故事"


# --- error=CODE -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [336100, 18, 2])
async def test_retryable_error_succeeds_after_retries_without_repeating(
    make: Factory, code: int
) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, f"error={code};times=2"))
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    assert out.delivered == out.text == reference  # no text twice
    assert len(h.wire.chat()) == 1 + 3  # the create, then two failures and the success
    assert len(out.of(FinishEvent)) == 1


# (v1 code, exception class, v2 code, v2 status)
PERMANENT = [
    (336003, BadRequestError, "invalid_argument", 400),
    (336005, NotFoundError, "invalid_model", 400),
    (17, PermissionDeniedError, "quota_exceeded", 403),
    (336104, PermissionDeniedError, "system_unsafe", 403),
    (13, AuthenticationError, "invalid_iam_token", 401),
]


@pytest.mark.parametrize(("code", "cls", "v2_code", "v2_status"), PERMANENT)
async def test_permanent_error_raises_its_class_with_what_the_server_said(
    make: Factory, code: int, cls: type[APIError], v2_code: str, v2_status: int
) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, f"error={code}"))
    error = out.error
    assert isinstance(error, cls)
    assert error.request_id is not None
    assert error.request_id.startswith("as-")
    assert error.request_id in str(error)
    assert error.message
    assert error.partial_text == ""
    assert error.end_reason is out.end_reason is EndReason.UPSTREAM_ERROR
    assert out.events == []
    assert not error.retryable
    if h.api == "v1":
        assert error.code == code
        assert error.status_code == 200  # v1 errors are HTTP 200 JSON, also for streams
        assert error.headers is not None
        assert error.headers["content-type"] == "application/json"
    else:
        assert error.code == v2_code
        assert error.status_code == v2_status
    # v2 401 invalid_iam_token cannot be fixed by a fixed key; v1 13 is permanent
    assert len(h.wire.chat()) == 1


async def test_injected_unknown_code(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, "error=424242"))
    assert isinstance(out.error, APIError)
    assert out.error.message == "Injected error"
    if h.api == "v2":
        assert isinstance(out.error, InternalServerError)  # 500: retried, then raised
        assert len(h.wire.chat()) == 3
    else:
        assert out.error.code == 424242
        assert len(h.wire.chat()) == 1


async def test_retryable_error_raised_when_attempts_are_used_up(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, "error=336100"))
    assert isinstance(out.error, InternalServerError)
    assert out.error.retryable
    assert out.end_reason is EndReason.UPSTREAM_ERROR
    assert len(h.wire.chat()) == 3


async def test_rate_limit_code_is_a_rate_limit_error(make: Factory) -> None:
    h = make(retry=0)
    out = await h.stream(fault(PROMPT, "error=18"))
    assert isinstance(out.error, RateLimitError)
    assert len(h.wire.chat()) == 1


# --- error_after=N --------------------------------------------------------------------------


@pytest.mark.parametrize("after", [1, 3])
@pytest.mark.parametrize("code", [336100, 336003])
async def test_mid_stream_error_keeps_the_delivered_text_and_is_not_retried(
    make: Factory, after: int, code: int
) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, f"error={code};error_after={after}"))
    error = out.error
    assert isinstance(error, APIError)
    assert error.code == (code if h.api == "v1" else error.code)
    assert len(out.texts) == after
    assert error.partial_text == out.delivered == out.text
    assert reference.startswith(error.partial_text)
    assert error.partial_text
    assert error.end_reason is out.end_reason is EndReason.UPSTREAM_ERROR
    assert error.request_id is not None
    assert error.request_id.startswith("as-")
    assert len(h.wire.chat()) == 2  # the create and one attempt: text was delivered
    assert out.result.content == error.partial_text


async def test_mid_stream_error_after_zero_chunks_is_retried(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, "error=336100;error_after=0;times=1"))
    out.raise_error()
    assert out.text == reference
    assert len(h.wire.chat()) == 1 + 2


# --- times=N --------------------------------------------------------------------------------


async def test_times_applies_the_fault_to_the_first_requests_only(make: Factory) -> None:
    h = make(retry=0)
    message = fault(PROMPT, "error=336003;times=2")
    first = await h.stream(message)
    second = await h.stream(message)
    third = await h.stream(message)
    assert isinstance(first.error, BadRequestError)
    assert isinstance(second.error, BadRequestError)
    third.raise_error()
    assert third.end_reason is EndReason.COMPLETED


# --- cut_after=N ----------------------------------------------------------------------------


@pytest.mark.parametrize("after", [1, 4])
async def test_cut_stream_raises_with_the_partial_text_and_is_not_retried(
    make: Factory, after: int
) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, f"cut_after={after}"))
    error = out.error
    assert isinstance(error, APIConnectionError | IncompleteStreamError)
    assert not isinstance(error, APITimeoutError)
    assert error.end_reason is out.end_reason is EndReason.INCOMPLETE
    assert len(out.texts) == after
    assert error.partial_text == out.delivered == out.text
    assert reference.startswith(error.partial_text)
    assert len(h.wire.chat()) == 2  # create + one attempt, never replayed after delivery
    assert out.of(FinishEvent) == []
    # the broken connection was not put back into the pool: the client works on
    again = await h.stream(PROMPT)
    again.raise_error()
    assert again.text == reference


async def test_cut_before_any_chunk_is_retried(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, "cut_after=0;times=1"))
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    assert out.text == reference
    assert len(h.wire.chat()) == 1 + 2


async def test_cut_before_any_chunk_every_time_is_incomplete(make: Factory) -> None:
    h = make(retry=RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0))
    out = await h.stream(fault(PROMPT, "cut_after=0"))
    assert isinstance(out.error, APIConnectionError | IncompleteStreamError)
    assert out.error.partial_text == ""
    assert out.end_reason is EndReason.INCOMPLETE  # the 200 stream began, then broke
    assert len(h.wire.chat()) == 2


async def test_cut_non_stream_answer_is_retried(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    result = await h.create(fault(PROMPT, "cut_after=1;times=1"))
    assert result.content == reference
    assert len(h.wire.chat()) == 1 + 2


# --- stall ----------------------------------------------------------------------------------


async def test_stall_mid_stream_is_an_idle_timeout(make: Factory) -> None:
    h = make(timeout=Timeout(first_token=5, idle=0.3))
    out = await h.stream(fault(PROMPT, "stall=1.5;stall_after=2"))
    error = out.error
    assert isinstance(error, APITimeoutError)
    assert error.timeout_kind == "idle"
    assert error.timeout == 0.3
    assert error.end_reason is out.end_reason is EndReason.TIMED_OUT
    assert len(out.texts) == 2
    assert error.partial_text == out.delivered
    assert 0.25 <= out.elapsed < 1.2
    assert len(h.wire.chat()) == 1
    (await h.stream(PROMPT)).raise_error()  # the timed-out connection was dropped


async def test_stall_before_the_first_chunk_is_a_first_token_timeout(make: Factory) -> None:
    h = make(timeout=Timeout(first_token=0.3, idle=5), retry=0)
    out = await h.stream(fault(PROMPT, "stall=1.5;stall_after=0"))
    error = out.error
    assert isinstance(error, APITimeoutError)
    assert error.timeout_kind == "first_token"
    assert error.end_reason is out.end_reason is EndReason.TIMED_OUT
    assert error.partial_text == ""
    assert out.time_to_first_token is None
    assert len(h.wire.chat()) == 1


async def test_short_stall_passes(make: Factory) -> None:
    h = make(timeout=Timeout(first_token=1, idle=0.5))
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, "stall=0.2;stall_after=1"))
    out.raise_error()
    assert out.text == reference


# --- malformed_after=N ----------------------------------------------------------------------


@pytest.mark.parametrize("after", [0, 2])
async def test_malformed_line_raises_malformed_response(make: Factory, after: int) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, f"malformed_after={after}"))
    error = out.error
    assert isinstance(error, MalformedResponseError)
    assert error.excerpt is not None
    assert "malformed json" in error.excerpt
    assert len(out.texts) == after
    assert error.partial_text == out.delivered
    assert error.end_reason is out.end_reason is EndReason.UPSTREAM_ERROR
    assert len(h.wire.chat()) == 1  # a protocol error is not transient


async def test_malformed_non_stream_body(make: Factory) -> None:
    h = make()
    with pytest.raises(MalformedResponseError):
        await h.create(fault(PROMPT, "malformed_after=0"))


# --- big_line=BYTES -------------------------------------------------------------------------


async def test_line_over_the_limit_is_a_clear_error(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, "big_line=2000000"))
    error = out.error
    assert isinstance(error, SSELimitError)
    assert error.kind == "line"
    assert error.limit == 1 << 20
    assert "1048576" in str(error)
    assert out.events == []
    assert error.end_reason is EndReason.UPSTREAM_ERROR
    assert len(h.wire.chat()) == 1


async def test_long_line_under_the_limit_passes(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, "big_line=100000"))
    out.raise_error()
    assert out.text == reference
    padding = [e for e in out.of(UnknownFieldsEvent) if "wenxin_padding" in e.fields]
    assert len(padding) == 1
    assert len(padding[0].fields["wenxin_padding"]) > 99_000


# --- split_utf8=1 ---------------------------------------------------------------------------


async def test_characters_split_across_reads_arrive_whole(make: Factory) -> None:
    h = make()
    plain = await h.stream(UTF8_PROMPT)
    split = await h.stream(fault(UTF8_PROMPT, "split_utf8=1"))
    split.raise_error()
    assert plain.text == UTF8_ANSWER
    assert split.text == plain.text
    assert split.result.usage == plain.result.usage
    assert split.result.finish_reason is plain.result.finish_reason is FinishReason.STOP
    assert all("\ufffd" not in t for t in split.texts)


# --- safety=1..4 ----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [1, 2])
async def test_safety_that_lets_the_answer_show(make: Factory, flag: int) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, f"safety={flag}"))
    out.raise_error()
    assert out.text == reference
    assert out.end_reason is EndReason.COMPLETED
    safety = out.of(SafetyEvent)
    assert safety
    final = out.result
    assert final.ban_round == -1
    if h.api == "v1":
        assert all(e.need_clear_history for e in safety)
        assert final.need_clear_history
    else:
        assert all(e.flag == flag for e in safety)
        assert final.flag == flag


@pytest.mark.parametrize("flag", [3, 4])
async def test_safety_that_withholds_the_answer(make: Factory, flag: int) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    filtered = await h.create(fault(PROMPT, f"safety={flag}"))
    out = await h.stream(fault(PROMPT, f"safety={flag}"))
    out.raise_error()
    assert out.end_reason is EndReason.CONTENT_FILTERED
    assert out.result.finish_reason is FinishReason.CONTENT_FILTER
    assert out.of(FinishEvent)[0].reason is FinishReason.CONTENT_FILTER
    assert reference.startswith(out.text)
    assert len(out.text) < len(reference)
    assert out.text == filtered.content
    assert filtered.finish_reason is FinishReason.CONTENT_FILTER
    assert out.of(SafetyEvent)
    if h.api == "v1":
        assert out.result.need_clear_history
    else:
        assert out.result.flag == flag


# --- truncate=1 -----------------------------------------------------------------------------


async def test_truncated_answer_ends_with_length(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, "truncate=1"))
    out.raise_error()
    assert out.end_reason is EndReason.LENGTH
    assert out.result.finish_reason is FinishReason.LENGTH
    assert reference.startswith(out.text)
    assert len(out.text) < len(reference)
    whole = await h.create(fault(PROMPT, "truncate=1"))
    assert whole.content == out.text
    if h.api == "v1":
        assert out.result.is_truncated
        assert whole.is_truncated
        assert len(out.of(TruncatedEvent)) == 1


# --- expire_token=1 -------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["v1"])
async def test_v1_expired_token_is_refreshed_once_and_replayed(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    assert len(h.wire.oauth()) == 1
    out = await h.stream(fault(PROMPT, "expire_token=1;times=1"))
    out.raise_error()
    assert out.text == reference
    assert out.end_reason is EndReason.COMPLETED
    assert len(h.wire.oauth()) == 2  # exactly one extra token request
    assert len(h.wire.chat()) == 1 + 2
    # the old token really expired at the emulator: the next request uses the new one
    again = await h.stream(PROMPT)
    again.raise_error()
    assert len(h.wire.oauth()) == 2


@pytest.mark.parametrize("api", ["v1"])
async def test_v1_token_expiring_on_every_request_is_refreshed_only_once(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, "expire_token=1"))
    assert isinstance(out.error, TokenExpiredError)
    assert out.error.code == 111
    assert out.end_reason is EndReason.UPSTREAM_ERROR
    assert len(h.wire.oauth()) == 2
    assert len(h.wire.chat()) == 2


@pytest.mark.parametrize("api", ["v2"])
async def test_v2_bearer_key_cannot_be_refreshed(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, "expire_token=1;times=1"))
    assert isinstance(out.error, AuthenticationError)
    assert out.error.status_code == 401
    assert out.error.code == "invalid_iam_token"
    assert out.end_reason is EndReason.UPSTREAM_ERROR
    assert len(h.wire.chat()) == 1


@pytest.mark.parametrize("api", ["v2"])
async def test_v2_minted_bearer_token_is_minted_again(make: Factory, sdk_emu: Emu) -> None:
    h = make(
        bearer_token=None,
        access_key=unique("ak-iam-"),
        secret_access_key=unique("sk-iam-"),
        iam_base_url=sdk_emu.base_url,
    )
    out = await h.stream(fault(PROMPT, "expire_token=1;times=1"))
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    assert len(h.wire.mints()) == 2
    assert len(h.wire.chat()) == 2


# --- stamp=1 --------------------------------------------------------------------------------


async def test_stamp_is_passed_on_as_unknown_fields(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, "stamp=1"))
    out.raise_error()
    stamps = [e.fields["wenxin_emitted_at"] for e in out.of(UnknownFieldsEvent)]
    chunks = len(out.texts) + (1 if h.api == "v1" else 0)  # v1's is_end chunk is stamped too
    assert len(stamps) == chunks
    assert all(isinstance(s, float) for s in stamps)
    assert stamps == sorted(stamps)
    assert out.result.extra["wenxin_emitted_at"] == stamps[-1]


# --- combinations ---------------------------------------------------------------------------


async def test_faults_combine(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, "chunks=6;stamp=1;cut_after=3"))
    assert isinstance(out.error, APIConnectionError | IncompleteStreamError)
    assert len(out.texts) == 3
    assert len(out.of(UnknownFieldsEvent)) == 3
    assert out.of(UsageEvent) == []
    assert all(type(e) is not TextDelta or e.text for e in out.events)


async def test_bad_fault_spec_is_a_bad_request(make: Factory) -> None:
    h = make(retry=RetryPolicy.none())
    out = await h.stream(fault(PROMPT, "nonsense=1"))
    assert isinstance(out.error, BadRequestError)
    assert "nonsense" in out.error.message


# --- the same rules for whole answers (create) ----------------------------------------------


async def test_create_retries_a_retryable_error(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    result = await h.create(fault(PROMPT, "error=336100;times=2"))
    assert result.content == reference
    assert len(h.wire.chat()) == 1 + 3


async def test_create_raises_a_permanent_error(make: Factory) -> None:
    h = make()
    with pytest.raises(BadRequestError) as caught:
        await h.create(fault(PROMPT, "error=336003"))
    assert caught.value.request_id is not None
    assert len(h.wire.chat()) == 1


@pytest.mark.parametrize("api", ["v1"])
async def test_create_refreshes_an_expired_token(make: Factory) -> None:
    h = make()
    result = await h.create(fault(PROMPT, "expire_token=1;times=1"))
    assert result.content
    assert len(h.wire.oauth()) == 2
    assert len(h.wire.chat()) == 2


async def test_create_with_safety_and_truncation(make: Factory) -> None:
    h = make()
    filtered = await h.create(fault(PROMPT, "safety=3"))
    assert filtered.finish_reason is FinishReason.CONTENT_FILTER
    truncated = await h.create(fault(PROMPT, "truncate=1"))
    assert truncated.finish_reason is FinishReason.LENGTH
    stamped = await h.create(fault(PROMPT, "stamp=1"))
    assert isinstance(stamped.extra["wenxin_emitted_at"], float)
