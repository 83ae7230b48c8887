"""The emulator's tool answers and search sources, as pure functions."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from wenxin_stream.emulator._search import cite, plan_search
from wenxin_stream.emulator._tools import answer_after_tools, arguments_for, choose_tools

DAY = date(2026, 12, 3)


@pytest.mark.parametrize(
    ("name", "schema", "value"),
    [
        ("x", {"const": 5}, 5),
        ("x", {"type": "string", "default": "d"}, "d"),
        ("x", {"enum": ["a", "b"]}, "a"),
        ("x", {"type": ["null", "integer"]}, 1),
        ("x", {"type": ["null"]}, None),
        ("x", {"type": "number", "minimum": 2.5}, 2.5),
        ("x", {"type": "integer", "exclusiveMinimum": 3}, 4),
        ("x", {"type": "integer", "minimum": True}, 1),
        ("when", {"type": "string", "format": "date-time"}, "2026-12-03T09:00:00+08:00"),
        ("start_time", {"type": "string", "format": "date-time"}, "2026-12-03T09:00:00+08:00"),
        ("day", {"type": "string"}, "2026-12-03"),
        ("city", {"type": "string"}, "Shanghai"),
        ("temperature_unit", {"type": "string"}, "celsius"),
        ("language", {"type": "string"}, "zh-CN"),
        ("query", {"type": "string"}, "weather in Shanghai"),
        ("q", {"type": "string"}, "weather in Shanghai"),
        ("color", {"type": "string"}, "示例color"),
        ("x", {"type": "array", "items": {"type": "boolean"}, "minItems": 2}, [True, True]),
        ("x", {"properties": {"a": {"type": "string"}}, "required": ["a", 3]}, {"a": "示例a"}),
        ("x", {"description": "no type at all"}, "示例x"),
        ("", "not a schema", "示例"),
    ],
)
def test_values_satisfy_their_schema(name: str, schema: Any, value: Any) -> None:
    assert arguments_for(schema, "weather in Shanghai", DAY, name, depth=1) == value


def test_the_top_level_is_an_object() -> None:
    assert arguments_for(None, "q", DAY) == {}
    assert arguments_for({}, "q", DAY) == {}
    deep: dict[str, Any] = {"type": "object", "properties": {}, "required": ["a"]}
    node = deep
    for _ in range(12):
        child: dict[str, Any] = {"type": "object", "properties": {}, "required": ["a"]}
        node["properties"]["a"] = child
        node = child
    assert arguments_for(deep, "q", DAY)  # bounded depth, no recursion error


def _tool(name: str, description: str = "") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description}}


def test_choosing_tools_by_their_words() -> None:
    tools = [_tool("get_current_weather"), _tool("send_mail", "发送电子邮件给联系人")]
    assert choose_tools({"tools": tools}, "weather?") == [tools[0]["function"]]
    assert choose_tools({"tools": tools}, "帮我发送邮件") == [tools[1]["function"]]
    assert choose_tools({"tools": tools}, "hello") == []
    assert choose_tools({"tools": []}, "weather?") == []
    forced = {"type": "function", "function": {"name": "send_mail"}}
    assert choose_tools({"tools": tools, "tool_choice": forced}, "x") == [tools[1]["function"]]


def test_an_answer_after_tools_needs_tool_results_at_the_end() -> None:
    assert answer_after_tools([{"role": "user", "content": "x"}], "x") is None
    long = {"role": "tool", "tool_call_id": "c", "content": {"rows": list(range(200))}}
    text = answer_after_tools([long], "x")
    assert text is not None
    assert "工具 返回了" in text  # no call names it: the generic name
    assert text.count("…") >= 1  # cut at 300 characters


def test_search_plans_and_citations() -> None:
    assert plan_search(None, "q") is None
    assert plan_search({"enable": "yes"}, "q") is None
    plan = plan_search({"enable": True, "search_number": 2, "reference_number": 5}, "q")
    assert plan is not None
    assert len(plan.results) == 2
    assert cite("一。二。三。四。五。", 0) == "一。二。三。四。五。"
    assert cite("一。二。三。四。五。", 1) == "一。二^[1]^。三^[1]^。四^[1]^。五。"
    assert cite("一。二。三。四。五。", 3) == "一。二^[1]^。三^[2][3]^。四^[3]^。五。"
