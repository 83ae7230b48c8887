"""v1 wire format: non-stream parsing, and the v1 stream parser (with the shared machinery of
``_stream_parser``) fed the higress capture whole, at every split point and one byte at a time."""

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
    SafetyEvent,
    SearchInfoEvent,
    StreamEvent,
    TextDelta,
    TruncatedEvent,
    UnknownFieldsEvent,
    Usage,
    UsageEvent,
)
from wenxin_stream._exceptions import (
    APIError,
    IncompleteStreamError,
    InternalServerError,
    MalformedResponseError,
    RateLimitError,
    SSELimitError,
    TokenExpiredError,
    WenxinError,
)
from wenxin_stream._wire_v1 import V1StreamParser, parse_v1_body, parse_v1_response
from wire_helpers import bytewise, feed_all, feed_until_error, splits

FIXTURES = Path(__file__).parent / "fixtures" / "wire"
HIGRESS = (FIXTURES / "v1_higress_stream.sse").read_bytes()
ERROR_110 = (FIXTURES / "v1_error_110.json").read_bytes()


def run(chunks: Iterable[bytes], **kwargs: Any) -> list[StreamEvent]:
    return feed_all(V1StreamParser(**kwargs), chunks)


def run_until_error(chunks: Iterable[bytes]) -> tuple[list[StreamEvent], WenxinError | None]:
    return feed_until_error(V1StreamParser(), chunks)


def sse(*chunks: dict[str, Any] | str) -> bytes:
    out = []
    for chunk in chunks:
        text = chunk if isinstance(chunk, str) else json.dumps(chunk, ensure_ascii=False)
        out.append(f"data: {text}\n\n")
    return "".join(out).encode()


def chunk(result: str = "", *, end: bool = False, n: int = 0, **extra: Any) -> dict[str, Any]:
    body = {
        "id": "as-test",
        "object": "chat.completion",
        "created": 1716124427 + n,
        "sentence_id": n,
        "is_end": end,
        "is_truncated": False,
        "result": result,
        "need_clear_history": False,
        "finish_reason": "normal",
        "usage": {"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4},
    }
    body.update(extra)
    return body


HIGRESS_EVENTS: list[StreamEvent] = [
    ChunkMeta("as-g91d6f1yyv", 1716124427, 0),
    TextDelta("你好，"),
    ChunkMeta("as-g91d6f1yyv", 1716124429, 1),
    TextDelta("我是文心一言，可以协助你完成范围广泛的任务……"),
    ChunkMeta("as-g91d6f1yyv", 1716124430, 2),
    FinishEvent(FinishReason.STOP, "normal"),
    UsageEvent(Usage(4, 38, 42)),
]


# --- non-stream -----------------------------------------------------------------------------


def test_parse_nonstream_fixture() -> None:
    result = parse_v1_response(json.loads((FIXTURES / "v1_nonstream.json").read_text()))
    assert result.id == "as-8vcq0n4u0e"
    assert result.content.startswith("北京是一个拥有许多有趣和独特景点的大城市")
    assert result.finish_reason is FinishReason.STOP
    assert result.raw_finish_reason is None
    assert result.usage == Usage(19, 307, 326)
    assert result.created == 1709887877
    assert not result.need_clear_history
    assert not result.is_truncated
    assert result.extra == {}


def test_parse_function_call_fixture() -> None:
    result = parse_v1_response(json.loads((FIXTURES / "v1_function_call.json").read_text()))
    assert result.content == ""
    assert result.function_call == FunctionCall("light_switch", '{"switch":false}')
    assert result.finish_reason is FinishReason.FUNCTION_CALL
    assert result.raw_finish_reason == "function_call"


def test_parse_nonstream_details() -> None:
    result = parse_v1_response(
        {
            "id": "as-1",
            "result": "答",
            "is_truncated": True,
            "need_clear_history": True,
            "ban_round": -1,
            "flag": 2,
            "search_info": {"search_results": [{"index": 1, "url": "u", "title": "t"}]},
            "function_call": {"name": "f", "arguments": {"a": 1}, "thoughts": "想"},
            "brand_new": [1],
        }
    )
    assert result.is_truncated
    assert result.finish_reason is FinishReason.FUNCTION_CALL  # a function call wins
    assert (result.need_clear_history, result.ban_round, result.flag) == (True, -1, 2)
    assert result.search_info is not None
    assert result.search_info["search_results"][0]["url"] == "u"
    assert result.function_call == FunctionCall("f", '{"a": 1}', "想")
    assert result.extra == {"brand_new": (1,)}
    truncated = parse_v1_response({"result": "x", "is_truncated": True})
    assert truncated.finish_reason is FinishReason.LENGTH
    filtered = parse_v1_response({"result": "**", "finish_reason": "content_filter"})
    assert filtered.finish_reason is FinishReason.CONTENT_FILTER
    other = parse_v1_response({"result": None, "finish_reason": "weird", "id": 5})
    assert (other.finish_reason, other.raw_finish_reason) == (FinishReason.OTHER, "weird")
    assert (other.id, other.content) == ("", "")


def test_parse_nonstream_errors() -> None:
    with pytest.raises(TokenExpiredError):
        parse_v1_response(json.loads(ERROR_110))
    with pytest.raises(MalformedResponseError, match="not a JSON object"):
        parse_v1_response([1])  # type: ignore[arg-type]
    with pytest.raises(MalformedResponseError, match="result is not a string"):
        parse_v1_response({"result": 5})
    with pytest.raises(MalformedResponseError, match="function_call has no name"):
        parse_v1_response({"result": "", "function_call": {"arguments": "{}"}})
    with pytest.raises(MalformedResponseError, match="search_info is not a JSON object"):
        parse_v1_response({"result": "", "search_info": "x"})


def test_parse_v1_body() -> None:
    raw = (FIXTURES / "v1_nonstream.json").read_bytes()
    assert parse_v1_body(200, raw).usage == Usage(19, 307, 326)
    with pytest.raises(TokenExpiredError) as info:
        parse_v1_body(200, ERROR_110, headers={"X-Baidu-Request-Id": "rid-1"})
    assert info.value.request_id == "rid-1"
    with pytest.raises(InternalServerError) as gateway:
        parse_v1_body(502, b"<html>upstream</html>")
    assert gateway.value.status_code == 502
    with pytest.raises(MalformedResponseError):
        parse_v1_body(200, b"{truncated")


# --- the stream, well-formed ----------------------------------------------------------------


def test_higress_capture_whole() -> None:
    parser = V1StreamParser()
    events = parser.feed(HIGRESS)
    assert events == HIGRESS_EVENTS
    assert parser.finished
    assert parser.finish_reason is FinishReason.STOP
    assert parser.usage == Usage(4, 38, 42)
    assert parser.response_id == "as-g91d6f1yyv"
    assert not parser.trailing_data
    assert parser.close() == []
    assert parser.close() == []  # idempotent


def test_higress_capture_at_every_split_point() -> None:
    for parts in splits(HIGRESS):
        assert run(parts) == HIGRESS_EVENTS


def test_higress_capture_one_byte_at_a_time() -> None:
    assert run(bytewise(HIGRESS)) == HIGRESS_EVENTS


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_other_line_endings(newline: bytes) -> None:
    data = HIGRESS.replace(b"\n", newline)
    assert run([data]) == HIGRESS_EVENTS
    assert run(bytewise(data)) == HIGRESS_EVENTS


def test_usage_only_from_the_final_chunk() -> None:
    running = {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}
    data = sse(
        chunk("一", usage=running),
        chunk("二", n=1, usage={**running, "completion_tokens": 9, "total_tokens": 13}),
        chunk(
            end=True,
            n=2,
            usage={"prompt_tokens": 4, "completion_tokens": 12, "total_tokens": 16, "plugins": []},
        ),
    )
    usage_events = [e for e in run([data]) if isinstance(e, UsageEvent)]
    assert usage_events == [UsageEvent(Usage(4, 12, 16, {"plugins": ()}))]


def test_end_chunk_without_usage() -> None:
    end = chunk(end=True)
    del end["usage"]
    events = run([sse(end)])
    assert not any(isinstance(e, UsageEvent) for e in events)
    assert isinstance(events[-1], FinishEvent)


def test_keepalives_comments_retry_and_event_names_are_harmless() -> None:
    data = (
        b": ping\n\n"
        b"retry: 3000\n\n"
        b"id: 7\n\n"
        b"data:\n\n"
        b"data:   \n\n"
        b"event: plugin\n" + sse(chunk("A")) + b": ping\n\n" + sse(chunk(end=True, n=1))
    )
    events = run([data])
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("A")]
    assert isinstance(events[-2], FinishEvent)


def test_function_call_search_safety_truncation_and_unknown_chunks() -> None:
    data = sse(
        chunk(
            "",
            function_call={
                "name": "get_weather",
                "arguments": '{"city":"北京"}',
                "thoughts": "需要查天气",
            },
            finish_reason="function_call",
        ),
        chunk("参考[1]", n=1, search_info={"search_results": [{"index": 1, "url": "u"}]}),
        chunk("**", n=2, need_clear_history=True, ban_round=-1, finish_reason="content_filter"),
        chunk("…", n=3, is_truncated=True, wenxin_emitted_at=1716124430.25),
        chunk(end=True, n=4),
    )
    events = run([data])
    assert FunctionCallEvent("get_weather", '{"city":"北京"}', "需要查天气") in events
    search = next(e for e in events if isinstance(e, SearchInfoEvent))
    assert search.info["search_results"][0]["url"] == "u"
    assert SafetyEvent(True, -1, None) in events
    assert TruncatedEvent() in events
    assert UnknownFieldsEvent({"wenxin_emitted_at": 1716124430.25}) in events
    # An earlier non-normal reason survives the final "normal".
    assert events[-2] == FinishEvent(FinishReason.CONTENT_FILTER, "content_filter")
    result = accumulate_all(events)
    assert result.content == "参考[1]**…"
    assert result.function_call == FunctionCall("get_weather", '{"city":"北京"}', "需要查天气")
    assert (result.need_clear_history, result.ban_round, result.is_truncated) == (True, -1, True)
    assert result.extra == {"wenxin_emitted_at": 1716124430.25}


@pytest.mark.parametrize(
    ("extra", "reason", "raw"),
    [
        ({"function_call": {"name": "f", "arguments": "{}"}}, FinishReason.FUNCTION_CALL, "normal"),
        ({"is_truncated": True}, FinishReason.LENGTH, "normal"),
        ({"finish_reason": "length"}, FinishReason.LENGTH, "length"),
        ({"finish_reason": "stop"}, FinishReason.STOP, "stop"),
        ({"finish_reason": None}, FinishReason.STOP, ""),
    ],
)
def test_final_finish_reason(extra: dict[str, Any], reason: FinishReason, raw: str) -> None:
    events = run([sse(chunk(end=True, **extra))])
    assert FinishEvent(reason, raw) in events


def test_stream_and_nonstream_agree() -> None:
    parts = ["北京", "是中国的首都。"]
    stream = sse(
        chunk(parts[0]),
        chunk(parts[1], n=1),
        chunk(end=True, n=2, usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}),
    )
    whole = chunk(
        "".join(parts), usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    )
    del whole["sentence_id"], whole["is_end"]
    assert accumulate_all(run([stream])) == parse_v1_response(whole)


def test_chunk_field_types_are_tolerated_or_rejected() -> None:
    odd = {"result": "x", "is_end": True, "created": "yesterday", "sentence_id": None}
    events = run([sse(odd)])
    assert events[0] == ChunkMeta("", None, None)
    with pytest.raises(MalformedResponseError, match="result is not a string"):
        run([sse({"result": 5, "is_end": True})])


def test_data_after_the_terminal_event_is_ignored() -> None:
    late = sse(chunk("late", n=9))
    parser = V1StreamParser()
    events = parser.feed(HIGRESS + late)
    assert events == HIGRESS_EVENTS
    assert parser.trailing_data
    assert parser.feed(b'{"error_code": 2}\n') == []
    assert parser.close() == []
    quiet = V1StreamParser()
    quiet.feed(HIGRESS)
    assert quiet.feed(b"\n\n") == []
    assert not quiet.trailing_data
    assert quiet.feed(b": bye\n\n") == []
    assert quiet.trailing_data


def test_bare_json_line_after_the_terminal_event_is_ignored() -> None:
    parser = V1StreamParser()
    assert parser.feed(HIGRESS + ERROR_110) == HIGRESS_EVENTS
    assert parser.trailing_data
    assert parser.close() == []


# --- the stream, broken ---------------------------------------------------------------------


def test_stream_without_is_end_is_incomplete() -> None:
    data = HIGRESS.split(b"data: ")[0] + b"".join(
        b"data: " + part for part in HIGRESS.split(b"data: ")[1:3]
    )
    for parts in splits(data):
        events, exc = run_until_error(parts)
        assert events == HIGRESS_EVENTS[:4]
        assert isinstance(exc, IncompleteStreamError)
        assert exc.api == "v1"
        assert not exc.content_finished
        assert "is_end" in str(exc)


def test_stream_cut_in_the_middle_of_an_event() -> None:
    events, exc = run_until_error([HIGRESS[:-30]])
    assert events == HIGRESS_EVENTS[:4]
    assert isinstance(exc, IncompleteStreamError)
    assert "in the middle of an event" in str(exc)


def test_empty_body_is_incomplete() -> None:
    with pytest.raises(IncompleteStreamError):
        run([])


@pytest.mark.parametrize(
    "body",
    [
        ERROR_110,
        b"\n  " + ERROR_110,
        b"\xef\xbb\xbf" + ERROR_110,
        b'{\n  "error_code": 110,\n  "error_msg": "Access token invalid or no longer valid"\n}',
        ERROR_110.rstrip(),  # no trailing newline
    ],
)
def test_error_json_instead_of_sse(body: bytes) -> None:
    """v1 answers a failing stream request with HTTP 200 and plain JSON, not SSE."""
    for parts in [*splits(body), bytewise(body)]:
        events, exc = run_until_error(parts)
        assert events == []
        assert isinstance(exc, TokenExpiredError)
        assert exc.code == 110
        assert exc.status_code == 200


def test_error_json_raised_as_soon_as_it_is_complete() -> None:
    parser = V1StreamParser(headers={"X-Baidu-Request-Id": "rid-9"})
    assert parser.feed(ERROR_110[:10]) == []
    with pytest.raises(TokenExpiredError) as info:
        parser.feed(ERROR_110[10:])
    assert info.value.request_id == "rid-9"
    with pytest.raises(TokenExpiredError):  # sticky
        parser.feed(b"more")
    with pytest.raises(TokenExpiredError):
        parser.close()


def test_truncated_error_json() -> None:
    with pytest.raises(MalformedResponseError, match="neither SSE nor JSON") as info:
        run([ERROR_110[:20]])
    assert info.value.excerpt == ERROR_110[:20].decode()


def test_bare_json_that_is_not_an_error() -> None:
    with pytest.raises(MalformedResponseError, match="bare JSON line"):
        run([json.dumps(chunk("x", end=True)).encode()])
    with pytest.raises(MalformedResponseError, match="bare JSON line"):
        run([b"{}"])


def test_error_line_in_the_middle_of_a_stream() -> None:
    """Events before the error are delivered; the error comes at the next call."""
    first = sse(chunk("A"), chunk("B", n=1))
    data = first + b'{"error_code":336100,"error_msg":"try again"}\n'
    expected = [
        ChunkMeta("as-test", 1716124427, 0),
        TextDelta("A"),
        ChunkMeta("as-test", 1716124428, 1),
        TextDelta("B"),
    ]
    for parts in [*splits(data), bytewise(data)]:
        events, exc = run_until_error(parts)
        assert events == expected
        assert isinstance(exc, InternalServerError)
        assert exc.retryable


def test_error_line_after_cr_line_endings() -> None:
    data = sse(chunk("A")).replace(b"\n", b"\r") + ERROR_110
    events, exc = run_until_error([data])
    assert TextDelta("A") in events
    assert isinstance(exc, TokenExpiredError)


def test_error_event_inside_the_stream() -> None:
    data = sse(chunk("A"), {"error_code": 336501, "error_msg": "Rate limit reached for RPM"})
    for parts in splits(data):
        events, exc = run_until_error(parts)
        assert events == [ChunkMeta("as-test", 1716124427, 0), TextDelta("A")]
        assert isinstance(exc, RateLimitError)
    parser = V1StreamParser()
    with pytest.raises(RateLimitError):
        parser.feed(sse({"error_code": 336501, "error_msg": "x"}))


def test_malformed_event_before_an_error_line_in_one_chunk() -> None:
    parser = V1StreamParser()
    events = parser.feed(sse(chunk("A"), "{broken") + ERROR_110)
    assert TextDelta("A") in events
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        parser.feed(b"")
    # Nothing before it: the first error is raised at once.
    events, exc = run_until_error([b"data: {broken\n\n" + ERROR_110])
    assert (events, type(exc)) == ([], MalformedResponseError)


def test_pending_error_raised_by_close() -> None:
    parser = V1StreamParser()
    events = parser.feed(sse(chunk("A"), "{broken"))
    assert TextDelta("A") in events
    with pytest.raises(MalformedResponseError):
        parser.close()
    with pytest.raises(MalformedResponseError):
        parser.close()


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"data: {not json}\n\n", "not valid JSON"),
        (b"data: [1, 2]\n\n", "not a JSON object"),
        (b"data: hello\n\n", "not valid JSON"),
        (sse(chunk(end=True, usage=[1])), "usage is not a JSON object"),
        (sse(chunk(function_call={"arguments": "{}"})), "function_call has no name"),
    ],
)
def test_malformed_events(data: bytes, text: str) -> None:
    with pytest.raises(MalformedResponseError, match=text) as info:
        run([data])
    assert info.value.api == "v1"


def test_malformed_excerpt_is_bounded() -> None:
    data = b"data: {" + b"x" * 100_000 + b"\n\n"
    with pytest.raises(MalformedResponseError) as info:
        run([data])
    assert len(str(info.value)) < 400


def test_limits() -> None:
    with pytest.raises(SSELimitError):
        run([sse(chunk("x" * 200))], max_line_bytes=100)
    with pytest.raises(MalformedResponseError, match="exceeds 64 bytes"):
        run([b'{"error_code": 1, "error_msg": "' + b"x" * 100], max_error_bytes=64)


def test_feed_after_close() -> None:
    parser = V1StreamParser()
    parser.feed(HIGRESS)
    parser.close()
    with pytest.raises(RuntimeError, match="after close"):
        parser.feed(b"x")


def test_empty_feeds_are_harmless() -> None:
    parser = V1StreamParser()
    assert parser.feed(b"") == []
    assert parser.feed(b"\n\n") == []
    assert parser.feed(HIGRESS) == HIGRESS_EVENTS
    assert parser.feed(b"") == []


def test_api_error_is_a_wenxin_error() -> None:
    _, exc = run_until_error([b'{"error_code": 17, "error_msg": "daily limit"}'])
    assert isinstance(exc, APIError)
    assert not exc.retryable
