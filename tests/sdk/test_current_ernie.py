"""Today's ERNIE through the SDK, both twins, against the emulator: deep thinking, tool calls,
web search, images, retired and unknown models, and the faults that reach those paths."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from sdk_helpers import Api, Factory, Harness, fault

from wenxin_stream import (
    APIConnectionError,
    AsyncClient,
    AsyncConversation,
    ChatResult,
    Conversation,
    EndReason,
    FinishReason,
    FunctionCallEvent,
    IncompleteStreamError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ReasoningDelta,
    SearchInfoEvent,
    SearchStatusEvent,
    TextDelta,
    ToolCallDelta,
)

QUESTION = "北京今天天气怎么样？"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "获取指定城市的实时天气",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
v2_only = pytest.mark.parametrize("api", ["v2"])


async def reasoning_then_text(h: Harness, **params: Any) -> tuple[str, str, ChatResult]:
    """Read ``reasoning_stream`` to its end, then ``text_stream``, then the final message."""
    client = h.client
    if isinstance(client, AsyncClient):
        async with client.chat.stream(**params) as stream:
            thoughts = [piece async for piece in stream.reasoning_stream]
            assert stream.reasoning == "".join(thoughts)
            texts = [piece async for piece in stream.text_stream]
            return "".join(thoughts), "".join(texts), await stream.get_final_message()

    def run() -> tuple[str, str, ChatResult]:
        with client.chat.stream(**params) as stream:
            thoughts = list(stream.reasoning_stream)
            assert stream.reasoning == "".join(thoughts)
            texts = list(stream.text_stream)
            return "".join(thoughts), "".join(texts), stream.get_final_message()

    return await h.call(run)


@v2_only
async def test_reasoning_is_its_own_event_never_text(make: Factory) -> None:
    h = make()
    out = await h.stream(QUESTION, model="ernie-x1.1")
    out.raise_error()
    thoughts = out.of(ReasoningDelta)
    assert len(thoughts) > 5
    reasoning = "".join(e.text for e in thoughts)
    first_text = next(i for i, e in enumerate(out.events) if isinstance(e, TextDelta))
    last_thought = max(i for i, e in enumerate(out.events) if isinstance(e, ReasoningDelta))
    assert last_thought < first_text
    assert out.result.reasoning == reasoning
    assert out.result.content == out.delivered
    assert reasoning not in out.delivered
    assert out.result.usage is not None
    assert out.result.usage.completion_tokens > 0


@v2_only
async def test_reasoning_stream_then_text_stream(make: Factory) -> None:
    h = make()
    thoughts, text, result = await reasoning_then_text(
        h, messages=QUESTION, model="ernie-x1.1", thinking_budget=100
    )
    assert thoughts.startswith("【模拟思考】")
    assert text.startswith("【离线模拟】")  # the first answer text was not lost
    assert (result.reasoning, result.content) == (thoughts, text)
    plain_thoughts, plain_text, _ = await reasoning_then_text(h, messages=QUESTION)
    assert plain_thoughts == ""
    assert plain_text


@v2_only
async def test_iterating_after_reasoning_stream_resumes_with_the_answer(make: Factory) -> None:
    h = make()
    client = h.client

    if isinstance(client, AsyncClient):
        async with client.chat.stream(messages=QUESTION, model="ernie-x1.1") as stream:
            async for _ in stream.reasoning_stream:
                break
            async for _ in stream.reasoning_stream:
                pass
            rest = [event async for event in stream]
            assert [piece async for piece in stream.reasoning_stream] == []
    else:

        def run() -> list[Any]:
            with client.chat.stream(messages=QUESTION, model="ernie-x1.1") as stream:
                for _ in stream.reasoning_stream:
                    break
                for _ in stream.reasoning_stream:
                    pass
                events = list(stream)
                assert list(stream.reasoning_stream) == []
                return events

        rest = await h.call(run)
    assert isinstance(rest[0], TextDelta)  # the event that ended the reasoning comes first
    assert not any(isinstance(e, ReasoningDelta) for e in rest)


@v2_only
async def test_next_after_reasoning_stream_gives_the_held_event(make: Factory) -> None:
    h = make()
    client = h.client
    if isinstance(client, AsyncClient):
        async with client.chat.stream(messages=QUESTION, model="ernie-x1.1") as stream:
            [piece async for piece in stream.reasoning_stream]
            first = await stream.__anext__()
            second = await stream.__anext__()
    else:

        def run() -> tuple[Any, Any]:
            with client.chat.stream(messages=QUESTION, model="ernie-x1.1") as stream:
                list(stream.reasoning_stream)
                return next(stream), next(stream)

        first, second = await h.call(run)
    assert isinstance(first, TextDelta)
    assert second is not None


@v2_only
async def test_a_whole_answer_has_its_reasoning(make: Factory) -> None:
    h = make()
    result = await h.create(QUESTION, model="ernie-x1.1")
    assert result.reasoning.startswith("【模拟思考】")
    assert result.content.startswith("【离线模拟】")
    hybrid = await h.create(QUESTION, model="ernie-5.1", enable_thinking=False)
    assert hybrid.reasoning == ""


@v2_only
async def test_a_cut_during_the_thinking_is_an_incomplete_answer(make: Factory) -> None:
    h = make()
    out = await h.stream(fault(QUESTION, "cut_after=4"), model="ernie-x1.1")
    assert isinstance(out.error, APIConnectionError | IncompleteStreamError)
    assert out.end_reason is EndReason.INCOMPLETE
    assert out.error.partial_text == ""  # no answer text yet
    assert out.result.reasoning  # the thinking that arrived is kept
    assert len(h.wire.chat()) == 1  # events reached the caller: no replay


@v2_only
@pytest.mark.parametrize("spec", ["", "tool_index=0;tool_pieces=3", "tool_pieces=5"])
async def test_a_two_step_tool_call(make: Factory, spec: str) -> None:
    h = make()
    question = fault(QUESTION, spec) if spec else QUESTION
    out = await h.stream(question, model="ernie-5.1", tools=[WEATHER])
    out.raise_error()
    assert out.of(ToolCallDelta)
    (call,) = out.result.tool_calls
    assert call.name == "get_current_weather"
    assert json.loads(call.arguments) == {"location": "北京"}
    assert out.result.finish_reason is FinishReason.TOOL_CALLS
    assert out.end_reason is EndReason.COMPLETED
    history = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            ],
            "reasoning_content": out.result.reasoning,  # stripped by the SDK
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]
    answer = await h.stream(history, model="ernie-5.1", tools=[WEATHER])
    answer.raise_error()
    assert 'get_current_weather 返回了 {"temp": 21}' in answer.result.content
    sent = json.loads(h.wire.chat()[-1].request.body)
    assert "reasoning_content" not in sent["messages"][1]


@v2_only
async def test_search_results_are_an_event_and_on_the_final_message(make: Factory) -> None:
    h = make()
    search = {"enable": True, "enable_citation": True, "enable_trace": True, "enable_status": True}
    out = await h.stream(QUESTION, model="ernie-5.1", enable_thinking=False, web_search=search)
    out.raise_error()
    (status,) = out.of(SearchStatusEvent)
    assert status.text not in out.delivered
    (info,) = out.of(SearchInfoEvent)
    assert [r.index for r in info.results] == [1, 2, 3]
    assert out.result.search_results == info.results
    assert "^[1]^" in out.result.content  # the markers stay as the server sent them
    assert out.result.usage is not None
    assert out.result.usage.extra["prompt_tokens_details"]["search_tokens"] > 0


def png(width: int, height: int) -> str:
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + b"\0" * 4
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_question(url: str) -> list[dict[str, Any]]:
    image = {"type": "image_url", "image_url": {"url": url}}
    return [{"role": "user", "content": [{"type": "text", "text": "图里是什么？"}, image]}]


@v2_only
async def test_an_image_question_to_a_vision_model(make: Factory) -> None:
    h = make()
    out = await h.stream(image_question(png(320, 200)), model="ernie-4.5-vl-28b-a3b")
    out.raise_error()
    assert "PNG 图片（320×200 像素" in out.result.content


@v2_only
@pytest.mark.parametrize(
    ("model", "url", "field"),
    [
        ("ernie-x1.1", png(32, 32), "messages[0].content[1]"),  # not a vision model
        ("ernie-4.5-vl-28b-a3b", png(7000, 32), "messages[0].content[1].image_url.url"),
    ],
)
async def test_an_image_baidu_would_refuse_never_leaves(
    make: Factory, model: str, url: str, field: str
) -> None:
    h = make()
    with pytest.raises(InvalidRequestError) as caught:
        await h.stream(image_question(url), model=model)
    assert caught.value.field == field
    assert h.wire.chat() == []


@v2_only
async def test_a_retired_model_answers_model_offline_once(make: Factory) -> None:
    h = make()
    out = await h.stream(QUESTION, model="ernie-5.0")
    assert isinstance(out.error, PermissionDeniedError)
    assert (out.error.code, out.error.status_code) == ("model_offline", 403)
    assert not out.error.retryable
    assert len(h.wire.chat()) == 1
    with pytest.raises(PermissionDeniedError, match="model_offline"):
        await h.create(QUESTION, model="ernie-4.5-turbo-vl")


@v2_only
async def test_an_unknown_model_is_sent_and_refused_by_the_server(make: Factory) -> None:
    h = make()
    out = await h.stream(QUESTION, model="deepseek-v3.2", enable_thinking=True)
    assert isinstance(out.error, NotFoundError)
    assert (out.error.code, out.error.status_code) == ("invalid_model", 401)
    assert len(h.wire.chat()) == 1  # it went out unchecked


@v2_only
async def test_a_field_the_model_cannot_honour_never_leaves(make: Factory) -> None:
    h = make()
    with pytest.raises(InvalidRequestError) as caught:
        await h.stream(QUESTION, model="ernie-x1-turbo-32k", stop=["。"])
    assert caught.value.field == "stop"
    with pytest.raises(InvalidRequestError) as caught:
        await h.create(QUESTION, model="ernie-char-8k", tools=[WEATHER])
    assert caught.value.field == "tools"
    assert h.wire.chat() == []


@pytest.mark.parametrize("api", ["v1"])
async def test_v1_tools_are_sent_as_functions(make: Factory, api: Api) -> None:
    h = make()
    out = await h.stream(QUESTION, model="ERNIE-4.0-8K", tools=[WEATHER])
    out.raise_error()
    (event,) = out.of(FunctionCallEvent)
    assert event.name == "get_current_weather"
    assert out.result.finish_reason is FinishReason.FUNCTION_CALL
    sent = json.loads(h.wire.chat()[-1].request.body)
    assert sent["functions"] == [WEATHER["function"]]
    history = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call-1",
                    "type": "function",
                    "function": {"name": event.name, "arguments": event.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call-1", "content": '{"temp": 21}'},
    ]
    answer = await h.create(history, model="ERNIE-4.0-8K", tools=[WEATHER])
    assert 'get_current_weather 返回了 {"temp": 21}' in answer.content


@v2_only
async def test_a_conversation_never_sends_reasoning_back(make: Factory) -> None:
    h = make()
    client = h.client
    if isinstance(client, AsyncClient):
        conv: Any = AsyncConversation(client, model="ernie-x1.1")
        for question in ("你好", "再说一遍"):
            async with conv.stream(question) as stream:
                await stream.until_done()
        messages = conv.messages
    else:

        def run() -> list[dict[str, str]]:
            conversation = Conversation(client, model="ernie-x1.1")
            for question in ("你好", "再说一遍"):
                with conversation.stream(question) as stream:
                    stream.until_done()
            return conversation.messages

        messages = await h.call(run)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert all(set(m) == {"role", "content"} for m in messages)
    second = json.loads(h.wire.chat()[-1].request.body)
    assert all("reasoning_content" not in m for m in second["messages"])
