from __future__ import annotations

from typing import Any

import pytest

from wenxin_stream._validation import (
    check_stop,
    check_v1_messages,
    check_v1_params,
    check_v2_messages,
)


def u(text: str = "你好") -> dict[str, Any]:
    return {"role": "user", "content": text}


def a(text: str = "您好") -> dict[str, Any]:
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize(
    "messages",
    [
        [u()],
        [u(), a(), u()],
        [
            u(),
            {"role": "assistant", "content": "", "function_call": {"name": "f"}},
            {"role": "function", "name": "f", "content": "{}"},
        ],
    ],
)
def test_valid_v1_conversations(messages: list[dict[str, Any]]) -> None:
    assert check_v1_messages(messages) is None


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ([], "must not be empty"),
        ("hi", "must not be empty"),
        ([u(), a()], "odd number"),
        ([u(), u(), u()], "odd index in the messages must be assistant"),
        ([a(), a(), u()], "even index in the messages must be user"),
        ([{"role": "function", "name": "f", "content": "x"}], "must be user"),
        ([u(), a(), a()], "must be user or function"),
        ([{"role": "system", "content": "persona"}, u()], "system field"),
        ([u("")], "must not be empty"),
        ([u(), {"role": "assistant", "content": None}, u()], "must not be empty"),
        ([u(), a(), {"role": "function", "content": "{}"}], "must have a name"),
        ([u(" \n\r\f")], "last message must not be blank"),
        ([u(), a(), {"role": "user", "content": 5}], "must be a string"),
        (["hello"], "must be an object"),
    ],
)
def test_v1_message_rules(messages: Any, text: str) -> None:
    problem = check_v1_messages(messages)
    assert problem is not None
    assert text in problem.message
    assert problem.v1_code == 336006
    assert problem.v2_code == "invalid_messages"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": 1.01}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"penalty_score": 0.9}, "penalty_score"),
        ({"penalty_score": 2.1}, "penalty_score"),
        ({"max_output_tokens": 1}, "max_output_tokens"),
        ({"max_output_tokens": 2049}, "max_output_tokens"),
        ({"max_output_tokens": 2.5}, "max_output_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": ["x" * 21]}, "stop"),
        ({"stop": "。"}, "stop"),
        ({"system": ["persona"]}, "system"),
        ({"stream": "yes"}, "stream"),
        ({"disable_search": 1}, "disable_search"),
    ],
)
def test_v1_parameter_ranges(params: dict[str, Any], field: str) -> None:
    problem = check_v1_params(params)
    assert problem is not None
    assert problem.field == field
    assert problem.v1_code == 336003
    assert field in problem.message


def test_v1_parameters_at_their_bounds_pass() -> None:
    assert (
        check_v1_params(
            {
                "temperature": 1.0,
                "top_p": 0,
                "penalty_score": 2,
                "max_output_tokens": 2,
                "stop": ["。", "x" * 20],
                "system": "你是助手",
                "stream": True,
                "unknown_future_field": {"kept": True},
            }
        )
        is None
    )
    assert check_stop(None) is None


def test_v2_messages() -> None:
    assert check_v2_messages([{"role": "system", "content": "s"}, u()]) is None
    assert check_v2_messages([u(), a(), u(), a(), u()]) is None
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    parts = [{"type": "text", "text": "看图"}, image]
    assert check_v2_messages([{"role": "user", "content": parts}]) is None
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tool_call = {"role": "assistant", "content": None, "tool_calls": [call]}
    assert (
        check_v2_messages([u(), tool_call, {"role": "tool", "tool_call_id": "1", "content": "{}"}])
        is None
    )


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ([], "must not be empty"),
        ([{"role": "robot", "content": "x"}], "role of message 0 is invalid"),
        ([u(), {"role": "tool", "content": "{}"}], "tool_call_id"),
        ([{"role": "user", "content": None}], "must not be empty"),
        ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "needs a string text"),
        ([{"role": "user", "content": ["text"]}], "must be an object with a type"),
        ([{"role": "user", "content": 42}], "malformed"),
        ([u("   ")], "must not be blank"),
        ([7], "must be an object"),
    ],
)
def test_v2_message_problems(messages: Any, text: str) -> None:
    problem = check_v2_messages(messages)
    assert problem is not None
    assert text in problem.message


def test_v2_alternation_is_optional() -> None:
    messages = [{"role": "system", "content": "s"}, u(), u()]
    assert check_v2_messages(messages) is None
    problem = check_v2_messages(messages, alternation=True)
    assert problem is not None
    assert "odd" in problem.message or "assistant" in problem.message


def _call(call_id: str, name: str = "f") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def _calls(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": "", "tool_calls": list(calls)}


def _tool(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "{}"}


def test_tool_results_answer_the_calls_before_them() -> None:
    calls = {"role": "assistant", "content": "", "tool_calls": [_call("a"), _call("b", "g")]}
    parallel = [u(), calls, _tool("a"), _tool("b")]  # two results in a row
    assert check_v2_messages(parallel) is None
    assert check_v2_messages([*parallel, a("好的"), u("再问一次")]) is None


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ([u(), _tool("a")], "answers no tool call"),
        ([u(), _calls(_call("a")), _tool("b")], "'b'"),
        (
            [
                u(),
                {"role": "assistant", "content": "", "tool_calls": [_call("a")]},
                _tool("a"),
                u("下一个"),
                _tool("a"),
            ],
            "answers no tool call",
        ),
        ([u(), {"role": "assistant", "content": "", "tool_calls": []}], "non-empty list"),
        ([u(), {"role": "assistant", "content": "", "tool_calls": [{"id": "a"}]}], "tool call 0"),
        (
            [u(), _calls({**_call("a"), "type": "x"})],
            "tool call 0",
        ),
        ([u(), {"role": "tool", "tool_call_id": 5, "content": "{}"}], "must have a tool_call_id"),
        (
            [u(), {"role": "assistant", "content": "想", "reasoning_content": "…"}, u()],
            "reasoning_content",
        ),
        ([{"role": "user", "content": [{"type": "audio"}]}], "unknown content part type"),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "user messages only",
        ),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], "object"),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://a/b", "detail": "x"}}
                    ],
                }
            ],
            "low or high",
        ),
        ([{"role": "user", "content": [{"type": "text", "text": "  "}]}], "must not be blank"),
    ],
)
def test_v2_tool_image_and_reasoning_rules(messages: Any, text: str) -> None:
    problem = check_v2_messages(messages)
    assert problem is not None
    assert text in problem.message


def test_an_image_url_problem_names_the_part() -> None:
    bad = {"type": "image_url", "image_url": {"url": "ftp://x"}}
    parts = [{"type": "text", "text": "看"}, bad]
    problem = check_v2_messages([{"role": "user", "content": parts}])
    assert problem is not None
    assert problem.field == "messages[0].content[1].image_url.url"
    assert problem.v2_code == "invalid_image_url"


def test_an_image_alone_is_a_question() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    assert check_v2_messages([{"role": "user", "content": [image]}]) is None
