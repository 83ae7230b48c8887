"""The fold from events to a ChatResult, and the immutable event vocabulary it works on."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import pytest

from wenxin_stream._accumulate import Accumulator, accumulate, accumulate_all
from wenxin_stream._events import (
    ChatResult,
    ChunkMeta,
    EndReason,
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
    TruncatedEvent,
    UnknownFieldsEvent,
    Usage,
    UsageEvent,
    end_reason_for,
    freeze,
    thaw,
)

EVENTS: list[StreamEvent] = [
    ChunkMeta("as-1", 100, 0, None),
    ReasoningDelta("想"),
    TextDelta("你好，"),
    ChunkMeta("as-1", 101, 1, "ernie-4.0-8k"),
    TextDelta("世界"),
    ToolCallDelta(1, "call_b", "g", "{"),
    ToolCallDelta(0, "call_a", "f", '{"a":'),
    ToolCallDelta(0, None, None, "1}"),
    ToolCallDelta(1, "ignored", "ignored", "}"),
    FunctionCallEvent("h", "{}", "因为"),
    SearchInfoEvent(freeze({"search_results": [{"index": 1}]})),
    SearchInfoEvent(freeze({"is_beset": False})),
    SafetyEvent(False, None, 1),
    SafetyEvent(True, -1, None),
    SafetyEvent(False, 2, 0),
    TruncatedEvent(),
    UnknownFieldsEvent(freeze({"stamp": 1})),
    UnknownFieldsEvent(freeze({"stamp": 2, "other": [1]})),
    UnknownFieldsEvent(freeze({"delta_tag": "x"}), "choice"),
    FinishEvent(FinishReason.LENGTH, "length"),
    UsageEvent(Usage(1, 1, 2)),
    UsageEvent(Usage(1, 2, 3)),
]

EXPECTED = ChatResult(
    id="as-1",
    content="你好，世界",
    finish_reason=FinishReason.LENGTH,
    raw_finish_reason="length",
    usage=Usage(1, 2, 3),
    need_clear_history=True,
    ban_round=2,
    flag=1,
    is_truncated=True,
    function_call=FunctionCall("h", "{}", "因为"),
    tool_calls=(ToolCall("call_a", "f", '{"a":1}'), ToolCall("call_b", "g", "{}", index=1)),
    search_info=freeze({"search_results": [{"index": 1}], "is_beset": False}),
    reasoning="想",
    extra=freeze({"stamp": 2, "other": [1], "choice.delta_tag": "x"}),
    model="ernie-4.0-8k",
    created=100,
)


def test_accumulator() -> None:
    accumulator = Accumulator()
    accumulator.extend(EVENTS)
    assert accumulator.result() == EXPECTED
    assert accumulator.text == "你好，世界"


def test_the_running_fields_follow_the_result_event_by_event() -> None:
    accumulator = Accumulator()
    for event in EVENTS:
        accumulator.add(event)
        result = accumulator.result()
        assert accumulator.finish_reason == result.finish_reason
        assert accumulator.usage == result.usage
        assert (accumulator.text, accumulator.reasoning) == (result.content, result.reasoning)
    assert accumulator.finish_reason is EXPECTED.finish_reason is not None


def test_accumulate_all() -> None:
    assert accumulate_all(EVENTS) == EXPECTED
    assert accumulate_all([]) == ChatResult()


def test_pure_fold_equals_accumulator_and_never_mutates_snapshots() -> None:
    snapshots: list[ChatResult] = []
    snapshot: ChatResult | None = None
    for event in EVENTS:
        snapshot = accumulate(snapshot, event)
        snapshots.append(snapshot)
    assert snapshot == EXPECTED
    assert snapshots[2].content == "你好，"  # earlier snapshots are untouched
    assert snapshots[2].usage is None
    assert snapshots[7].tool_calls == (
        ToolCall("call_a", "f", '{"a":1}'),
        ToolCall("call_b", "g", "{", index=1),
    )


def test_continue_from_a_snapshot() -> None:
    half = accumulate_all(EVENTS[:10])
    accumulator = Accumulator(half)
    accumulator.extend(EVENTS[10:])
    assert accumulator.result() == EXPECTED


def test_results_are_immutable() -> None:
    result = accumulate_all(EVENTS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.content = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.extra["x"] = 1  # type: ignore[index]
    assert result.search_info is not None
    with pytest.raises(TypeError):
        result.search_info["x"] = 1  # type: ignore[index]
    accumulator = Accumulator()
    accumulator.add(TextDelta("a"))
    first = accumulator.result()
    accumulator.add(TextDelta("b"))
    assert first.content == "a"
    assert accumulator.result().content == "ab"


def test_events_are_frozen_with_slots() -> None:
    event = TextDelta("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.text = "y"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    unknown = UnknownFieldsEvent(freeze({"a": {"b": [1]}}))
    with pytest.raises(TypeError):
        unknown.fields["a"]["b"] = 2  # type: ignore[index]


def test_unknown_event_types_are_ignored() -> None:
    @dataclass(frozen=True)
    class FutureEvent:
        payload: str

    accumulator = Accumulator()
    accumulator.add(FutureEvent("x"))  # type: ignore[arg-type]
    accumulator.add(TextDelta("a"))
    assert accumulator.result() == ChatResult(content="a")


def test_finish_without_raw_reason() -> None:
    result = accumulate(None, FinishEvent(FinishReason.STOP, ""))
    assert result.raw_finish_reason is None
    assert result.finish_reason is FinishReason.STOP


def test_meta_keeps_the_last_id_and_first_created() -> None:
    result = accumulate_all([ChunkMeta("as-1", None), ChunkMeta("", 5), ChunkMeta("as-2", 6)])
    assert (result.id, result.created, result.model) == ("as-2", 5, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("normal", FinishReason.STOP),
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("content_filter", FinishReason.CONTENT_FILTER),
        ("function_call", FinishReason.FUNCTION_CALL),
        ("tool_calls", FinishReason.TOOL_CALLS),
        ("", FinishReason.OTHER),
        ("insufficient_system_resource", FinishReason.OTHER),
    ],
)
def test_finish_reason_normalisation(raw: str, reason: FinishReason) -> None:
    assert FinishReason.from_raw(raw) is reason


@pytest.mark.parametrize(
    ("finish", "end"),
    [
        (None, EndReason.COMPLETED),
        (FinishReason.STOP, EndReason.COMPLETED),
        (FinishReason.TOOL_CALLS, EndReason.COMPLETED),
        (FinishReason.FUNCTION_CALL, EndReason.COMPLETED),
        (FinishReason.OTHER, EndReason.COMPLETED),
        (FinishReason.LENGTH, EndReason.LENGTH),
        (FinishReason.CONTENT_FILTER, EndReason.CONTENT_FILTERED),
    ],
)
def test_end_reason_for(finish: FinishReason | None, end: EndReason) -> None:
    assert end_reason_for(finish) is end


def test_end_reason_members() -> None:
    assert {e.name for e in EndReason} == {
        "COMPLETED",
        "LENGTH",
        "CONTENT_FILTERED",
        "CANCELLED",
        "TIMED_OUT",
        "UPSTREAM_ERROR",
        "INCOMPLETE",
    }


def test_freeze_and_thaw() -> None:
    data: dict[str, Any] = {"a": [1, {"b": [2, 3]}], "c": "x"}
    frozen = freeze(data)
    assert frozen == {"a": (1, {"b": (2, 3)}), "c": "x"}
    assert thaw(frozen) == data
    assert json.loads(json.dumps(frozen, default=dict)) == data
    data["a"].append(4)
    assert len(frozen["a"]) == 2  # a deep copy


def test_sources_merge_by_index_and_the_status_signal_is_not_text() -> None:
    first = SearchInfoEvent(
        freeze({"search_results": [{"index": 1, "url": "a"}]}), (SearchResult(1, "a", ""),)
    )
    later = SearchInfoEvent(
        freeze({"search_results": [{"index": 2, "url": "b"}]}),
        (SearchResult(2, "b", "B"), SearchResult(1, "a2", "A")),
    )
    result = accumulate_all([SearchStatusEvent("搜索中"), first, TextDelta("x"), later])
    assert result.search_results == (SearchResult(1, "a2", "A"), SearchResult(2, "b", "B"))
    assert result.content == "x"
    again = Accumulator(result)
    again.add(ReasoningDelta("想"))
    assert again.result().search_results == result.search_results
    assert again.reasoning == "想"


def test_a_tool_call_type_comes_from_its_fragments() -> None:
    events: list[StreamEvent] = [
        ToolCallDelta(0, "c", "f", "{", "function"),
        ToolCallDelta(0, None, None, "}"),
        ToolCallDelta(1, "d", "g", "{}", "code_interpreter"),
    ]
    result = accumulate_all(events)
    assert result.tool_calls == (
        ToolCall("c", "f", "{}", "function", 0),
        ToolCall("d", "g", "{}", "code_interpreter", 1),
    )
