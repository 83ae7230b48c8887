"""The v2 fields of today's ERNIE (shapes and ranges), and what each model can honour."""

from __future__ import annotations

from typing import Any

import pytest

from wenxin_stream._models import ModelSpec, lookup_model
from wenxin_stream._parameters import check_capabilities, check_v2_params

USER = {"role": "user", "content": "你好"}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [USER], **fields}


def known(name: str) -> ModelSpec:
    spec = lookup_model(name)
    assert spec is not None
    return spec


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"max_tokens": 1, "max_completion_tokens": 2},
        {"stop": ["。", "x" * 20]},
        {"seed": 1},
        {"seed": 2147483646},
        {"user": "u-1", "metadata": {f"k{i}": "v" for i in range(16)}},
        {"penalty_score": 1},
        {"penalty_score": 2.0},
        {"stream_options": {"include_usage": True, "chunk_include_usage": False, "new": 1}},
        {"response_format": {"type": "text"}},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}},
        {"tools": [TOOL]},
        {"tools": [TOOL], "tool_choice": "auto", "parallel_tool_calls": False},
        {"tools": [TOOL], "tool_choice": "required"},
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"web_search": {"enable": True, "search_number": 28, "reference_num": 1}},
        {"web_search": {"enable": False, "search_mode": "auto", "enable_status": True}},
        {"enable_thinking": True, "thinking_budget": 100, "reasoning_effort": "high"},
        {"thinking_strategy": "chain_of_draft"},
        {"logprobs": True, "top_logprobs": 20},
        {"brand_new_field": {"anything": 1}},
    ],
)
def test_valid_fields_pass(fields: dict[str, Any]) -> None:
    assert check_v2_params(body(**fields)) is None


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"max_tokens": 0}, "max_tokens", "positive integer"),
        ({"max_completion_tokens": True}, "max_completion_tokens", "positive integer"),
        ({"stop": ["a"] * 5}, "stop", "at most 4"),
        ({"stop": ["x" * 21]}, "stop", "20 chars"),
        ({"seed": 0}, "seed", "(0, 2147483647)"),
        ({"seed": 2147483647}, "seed", "(0, 2147483647)"),
        ({"seed": 1.5}, "seed", "integer"),
        ({"user": 5}, "user", "string"),
        ({"metadata": {"k": 1}}, "metadata", "strings to strings"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
        ({"penalty_score": 2.5}, "penalty_score", "[1, 2]"),
        ({"penalty_score": float("nan")}, "penalty_score", "[1, 2]"),
        ({"stream_options": "yes"}, "stream_options", "object"),
        (
            {"stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
            "boolean",
        ),
        ({"logprobs": "yes"}, "logprobs", "boolean"),
        ({"top_logprobs": 21}, "top_logprobs", "[0, 20]"),
        ({"enable_thinking": "on"}, "enable_thinking", "boolean"),
        ({"thinking_budget": 99}, "thinking_budget", "at least 100"),
        ({"reasoning_effort": "max"}, "reasoning_effort", "low, medium or high"),
        ({"thinking_strategy": "long"}, "thinking_strategy", "short_think"),
        ({"response_format": "json_object"}, "response_format", '"type"'),
        ({"response_format": {"type": "xml"}}, "response_format", '"type"'),
        (
            {"response_format": {"type": "json_schema"}},
            "response_format.json_schema",
            "schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
            "response_format.json_schema",
            "schema",
        ),
        ({"tools": []}, "tools", "non-empty list"),
        ({"tools": TOOL}, "tools", "non-empty list"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]", '"type": "function"'),
        (
            {"tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools[0].function.name",
            "1-64 letters",
        ),
        ({"tools": [TOOL, TOOL]}, "tools[1].function.name", "twice"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "description": 1}}]},
            "tools[0].function.description",
            "string",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
            "JSON Schema",
        ),
        ({"tool_choice": "auto"}, "tool_choice", "only allowed together with tools"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls", "only allowed together"),
        ({"tools": [TOOL], "parallel_tool_calls": "yes"}, "parallel_tool_calls", "boolean"),
        ({"tools": [TOOL], "tool_choice": "any"}, "tool_choice", '"none", "auto"'),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
            "not in tools",
        ),
        ({"web_search": True}, "web_search", "object"),
        ({"web_search": {"enable": "yes"}}, "web_search.enable", "boolean"),
        ({"web_search": {"search_mode": "always"}}, "web_search.search_mode", '"auto"'),
        ({"web_search": {"search_number": 29}}, "web_search.search_number", "[1, 28]"),
        ({"web_search": {"reference_num": 0}}, "web_search.reference_number", "[1, 28]"),
        (
            {"web_search": {"search_number": 3, "search_num": 3}},
            "web_search.search_number",
            "same field",
        ),
    ],
)
def test_each_bad_field_is_named(fields: dict[str, Any], field: str, text: str) -> None:
    problem = check_v2_params(body(**fields))
    assert problem is not None
    assert problem.field == field
    assert text in problem.message
    assert problem.v2_code == "invalid_argument"


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("ernie-x1.1", {"tools": [TOOL], "web_search": {"enable": True}}),
        ("ernie-x1.1", {"temperature": 0.5, "top_p": 0.5, "presence_penalty": 1}),  # ignored
        ("ernie-x1.1", {"thinking_budget": 1000, "reasoning_effort": "low"}),
        ("ernie-5.1", {"enable_thinking": False, "logprobs": True}),  # not thinking: allowed
        ("ernie-4.5-vl-28b-a3b", {"enable_thinking": True}),
        ("ernie-4.0-8k", {"enable_thinking": False, "max_tokens": 2048}),
        ("ernie-4.5-turbo-128k", {"tools": [TOOL]}),  # unknown capability: let through
        ("ernie-x1-turbo-32k", {"max_completion_tokens": 28160}),
    ],
)
def test_what_a_model_honours_passes(model: str, fields: dict[str, Any]) -> None:
    assert check_capabilities(body(**fields), known(model)) is None


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}


@pytest.mark.parametrize(
    ("model", "fields", "field", "text"),
    [
        ("ernie-char-8k", {"tools": [TOOL]}, "tools", "function calling"),
        ("ernie-speed-128k", {"web_search": {"enable": True}}, "web_search", "web search"),
        (
            "ernie-x1.1",
            {"web_search": {"enable": True, "search_mode": "required"}},
            "web_search.search_mode",
            "forced search",
        ),
        (
            "ernie-5.1",
            {"messages": [{"role": "user", "content": [IMAGE]}]},
            "messages[0].content[0]",
            "does not take images",
        ),
        ("ernie-4.0-8k", {"enable_thinking": True}, "enable_thinking", "does not think"),
        ("ernie-4.0-8k", {"thinking_budget": 200}, "thinking_budget", "does not think"),
        ("ernie-lite-8k", {"reasoning_effort": "low"}, "reasoning_effort", "does not think"),
        ("ernie-x1.1", {"enable_thinking": False}, "enable_thinking", "always thinks"),
        ("ernie-x1.1", {"logprobs": True}, "logprobs", "reasoning models reject"),
        ("ernie-5.1", {"top_logprobs": 2}, "top_logprobs", "reasoning models reject"),
        ("ernie-lite-8k", {"max_tokens": 2049}, "max_tokens", "at most 2048"),
        ("ernie-x1-turbo-32k", {"stop": ["。"]}, "stop", "does not support stop"),
        ("ernie-x1-turbo-32k", {"seed": 7}, "seed", "does not support seed"),
        (
            "ernie-x1-turbo-32k",
            {"response_format": {"type": "json_object"}},
            "response_format",
            "does not support",
        ),
        ("ernie-4.5-0.3b", {"penalty_score": 1.5}, "penalty_score", "does not support"),
    ],
)
def test_what_a_model_cannot_honour_is_named(
    model: str, fields: dict[str, Any], field: str, text: str
) -> None:
    problem = check_capabilities(body(**fields), known(model))
    assert problem is not None
    assert problem.field == field
    assert text in problem.message


def test_an_image_problem_is_an_invalid_messages_answer() -> None:
    problem = check_capabilities(
        body(messages=[{"role": "user", "content": [IMAGE]}]), known("ernie-4.0-8k")
    )
    assert problem is not None
    assert problem.v2_code == "invalid_messages"
