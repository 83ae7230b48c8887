"""One request for both generations: what is translated, what is refused (naming the field)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wenxin_stream import InvalidRequestError
from wenxin_stream._dialects import to_v1, to_v2
from wenxin_stream._models import find_model
from wenxin_stream._requests import build_v1_chat, build_v2_chat

WEATHER = {
    "name": "get_weather",
    "description": "天气",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TOOL = {"type": "function", "function": WEATHER}
USER = {"role": "user", "content": "北京天气？"}


def v1_body(**params: Any) -> dict[str, Any]:
    request = build_v1_chat("ERNIE-4.0-8K", [USER], stream=False, **params)
    loaded: dict[str, Any] = json.loads(request.body_bytes())
    return loaded


def v2_body(model: str = "ernie-4.0-8k", **params: Any) -> dict[str, Any]:
    request = build_v2_chat(model, [USER], stream=False, **params)
    loaded: dict[str, Any] = json.loads(request.body_bytes())
    return loaded


def test_v1_takes_tools_as_functions() -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    body = v1_body(tools=[TOOL], tool_choice=choice, parallel_tool_calls=False)
    assert body["functions"] == [WEATHER]
    assert body["tool_choice"] == choice
    assert "tools" not in body
    assert "parallel_tool_calls" not in body  # honoured: v1 makes at most one call
    assert "tool_choice" not in v1_body(tools=[TOOL], tool_choice="auto")  # the default


def test_v1_models_without_functions_keep_tools() -> None:
    request = build_v1_chat("ERNIE-Speed-128K", [USER], stream=False, tools=[TOOL])
    assert json.loads(request.body_bytes())["tools"] == [TOOL]
    custom = build_v1_chat(None, [USER], stream=False, endpoint="my-ep", tools=[TOOL])
    assert "tools" in json.loads(custom.body_bytes())


def test_v1_user_search_and_response_format() -> None:
    body = v1_body(
        user="u-1",
        web_search={"enable": False, "enable_citation": True, "enable_trace": True},
        response_format={"type": "json_object"},
        max_completion_tokens=100,
        include_usage=True,
    )
    assert body["user_id"] == "u-1"
    assert (body["disable_search"], body["enable_citation"], body["enable_trace"]) == (
        True,
        True,
        True,
    )
    assert body["response_format"] == "json_object"
    assert body["max_output_tokens"] == 100
    assert "include_usage" not in body


def test_v1_tool_history_becomes_function_messages() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"北京"}'},
    }
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp":20}'},
    ]
    request = build_v1_chat("ERNIE-4.0-8K", messages, stream=False, tools=[TOOL])
    sent = json.loads(request.body_bytes())["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "",
        "function_call": {"name": "get_weather", "arguments": '{"city":"北京"}'},
    }
    assert sent[2] == {"role": "function", "name": "get_weather", "content": '{"temp":20}'}
    assert messages[1]["tool_calls"] == [call]  # the caller's messages are untouched


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"seed": 7}, "seed"),
        ({"metadata": {"a": "b"}}, "metadata"),
        ({"enable_thinking": True}, "enable_thinking"),
        ({"thinking_budget": 200}, "thinking_budget"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"thinking_strategy": "short_think"}, "thinking_strategy"),
        ({"repetition_penalty": 1.1}, "repetition_penalty"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 1}, "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"include_usage": False}, "include_usage"),
        ({"parallel_tool_calls": True, "tools": [TOOL]}, "parallel_tool_calls"),
        ({"tools": [TOOL], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL], "tool_choice": "none"}, "tool_choice"),
        ({"tools": [TOOL], "functions": [WEATHER]}, "tools"),
        ({"tools": TOOL}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"web_search": {"enable": True, "search_number": 5}}, "web_search.search_number"),
        ({"web_search": "on"}, "web_search"),
        ({"web_search": {"enable": True}, "disable_search": True}, "web_search"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
        ({"user": "a", "user_id": "b"}, "user"),
    ],
)
def test_v1_refuses_what_it_cannot_honour(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        v1_body(**params)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "messages",
    [
        [
            USER,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "1"},
        ],
        [USER, {"role": "assistant", "content": "", "tool_calls": [{"function": {}}]}, USER],
        [USER, {"role": "assistant", "content": "好"}, {"role": "tool", "content": "1"}],
    ],
)
def test_v1_refuses_tool_history_it_cannot_express(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        build_v1_chat("ERNIE-4.0-8K", messages, stream=False)
    assert caught.value.field == "messages"


def test_v2_takes_the_v1_spellings() -> None:
    body = v2_body(
        user_id="u-1",
        functions=[WEATHER],
        disable_search=False,
        enable_citation=True,
        enable_trace=False,
        response_format="json_object",
    )
    assert body["user"] == "u-1"
    assert body["tools"] == [TOOL]
    assert body["web_search"] == {"enable": True, "enable_citation": True, "enable_trace": False}
    assert body["response_format"] == {"type": "json_object"}
    assert "functions" not in body
    assert "user_id" not in body


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_output_tokens": 2}, "min_output_tokens"),
        ({"user_setting": {"x": 1}}, "user_setting"),
        ({"enable_system_memory": True}, "enable_system_memory"),
        ({"system_memory_id": "m"}, "system_memory_id"),
        ({"functions": [WEATHER], "tools": [TOOL]}, "functions"),
        ({"functions": WEATHER}, "functions"),
        ({"disable_search": True, "web_search": {"enable": False}}, "disable_search"),
        ({"user_id": "a", "user": "b"}, "user_id"),
    ],
)
def test_v2_refuses_what_it_cannot_honour(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        v2_body(**params)
    assert caught.value.field == field


def test_the_mappings_work_in_place_on_plain_dicts() -> None:
    params: dict[str, Any] = {"user": "u", "tools": [TOOL]}
    messages: list[Any] = [dict(USER)]
    to_v1(params, messages, find_model("ERNIE-Lite-8K"))
    assert params == {"user_id": "u", "tools": [TOOL]}  # Lite takes tools as they are
    back: dict[str, Any] = {"user_id": "u"}
    to_v2(back)
    assert back == {"user": "u"}
