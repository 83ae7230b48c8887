"""Function calling in the emulator: which tool to call, with what arguments, and the answer
after the results come back.

Theory of operation
===================

Answers must be deterministic and useful, so that a client's whole tool loop — call, run the
tool, send the result, read the final text — can be tested offline:

1. **Whether to call** (:func:`choose_tools`). ``tool_choice: "none"`` never calls; a forced
   ``{"type": "function", "function": {"name"}}`` calls that tool; otherwise each tool is
   scored against the question by the words of its name (``get_current_weather`` → current,
   weather), the longer English words of its description and the two-character runs of its
   Chinese description (``获取城市天气`` → 城市, 天气…), ignoring filler. ``"auto"`` (the
   default) calls the tools that score, all of them when ``parallel_tool_calls`` is not false
   (the best one otherwise); ``"required"`` calls the best, or the first tool when none scores.
   A question answered by tool results (the conversation ends with ``tool`` messages) is not
   asked again: the model answers in text.
2. **Arguments** (:func:`arguments_for`): a value for every *required* property of the tool's
   JSON Schema, recursively — ``enum`` / ``const`` / ``default`` first, then by type and name:
   a city named in the question for ``city`` / ``location``…, today's date for dates, the
   question for ``query`` / ``keyword``…, ``minimum`` (or 1) for numbers, ``true``, one-item
   arrays, nested objects. Optional properties are left out, as a careful model does.
3. **Ids**: 32 lowercase hex characters, as in Baidu's example (``shared/ERNIE-CURRENT.md``
   §3.2), drawn from the emulator's id generator.
4. **After the results** (:func:`answer_after_tools`): a text that names each tool and quotes
   its result, then answers the question.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ._answers import OPENING, brief

__all__ = ["PlannedCall", "answer_after_tools", "arguments_for", "choose_tools", "plan_calls"]

_STOP_WORDS = frozenset(
    {
        "get", "set", "the", "for", "and", "with", "from", "that", "this", "given", "into",
        "what", "when", "where", "which", "about", "function", "tool", "call", "return",
        "returns", "using", "used", "will", "some", "make", "info", "data",
    }
)  # fmt: skip
_FILLER = frozenset("的了是在和与或及一个这那为用于对从把被等并其中可以")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]{2,}")
_WORDS = re.compile(r"[A-Za-z]{3,}")
_CITIES = (
    "北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆", "天津",
    "苏州", "长沙", "青岛", "厦门", "哈尔滨", "Beijing", "Shanghai", "Shenzhen", "Boston",
    "New York", "San Francisco", "London", "Paris", "Tokyo", "Singapore",
)  # fmt: skip
_PLACE_NAMES = ("city", "location", "place", "address", "region", "地点", "城市", "位置")
_DATE_NAMES = ("date", "day", "time", "日期", "时间")
_QUERY_NAMES = ("query", "keyword", "question", "text", "content", "prompt", "search", "q")


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """A tool call the emulator answers with: its ``id``, function ``name`` and ``arguments``
    (a JSON string)."""

    id: str
    name: str
    arguments: str


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, Mapping) else {}


def _keywords(function: Mapping[str, Any]) -> set[str]:
    name = str(function.get("name", ""))
    description = function.get("description")
    description = description if isinstance(description, str) else ""
    words = {w.lower() for w in re.split(r"[_\-\s]+", name) if len(w) >= 3}
    words |= {w.lower() for w in _WORDS.findall(description) if len(w) >= 4}
    words -= _STOP_WORDS
    for run in _CJK_RUN.findall(name + " " + description):
        for i in range(len(run) - 1):
            pair = run[i : i + 2]
            if not (set(pair) & _FILLER):
                words.add(pair)
    return words


def _score(function: Mapping[str, Any], question: str) -> int:
    lowered = question.lower()
    return sum(1 for word in _keywords(function) if word in lowered)


def choose_tools(body: Mapping[str, Any], question: str) -> list[Mapping[str, Any]]:
    """The functions (``tools[].function`` objects) to call for ``question`` (see the module
    docstring); ``[]`` means answer in text."""
    tools = [t for t in body.get("tools") or () if isinstance(t, Mapping)]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return []
    functions = [_function(t) for t in tools]
    if isinstance(choice, Mapping):
        wanted = _function(choice).get("name")
        return [f for f in functions if f.get("name") == wanted][:1]
    scored = [(_score(f, question), position, f) for position, f in enumerate(functions)]
    matching = [item for item in scored if item[0] > 0]
    matching.sort(key=lambda item: (-item[0], item[1]))
    if not matching:
        return [functions[0]] if choice == "required" else []
    if body.get("parallel_tool_calls") is False or choice == "required":
        return [matching[0][2]]
    return [f for _, _, f in sorted(matching, key=lambda item: item[1])]


def _city(question: str) -> str:
    for city in _CITIES:
        if city.lower() in question.lower():
            return city
    return "北京" if any("\u4e00" <= ch <= "\u9fff" for ch in question) else "Beijing"


def _string_for(name: str, schema: Mapping[str, Any], question: str, today: date) -> str:
    lowered = name.lower()
    kind = schema.get("format")
    if kind == "date" or any(word in lowered for word in _DATE_NAMES):
        return today.isoformat() if kind != "date-time" else f"{today.isoformat()}T09:00:00+08:00"
    if kind == "date-time":
        return f"{today.isoformat()}T09:00:00+08:00"
    if any(word in lowered for word in _PLACE_NAMES):
        return _city(question)
    if "unit" in lowered:
        return "celsius"
    if lowered in ("lang", "language", "locale"):
        return "zh-CN"
    if any(word == lowered or lowered.endswith(word) for word in _QUERY_NAMES):
        return brief(question)
    return f"示例{name}" if name else "示例"


def arguments_for(
    schema: object, question: str, today: date, name: str = "", depth: int = 0
) -> Any:
    """A value that satisfies ``schema`` (a JSON Schema), filling required properties with
    plausible values taken from ``question`` and ``today`` (see the module docstring)."""
    if not isinstance(schema, Mapping) or depth > 8:
        return {} if depth == 0 else "示例"
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema or depth == 0 else "string"
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        return {
            key: arguments_for(properties.get(key, {}), question, today, key, depth + 1)
            for key in names
        }
    if kind == "array":
        items = schema.get("items", {})
        count = schema.get("minItems", 1)
        count = count if isinstance(count, int) and not isinstance(count, bool) else 1
        return [arguments_for(items, question, today, name, depth + 1)] * max(1, count)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = low if isinstance(low, int | float) and not isinstance(low, bool) else 1
        if "exclusiveMinimum" in schema and value == schema.get("exclusiveMinimum"):
            value += 1
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string_for(name, schema, question, today)


def plan_calls(
    body: Mapping[str, Any], question: str, today: date, new_id: Callable[[], str]
) -> tuple[PlannedCall, ...]:
    """The tool calls to answer with (``()``: answer in text)."""
    calls = []
    for function in choose_tools(body, question):
        arguments = arguments_for(function.get("parameters"), question, today)
        text = json.dumps(arguments if isinstance(arguments, dict) else {}, ensure_ascii=False)
        calls.append(PlannedCall(new_id(), str(function.get("name", "")), text))
    return tuple(calls)


def answer_after_tools(messages: Sequence[Any], question: str) -> str | None:
    """The text answer to a conversation that ends with tool results, or None when it does
    not (see the module docstring)."""
    results: list[Mapping[str, Any]] = []
    for message in reversed(messages):
        if not isinstance(message, Mapping) or message.get("role") != "tool":
            break
        results.insert(0, message)
    if not results:
        return None
    names: dict[str, str] = {}
    for message in messages:
        calls = message.get("tool_calls") if isinstance(message, Mapping) else None
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, Mapping):
                names[str(call.get("id"))] = str(_function(call).get("name", "工具"))
    parts = [OPENING, "根据工具返回的结果："]
    for message in results:
        name = message.get("name") or names.get(str(message.get("tool_call_id")), "工具")
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        text = " ".join(text.split())
        parts.append(f"{name} 返回了 {text[:300]}{'…' if len(text) > 300 else ''}。")
    parts.append(f"据此回答你的问题“{brief(question)}”：以上结果就是答案的依据。")
    return "".join(parts)
