"""v2 wire format: non-stream parsing, error bodies, and the v2 stream parser fed the transcript
whole, at every split point and one byte at a time."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from wenxin_stream._accumulate import accumulate_all
from wenxin_stream._events import (
    ChunkMeta,
    FinishEvent,
    FinishReason,
    FunctionCall,
    FunctionCallEvent,
    ReasoningDelta,
    SafetyEvent,
    SearchInfoEvent,
    SearchResult,
    SearchStatusEvent,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UnknownFieldsEvent,
    Usage,
    UsageEvent,
)
from wenxin_stream._exceptions import (
    APIError,
    BadRequestError,
    IncompleteStreamError,
    InternalServerError,
    MalformedResponseError,
    PermissionDeniedError,
    RateLimitError,
    TokenExpiredError,
    WenxinError,
)
from wenxin_stream._wire_v2 import V2StreamParser, parse_v2_body, parse_v2_response
from wire_helpers import bytewise, feed_all, feed_until_error, splits

FIXTURES = Path(__file__).parent / "fixtures" / "wire"
TRANSCRIPT = (FIXTURES / "v2_transcript_stream.sse").read_bytes()
ID = "as-5j1w2wzna2"

TRANSCRIPT_EVENTS: list[StreamEvent] = [
    ChunkMeta(ID, 1717488564, None, "ernie-4.0-8k"),
    TextDelta("很抱歉，"),
    ChunkMeta(ID, 1717488564, None, "ernie-4.0-8k"),
    TextDelta("我无法直接获取实时的天气信息。"),
    ChunkMeta(ID, 1717488565, None, "ernie-4.0-8k"),
    FinishEvent(FinishReason.STOP, "stop"),
    UsageEvent(Usage(4, 57, 61)),
]


def run(chunks: Iterable[bytes]) -> list[StreamEvent]:
    return feed_all(V2StreamParser(), chunks)


def run_until_error(chunks: Iterable[bytes]) -> tuple[list[StreamEvent], WenxinError | None]:
    return feed_until_error(V2StreamParser(), chunks)


def sse(*chunks: dict[str, Any] | str, done: bool = True) -> bytes:
    out = []
    for chunk in chunks:
        text = chunk if isinstance(chunk, str) else json.dumps(chunk, ensure_ascii=False)
        out.append(f"data: {text}\n\n")
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def chunk(delta: dict[str, Any] | None = None, **choice: Any) -> dict[str, Any]:
    usage = choice.pop("usage", None)
    top = choice.pop("top", {})
    body: dict[str, Any] = {
        "id": "as-t",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "ernie-x1-turbo-32k",
        "choices": [{"index": 0, "delta": delta or {}, "flag": 0, **choice}],
        **top,
    }
    if usage is not None:
        body["usage"] = usage
    return body


# --- non-stream -----------------------------------------------------------------------------


def test_parse_nonstream_fixture() -> None:
    result = parse_v2_response(json.loads((FIXTURES / "v2_nonstream.json").read_text()))
    assert result.id == "as-qsp8w7ppnv"
    assert result.model == "deepseek-v3.1-250821"
    assert result.content == "你好！很高兴和你交流。…"
    assert result.finish_reason is FinishReason.STOP
    assert result.raw_finish_reason == "stop"
    assert result.flag == 0
    assert result.usage == Usage(11, 15, 26)
    assert result.extra == {}


def test_parse_nonstream_everything() -> None:
    body = {
        "id": "as-x",
        "created": 5,
        "model": "ernie-x1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "先想一想",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"北京"}'},
                        },
                        {"id": "call_2", "function": {"name": "f", "arguments": {"a": 1}}},
                    ],
                    "audio": None,
                },
                "finish_reason": "tool_calls",
                "flag": 1,
                "ban_round": -1,
                "delta_tag": "x",
            },
            {"index": 1, "message": {"content": "second"}},
        ],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 2,
            "total_tokens": 3,
            "prompt_tokens_details": {"search_tokens": 0},
        },
        "search_results": [{"index": 1, "url": "u", "title": "t"}],
        "system_fingerprint": "fp",
    }
    result = parse_v2_response(body)
    assert result.content == ""
    assert result.reasoning == "先想一想"
    assert result.tool_calls == (
        ToolCall("call_1", "get_weather", '{"city":"北京"}'),
        ToolCall("call_2", "f", '{"a": 1}', index=1),
    )
    assert result.finish_reason is FinishReason.TOOL_CALLS
    assert (result.flag, result.ban_round) == (1, -1)
    assert result.usage is not None
    assert result.usage.extra == {"prompt_tokens_details": {"search_tokens": 0}}
    assert result.search_info == {"search_results": ({"index": 1, "url": "u", "title": "t"},)}
    assert result.extra == {
        "system_fingerprint": "fp",
        "choices": ({"index": 1, "message": {"content": "second"}},),
        "choice.delta_tag": "x",
        "message.audio": None,
    }


def test_parse_nonstream_old_spellings() -> None:
    body = {
        "choices": [
            {
                "message": {"content": "x", "function_call": {"name": "f", "arguments": "{}"}},
                "finish_reason": "normal",
                "need_clear_history": True,
            }
        ]
    }
    result = parse_v2_response(body)
    assert result.finish_reason is FinishReason.STOP
    assert result.function_call == FunctionCall("f", "{}")
    assert result.need_clear_history
    empty = parse_v2_response({"choices": []})
    assert (empty.content, empty.finish_reason, empty.id) == ("", None, "")


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ([1], "not a JSON object"),
        ({"choices": "x"}, "no list of choices"),
        ({"choices": [1]}, "no list of choices"),
        ({"choices": [{"message": "x"}]}, "message is not an object"),
        ({"choices": [{"message": {"content": 5}}]}, "message.content is not a string"),
        ({"choices": [{"message": {}, "finish_reason": 1}]}, "finish_reason is not a string"),
        ({"choices": [{"message": {"tool_calls": [1]}}]}, "tool call is not an object"),
        ({"choices": [{"message": {"tool_calls": [{"function": 1}]}}]}, "function is not"),
        ({"choices": [{"message": {"tool_calls": [{"index": "1"}]}}]}, "index is not an int"),
        ({"choices": [], "usage": {"total_tokens": 1.5}}, "not an integer"),
    ],
)
def test_parse_nonstream_malformed(body: Any, text: str) -> None:
    with pytest.raises(MalformedResponseError, match=text):
        parse_v2_response(body)


def test_parse_v2_body() -> None:
    ok = parse_v2_body(200, (FIXTURES / "v2_nonstream.json").read_bytes())
    assert ok.usage == Usage(11, 15, 26)
    with pytest.raises(BadRequestError) as bad:
        parse_v2_body(400, (FIXTURES / "v2_400_malformed_json.json").read_bytes())
    assert (bad.value.code, bad.value.request_id) == ("malformed_json", "as-yf9gcf138h")
    with pytest.raises(RateLimitError) as limited:
        parse_v2_body(
            429, (FIXTURES / "v2_429_rpm.json").read_bytes(), headers={"retry-after": "2"}
        )
    assert limited.value.retryable
    assert limited.value.retry_after == 2.0
    with pytest.raises(PermissionDeniedError) as denied:
        parse_v2_body(403, (FIXTURES / "v2_403_gateway.json").read_bytes())
    assert (denied.value.code, denied.value.message) == ("AccessDenied", "Access denied.")
    with pytest.raises(InternalServerError, match="HTTP 500 Internal Server Error with an empty"):
        parse_v2_body(500, b"")
    with pytest.raises(RateLimitError):  # an error body with status 200
        parse_v2_body(200, (FIXTURES / "v2_429_rpm.json").read_bytes())
    with pytest.raises(RateLimitError):
        parse_v2_response(json.loads((FIXTURES / "v2_429_rpm.json").read_text()))
    with pytest.raises(MalformedResponseError):
        parse_v2_body(200, b"<html>")


# --- the stream, well-formed ----------------------------------------------------------------


def test_transcript_whole() -> None:
    parser = V2StreamParser()
    assert parser.feed(TRANSCRIPT) == TRANSCRIPT_EVENTS
    assert parser.finished
    assert parser.finish_reason is FinishReason.STOP
    assert parser.usage == Usage(4, 57, 61)
    assert parser.response_id == ID
    assert parser.close() == []


def test_transcript_at_every_split_point() -> None:
    for parts in splits(TRANSCRIPT):
        assert run(parts) == TRANSCRIPT_EVENTS


def test_transcript_one_byte_at_a_time() -> None:
    assert run(bytewise(TRANSCRIPT)) == TRANSCRIPT_EVENTS


def test_transcript_accumulates() -> None:
    result = accumulate_all(run([TRANSCRIPT]))
    assert result.content == "很抱歉，我无法直接获取实时的天气信息。"
    assert result.model == "ernie-4.0-8k"
    assert result.id == ID
    assert result.created == 1717488564


def test_usage_only_chunk_and_normal_spelling() -> None:
    data = sse(
        chunk({"role": "assistant", "content": "好"}),
        chunk({}, finish_reason="normal"),
        {
            "id": "as-t",
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    )
    events = run([data])
    assert FinishEvent(FinishReason.STOP, "normal") in events
    assert events[-1] == UsageEvent(Usage(1, 1, 2))
    assert accumulate_all(events).usage == Usage(1, 1, 2)


def test_chunk_include_usage_reports_every_chunk() -> None:
    data = sse(
        chunk(
            {"content": "a"}, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        ),
        chunk(
            {"content": "b"},
            finish_reason="stop",
            usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        ),
    )
    events = run([data])
    assert [e for e in events if isinstance(e, UsageEvent)] == [
        UsageEvent(Usage(1, 1, 2)),
        UsageEvent(Usage(1, 2, 3)),
    ]
    assert accumulate_all(events).usage == Usage(1, 2, 3)


def test_null_usage_is_no_event() -> None:
    events = run([sse({**chunk({"content": "a"}), "usage": None})])
    assert not any(isinstance(e, UsageEvent) for e in events)


def test_reasoning_then_content() -> None:
    data = sse(
        chunk({"reasoning_content": "用户问天气，"}),
        chunk({"reasoning_content": "我没有实时数据。"}),
        chunk({"content": "抱歉。"}, finish_reason="stop"),
    )
    events = run([data])
    assert events[1] == ReasoningDelta("用户问天气，")
    result = accumulate_all(events)
    assert result.reasoning == "用户问天气，我没有实时数据。"
    assert result.content == "抱歉。"


def test_streamed_tool_calls_merge_by_index() -> None:
    data = sse(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    },
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                    {"index": 0, "function": {"arguments": '"北京"}'}},
                ]
            }
        ),
        # no index and no id: the fragment continues the current call (index 0 here)
        chunk({"tool_calls": [{"function": {"arguments": {"x": 1}}}]}),
        chunk({}, finish_reason="tool_calls"),
    )
    events = run([data])
    assert ToolCallDelta(0, "call_a", "get_weather", "", "function") in events
    assert ToolCallDelta(0, None, None, '{"city":') in events
    assert ToolCallDelta(0, None, None, '{"x": 1}') in events
    result = accumulate_all(events)
    assert result.tool_calls == (
        ToolCall("call_a", "get_weather", '{"city":"北京"}{"x": 1}'),
        ToolCall("call_b", "get_time", "{}", index=1),
    )
    assert result.finish_reason is FinishReason.TOOL_CALLS


def test_legacy_function_call_delta() -> None:
    events = run([sse(chunk({"function_call": {"name": "f", "arguments": "{}"}}))])
    assert FunctionCallEvent("f", "{}") in events


def test_safety_flags() -> None:
    data = sse(
        chunk({"content": "a"}),
        chunk({"content": "b"}, flag=2, ban_round=-1),
        chunk({}, flag=4, finish_reason="content_filter"),
        chunk({}, need_clear_history=True),
    )
    events = run([data])
    safety = [e for e in events if isinstance(e, SafetyEvent)]
    assert safety == [
        SafetyEvent(False, -1, 2),
        SafetyEvent(False, None, 4),
        SafetyEvent(True, None, 0),
    ]
    result = accumulate_all(events)
    assert (result.flag, result.ban_round, result.need_clear_history) == (4, -1, True)
    assert result.finish_reason is FinishReason.CONTENT_FILTER


def test_unknown_fields_in_every_scope() -> None:
    data = sse(
        chunk(
            {"content": "a", "audio": {"id": 1}},
            delta_tag="search_status",
            top={"wenxin_emitted_at": 12.5, "search_results": [{"index": 1, "url": "u"}]},
        ),
        {"id": "as-t", "choices": [{"index": 1, "delta": {"content": "other"}}]},
    )
    events = run([data])
    assert UnknownFieldsEvent({"wenxin_emitted_at": 12.5}) in events
    assert UnknownFieldsEvent({"audio": {"id": 1}}, "message") in events
    assert UnknownFieldsEvent({"choices": ({"index": 1, "delta": {"content": "other"}},)}) in events
    source = SearchResult(1, "u", "")
    info = SearchInfoEvent({"search_results": ({"index": 1, "url": "u"},)}, (source,))
    assert info in events
    assert TextDelta("other") not in events
    result = accumulate_all(events)
    assert result.extra["wenxin_emitted_at"] == 12.5
    assert result.extra["message.audio"] == {"id": 1}


def test_events_after_done_are_ignored() -> None:
    parser = V2StreamParser()
    assert parser.feed(TRANSCRIPT + sse(chunk({"content": "late"}))) == TRANSCRIPT_EVENTS
    assert parser.trailing_data
    assert parser.close() == []


def test_done_with_surrounding_space() -> None:
    events = run([sse(chunk({"content": "a"}), done=False) + b"data:  [DONE] \n\n"])
    assert TextDelta("a") in events


# --- the stream, broken ---------------------------------------------------------------------


def test_finished_answer_without_done() -> None:
    data = TRANSCRIPT[: TRANSCRIPT.index(b"data: [DONE]")]
    for parts in splits(data):
        events, exc = run_until_error(parts)
        assert events == TRANSCRIPT_EVENTS
        assert isinstance(exc, IncompleteStreamError)
        assert exc.content_finished
        assert exc.finish_reason == "stop"
        assert "after the answer had finished" in str(exc)


def test_cut_answer_without_done() -> None:
    data = sse(chunk({"content": "a"}), done=False)
    events, exc = run_until_error([data])
    assert TextDelta("a") in events
    assert isinstance(exc, IncompleteStreamError)
    assert not exc.content_finished
    assert exc.finish_reason is None
    with pytest.raises(IncompleteStreamError):
        run([])


def test_error_event_mid_stream() -> None:
    error = {
        "error": {
            "code": "tpm_rate_limit_exceeded",
            "message": "Rate limit reached for TPM",
            "type": "rate_limit_exceeded",
        },
        "id": "as-err",
    }
    data = sse(chunk({"content": "a"}), error, done=False)
    for parts in [*splits(data), bytewise(data)]:
        events, exc = run_until_error(parts)
        assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("a")]
        assert isinstance(exc, RateLimitError)
        assert exc.request_id == "as-err"
        assert exc.status_code == 200


def test_bare_json_error_in_a_stream() -> None:
    body = b'{"error":{"code":"invalid_iam_token","message":"IAM Certification failed"}}'
    for parts in splits(body):
        events, exc = run_until_error(parts)
        assert events == []
        assert isinstance(exc, TokenExpiredError)
    events, exc = run_until_error([b'{"code":"AccessDenied","message":"Access denied."}'])
    assert isinstance(exc, APIError)
    assert exc.code == "AccessDenied"
    with pytest.raises(MalformedResponseError, match="bare JSON"):
        run([b'{"choices": []}'])


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ("{bad", "not valid JSON"),
        ('"text"', "not a JSON object"),
        ({"choices": {"index": 0}}, "choices is not a list"),
        ({"choices": [1]}, "choice is not an object"),
        ({"choices": [{"delta": [1]}]}, "delta is not an object"),
        ({"choices": [{"delta": {"content": 5}}]}, "delta.content is not a string"),
        ({"choices": [{"delta": {"reasoning_content": 5}}]}, "reasoning_content is not"),
        ({"choices": [{"delta": {"tool_calls": {"a": 1}}}]}, "tool_calls is not a list"),
        ({"choices": [{"delta": {"tool_calls": [1]}}]}, "tool call delta is not an object"),
        ({"choices": [{"delta": {"tool_calls": [{"function": 1}]}}]}, "function is not"),
        ({"choices": [{"delta": {"tool_calls": [{"index": "0"}]}}]}, "index is not an int"),
        ({"choices": [{"delta": {}, "finish_reason": 3}]}, "finish_reason is not a string"),
        ({"choices": [], "usage": {"prompt_tokens": "1"}}, "not an integer"),
    ],
)
def test_malformed_events(payload: dict[str, Any] | str, text: str) -> None:
    with pytest.raises(MalformedResponseError, match=text) as info:
        run([sse(payload)])
    assert info.value.api == "v2"


def test_odd_chunk_fields_are_tolerated() -> None:
    events = run([sse({"choices": [{"delta": {"content": "a"}}], "id": 1, "model": 2})])
    assert events[0] == ChunkMeta("", None, None, None)
    assert events[1] == TextDelta("a")


# --- today's ERNIE: reasoning names, search status, search results, tool calls without index --


@pytest.mark.parametrize("tail", [{}, {"reasoning_content": ""}, {"reasoning_content": None}])
def test_answer_chunks_may_leave_reasoning_out_or_send_it_empty(tail: dict[str, Any]) -> None:
    data = sse(
        chunk({"role": "assistant", "reasoning_content": "想"}),
        chunk({"content": "答", **tail}),
        chunk({"content": "完", **tail}, finish_reason="stop"),
    )
    events = run([data])
    assert [e for e in events if isinstance(e, ReasoningDelta | TextDelta)] == [
        ReasoningDelta("想"),
        TextDelta("答"),
        TextDelta("完"),
    ]
    assert not [e for e in events if isinstance(e, UnknownFieldsEvent)]


def test_vllm_names_reasoning_reasoning() -> None:
    data = sse(
        chunk({"reasoning": "新名字"}),
        chunk({"reasoning": "两个都有", "reasoning_content": "两个都有"}),  # vLLM 0.11
        chunk({"content": "答"}, finish_reason="stop"),
    )
    events = run([data])
    assert [e for e in events if isinstance(e, ReasoningDelta)] == [
        ReasoningDelta("新名字"),
        ReasoningDelta("两个都有"),
    ]
    assert not [e for e in events if isinstance(e, UnknownFieldsEvent)]
    body = {
        "id": "as-x",
        "choices": [{"index": 0, "message": {"content": "答", "reasoning": "想"}}],
    }
    result = parse_v2_response(body)
    assert result.reasoning == "想"
    assert result.extra == {}


@pytest.mark.parametrize("where", ["choice", "delta"])
def test_the_search_status_signal_is_not_answer_text(where: str) -> None:
    delta: dict[str, Any] = {"role": "assistant", "content": "正在搜索……"}
    choice: dict[str, Any] = {}
    if where == "choice":
        choice["delta_tag"] = "search_status"
    else:
        delta["delta_tag"] = "search_status"
    data = sse(chunk(delta, **choice), chunk({"content": "答"}, finish_reason="stop"))
    events = run([data])
    assert SearchStatusEvent("正在搜索……") in events
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("答")]
    assert not [e for e in events if isinstance(e, UnknownFieldsEvent)]
    assert accumulate_all(events).content == "答"
    empty = run([sse(chunk({}, delta_tag="search_status"), chunk({"content": "x"}))])
    assert SearchStatusEvent() in empty


def test_search_results_are_typed_and_markers_stay_in_the_text() -> None:
    sources = [
        {"index": 1, "url": "http://a", "title": "A"},
        {"index": 2, "url": "http://b", "title": "B"},
        {"index": "x", "url": "http://c"},  # kept in the raw object only
    ]
    data = sse(
        chunk({"role": "assistant", "content": "今天是**"}, top={"search_results": sources}),
        chunk({"content": "周四**^[1]"}),
        chunk({"content": "[2]^。"}, finish_reason="stop"),
    )
    events = run([data])
    info = next(e for e in events if isinstance(e, SearchInfoEvent))
    assert info.results == (SearchResult(1, "http://a", "A"), SearchResult(2, "http://b", "B"))
    result = accumulate_all(events)
    assert result.content == "今天是**周四**^[1][2]^。"
    assert result.search_results == info.results
    assert result.search_info is not None
    assert len(result.search_info["search_results"]) == 3
    whole = parse_v2_response(
        {"id": "as-x", "choices": [{"message": {"content": "a^[1]^"}}], "search_results": sources}
    )
    assert whole.search_results == info.results


def _delta(**call: Any) -> dict[str, Any]:
    return {"tool_calls": [call]}


def test_tool_calls_without_index_split_at_a_new_id() -> None:
    data = sse(
        chunk(_delta(id="a1", type="function", function={"name": "f", "arguments": '{"x"'})),
        chunk(_delta(function={"arguments": ":1}"})),
        chunk(_delta(id="a1", function={"arguments": ""})),  # the same id again: same call
        chunk(_delta(id="b2", type="function", function={"name": "g", "arguments": "{}"})),
        chunk({}, finish_reason="tool_calls"),
    )
    events = run([data])
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [d.index for d in deltas] == [0, 0, 0, 1]
    result = accumulate_all(events)
    assert result.tool_calls == (
        ToolCall("a1", "f", '{"x":1}', index=0),
        ToolCall("b2", "g", "{}", index=1),
    )
    assert result.finish_reason is FinishReason.TOOL_CALLS


def test_a_first_fragment_without_id_or_index_starts_call_zero() -> None:
    data = sse(chunk(_delta(function={"name": "f", "arguments": "{}"})), chunk({}))
    events = run([data])
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(0, None, "f", "{}")
    ]


def test_a_negative_tool_call_index_is_malformed() -> None:
    _, error = run_until_error([sse(chunk(_delta(index=-1, id="a")))])
    assert isinstance(error, MalformedResponseError)
