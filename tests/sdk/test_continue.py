"""Continue mode (``continue_on_error=True``): a stream broken after text was shown is resumed
by asking the model to go on ("继续"), and only new text is delivered.

Against the emulator — which answers a continuation with exactly the rest of the first answer
— the resumed request is checked on the wire and the delivered text must equal the unbroken
answer. The overlap trimmer (a continuation that starts by repeating the end of what was
shown) and the bound on continuations are driven exactly through the mock transport.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sdk_helpers import Api, Factory, Harness, Mode, build_client, fault, sse_body

from wenxin_stream import (
    CONTINUE_PROMPT,
    APIConnectionError,
    APIError,
    EndReason,
    IncompleteStreamError,
)
from wenxin_stream._transport_mock import MockResponse
from wenxin_stream._transport_mock_async import AsyncMockTransport
from wenxin_stream._transport_mock_sync import MockTransport

PROMPT = "写一段关于长江的介绍"


async def test_a_cut_stream_is_continued_without_repeating(make: Factory) -> None:
    h = make(continue_on_error=True)
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, "cut_after=3;times=1"))
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    shown_before_cut = reference[: len("".join(out.texts[:3]))]
    assert out.texts[:3]
    assert "".join(out.texts[:3]) == shown_before_cut
    assert out.text.startswith(shown_before_cut)
    assert out.delivered == out.text == out.result.content  # each piece delivered once
    assert len(out.text) > len(shown_before_cut)
    sent = h.wire.chat()
    assert len(sent) == 1 + 2
    body = json.loads(sent[-1].request.body or b"{}")
    messages = body["messages"]
    assert messages[-2] == {"role": "assistant", "content": shown_before_cut}
    assert messages[-1] == {"role": "user", "content": CONTINUE_PROMPT}
    assert messages[0]["content"] == fault(PROMPT, "cut_after=3;times=1")


@pytest.mark.parametrize("after", [1, 3, 6])
async def test_a_continued_answer_equals_the_whole_answer(make: Factory, after: int) -> None:
    """The emulator answers "继续" after a partial assistant turn with the rest of the
    answer, so the seams must be exact: nothing lost, nothing twice."""
    h = make(continue_on_error=True)
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, f"cut_after={after};times=1"))
    out.raise_error()
    assert out.text == out.delivered == reference
    assert out.result.usage is not None


async def test_without_continue_mode_a_cut_is_raised(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, "cut_after=3;times=1"))
    assert isinstance(out.error, APIConnectionError | IncompleteStreamError)
    assert out.end_reason is EndReason.INCOMPLETE
    assert len(h.wire.chat()) == 1


async def test_continue_mode_per_stream(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(PROMPT, "cut_after=2;times=1"), continue_on_error=True)
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    assert len(h.wire.chat()) == 2


async def test_a_permanent_mid_stream_error_is_not_continued(make: Factory) -> None:
    h = make(continue_on_error=True)
    out = await h.stream(fault(PROMPT, "error=336003;error_after=2"))
    assert isinstance(out.error, APIError)
    assert out.error.partial_text == out.delivered
    assert out.end_reason is EndReason.UPSTREAM_ERROR
    assert len(h.wire.chat()) == 1


async def test_a_retryable_mid_stream_error_is_continued(make: Factory) -> None:
    h = make(continue_on_error=True)
    out = await h.stream(fault(PROMPT, "error=336100;error_after=2;times=1"))
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    assert len(h.wire.chat()) == 2


# --- exact seams through the mock transport -------------------------------------------------

FIRST = ["一二三四五", "六七八九十"]
SECOND = ["八九十", "甲乙丙丁戊己庚辛壬癸", "子丑寅卯辰巳午未申酉戌亥"]  # starts with "八九十"


def _mock(
    api: Api, mode: Mode, responses: list[MockResponse]
) -> tuple[Harness, MockTransport | AsyncMockTransport]:
    transport = (MockTransport if mode == "sync" else AsyncMockTransport)(responses)
    creds: dict[str, Any] = (
        {"access_token": "24.fixed-token-for-mock", "base_url": "http://mock.invalid"}
        if api == "v1"
        else {"bearer_token": "bce-v3/ALTAK-mock/x", "v2_base_url": "http://mock.invalid"}
    )
    harness = build_client(mode, transport=transport, continue_on_error=True, **creds)
    return harness, transport


def _broken(api: Api, pieces: list[str]) -> MockResponse:
    return MockResponse(body=[sse_body(api, pieces, complete=False), APIConnectionError("reset")])


async def test_the_repeated_seam_is_trimmed(api: Api, mode: Mode) -> None:
    harness, transport = _mock(
        api,
        mode,
        [_broken(api, FIRST), MockResponse(body=[sse_body(api, SECOND)])],
    )
    out = await harness.stream(PROMPT)
    await harness.close()
    out.raise_error()
    assert out.text == "".join(FIRST) + "".join(SECOND)[3:]
    assert out.delivered == out.text
    assert out.end_reason is EndReason.COMPLETED
    assert len(transport.requests) == 2


async def test_a_short_continuation_is_flushed_at_the_end(api: Api, mode: Mode) -> None:
    harness, _ = _mock(api, mode, [_broken(api, FIRST), MockResponse(body=[sse_body(api, ["。"])])])
    out = await harness.stream(PROMPT)
    await harness.close()
    out.raise_error()
    assert out.text == "".join(FIRST) + "。"


async def test_continuations_are_bounded(api: Api, mode: Mode) -> None:
    """Broken three times: two continuations (the default bound), then the error, with all
    the text shown so far — none of it twice."""
    parts = [f"第{n}段：" + "天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏" for n in "一二三"]
    responses = [_broken(api, [part]) for part in parts]
    harness, transport = _mock(api, mode, responses)
    out = await harness.stream(PROMPT)
    await harness.close()
    assert isinstance(out.error, APIConnectionError)
    assert out.error.partial_text == "".join(parts) == out.delivered
    assert out.end_reason is EndReason.INCOMPLETE
    assert len(transport.requests) == 3
