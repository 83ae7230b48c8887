"""Drive the official ``openai`` SDK against ``wenxin serve`` with today's ERNIE: thinking, tools,
web search, images, retired models and refused fields. Run by ``test_serve_current.py``.

Runs inside ``.venv-peers``. Arguments: the scenarios (or ``all``); environment:
``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` exactly as a user would set them. Prints one JSON
line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import openai

WEATHER: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "获取城市的当前天气",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "城市名"}},
                "required": ["city"],
            },
        },
    }
]
QUESTION: Any = [{"role": "user", "content": "北京今天的天气怎么样?"}]
SEARCH = {"enable": True, "enable_trace": True, "enable_citation": True}
# a real 16 × 8 PNG
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAICAIAAAB/FOjAAAAAFElEQVR4nGP4z8BAEiJN9agGIhEAJMZ/gd5KfaIAAAAASUVORK5CYII="
)


def _extra(obj: Any, name: str) -> Any:
    """A field the SDK does not declare (it keeps unknown fields as extras)."""
    return (obj.model_extra or {}).get(name)


def reasoning_stream() -> dict[str, Any]:
    client = openai.OpenAI(max_retries=0)
    stream = client.chat.completions.create(
        model="ernie-x1.1",
        messages=[{"role": "user", "content": "为什么天空是蓝色的?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    order, reasoning, text, finish, usage = [], "", "", [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            piece = _extra(choice.delta, "reasoning_content")
            if piece:
                reasoning += piece
                order.append("reasoning")
            if choice.delta.content:
                text += choice.delta.content
                order.append("content")
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    first_content = order.index("content")
    return {
        "reasoning": reasoning,
        "text": text,
        "reasoning_before_text": "reasoning" not in order[first_content:],
        "finish": finish,
        "usage": usage,
    }


def reasoning_whole() -> dict[str, Any]:
    client = openai.OpenAI(max_retries=0)
    completion = client.chat.completions.create(
        model="ernie-x1.1", messages=[{"role": "user", "content": "为什么天空是蓝色的?"}]
    )
    message = completion.choices[0].message
    return {
        "reasoning": _extra(message, "reasoning_content"),
        "text": message.content,
        "finish": completion.choices[0].finish_reason,
    }


def _tool_round(client: openai.OpenAI, stream: bool) -> dict[str, Any]:
    calls: dict[int, dict[str, Any]] = {}
    if stream:
        finish = None
        for chunk in client.chat.completions.create(
            model="ernie-5.1", messages=QUESTION, tools=WEATHER, stream=True
        ):
            for choice in chunk.choices:
                for part in choice.delta.tool_calls or []:
                    call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = part.id or call["id"]
                    if part.function is not None:
                        call["name"] += part.function.name or ""
                        call["arguments"] += part.function.arguments or ""
                finish = choice.finish_reason or finish
    else:
        completion = client.chat.completions.create(
            model="ernie-5.1", messages=QUESTION, tools=WEATHER
        )
        finish = completion.choices[0].finish_reason
        for index, tool_call in enumerate(completion.choices[0].message.tool_calls or []):
            function = tool_call.function  # type: ignore[union-attr]
            calls[index] = {
                "id": tool_call.id,
                "name": function.name,
                "arguments": function.arguments,
            }
    history: Any = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in calls.values()
            ],
        },
        *[
            {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": "25℃"}'}
            for call in calls.values()
        ],
    ]
    final = client.chat.completions.create(model="ernie-5.1", messages=history, tools=WEATHER)
    return {
        "finish": finish,
        "calls": list(calls.values()),
        "final": final.choices[0].message.content,
        "final_finish": final.choices[0].finish_reason,
    }


def tools_stream() -> dict[str, Any]:
    return _tool_round(openai.OpenAI(max_retries=0), stream=True)


def tools_whole() -> dict[str, Any]:
    return _tool_round(openai.OpenAI(max_retries=0), stream=False)


def search() -> dict[str, Any]:
    client = openai.OpenAI(max_retries=0)
    results, text = None, ""
    for chunk in client.chat.completions.create(
        model="ernie-5.1",
        messages=[{"role": "user", "content": "今天有什么科技新闻?"}],
        stream=True,
        extra_body={"web_search": SEARCH},
    ):
        results = results or _extra(chunk, "search_results")
        for choice in chunk.choices:
            text += choice.delta.content or ""
    completion = client.chat.completions.create(
        model="ernie-5.1",
        messages=[{"role": "user", "content": "今天有什么科技新闻?"}],
        extra_body={"web_search": SEARCH},
    )
    return {
        "stream_results": results,
        "stream_text": text,
        "whole_results": _extra(completion, "search_results"),
        "whole_text": completion.choices[0].message.content,
    }


def image() -> dict[str, Any]:
    client = openai.OpenAI(max_retries=0)
    parts: Any = [
        {"type": "text", "text": "这张图片里有什么?"},
        {"type": "image_url", "image_url": {"url": PNG}},
    ]
    messages: Any = [{"role": "user", "content": parts}]
    text = ""
    for chunk in client.chat.completions.create(
        model="ernie-4.5-vl-28b-a3b", messages=messages, stream=True
    ):
        for choice in chunk.choices:
            text += choice.delta.content or ""
    whole = client.chat.completions.create(model="ernie-4.5-vl-28b-a3b", messages=messages)
    return {"stream_text": text, "whole_text": whole.choices[0].message.content}


def _status(call: Any) -> dict[str, Any]:
    try:
        call()
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        return {
            "class": type(exc).__name__,
            "status": exc.status_code,
            "code": exc.code,
            "param": body.get("param"),
        }
    return {"class": None}


def refused() -> dict[str, Any]:
    client = openai.OpenAI(max_retries=0)
    create = client.chat.completions.create
    ask: Any = [{"role": "user", "content": "你好"}]
    return {
        "retired": _status(lambda: create(model="ernie-5.0", messages=ask)),
        "retired_stream": _status(
            lambda: list(create(model="ernie-4.5-turbo-128k", messages=ask, stream=True))
        ),
        "retired_model": _status(lambda: client.models.retrieve("ernie-5.0")),
        "tools_unsupported": _status(
            lambda: create(model="ernie-speed-8k", messages=ask, tools=WEATHER)
        ),
        "thinking_off": _status(
            lambda: create(model="ernie-x1.1", messages=ask, extra_body={"enable_thinking": False})
        ),
        "image_on_text_model": _status(
            lambda: create(
                model="ernie-x1.1",
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}
                ],
            )
        ),
        "unknown_field": _status(
            lambda: create(model="ernie-5.1", messages=ask, extra_body={"foo": 1})
        ),
        "n": _status(lambda: create(model="ernie-5.1", messages=ask, n=2)),
    }


def models() -> dict[str, Any]:
    client = openai.OpenAI(max_retries=0)
    listed = {m.id: m.model_dump() for m in client.models.list()}
    alias = client.models.retrieve("ernie-x1-turbo-latest").model_dump()
    return {"listed": listed, "alias": alias}


SCENARIOS = {
    "reasoning_stream": reasoning_stream,
    "reasoning_whole": reasoning_whole,
    "tools_stream": tools_stream,
    "tools_whole": tools_whole,
    "search": search,
    "image": image,
    "refused": refused,
    "models": models,
}

if __name__ == "__main__":
    names = list(SCENARIOS) if sys.argv[1] == "all" else sys.argv[1:]
    print(json.dumps({name: SCENARIOS[name]() for name in names}, ensure_ascii=False))
