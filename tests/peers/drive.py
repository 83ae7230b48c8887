"""Drive one official SDK against the emulator; run by tests/peers/test_peers.py.

This script runs inside ``.venv-peers`` (never the package's own environment). It takes the
scenario name as its only argument, reads its configuration from the environment exactly as a
user would set it (base URLs, keys), streams one answer and prints one JSON line to stdout:
``{"text": ..., "chunks": N, "last": {...last raw chunk...}}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from typing import Any

PROMPT = os.environ.get("DRIVE_PROMPT", "介绍一下长城")


def _emit(text: str, chunks: int, last: Any) -> None:
    print(json.dumps({"text": text, "chunks": chunks, "last": last}, ensure_ascii=False))


def qianfan_v1() -> None:
    import qianfan

    chat = qianfan.ChatCompletion(model=os.environ.get("DRIVE_MODEL", "ERNIE-Lite-8K"))
    text, n, last = "", 0, None
    for resp in chat.do(messages=[{"role": "user", "content": PROMPT}], stream=True):
        text += resp["result"]
        n += 1
        last = resp.body
    _emit(text, n, last)


def qianfan_v1_async() -> None:
    import qianfan

    async def run() -> None:
        chat = qianfan.ChatCompletion(model="ERNIE-Lite-8K")
        text, n, last = "", 0, None
        stream = await chat.ado(messages=[{"role": "user", "content": PROMPT}], stream=True)
        async for resp in stream:
            text += resp["result"]
            n += 1
            last = resp.body
        _emit(text, n, last)

    asyncio.run(run())


def qianfan_v2() -> None:
    import qianfan

    chat = qianfan.ChatCompletion(version="2", model="ernie-lite-8k")
    text, n, last = "", 0, None
    for resp in chat.do(messages=[{"role": "user", "content": PROMPT}], stream=True):
        for choice in resp.body.get("choices", []):
            text += choice.get("delta", {}).get("content") or ""
        n += 1
        last = resp.body
    _emit(text, n, last)


def erniebot_v1() -> None:
    import erniebot

    stream = erniebot.ChatCompletion.create(
        model="ernie-3.5", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    text, n, last = "", 0, None
    for resp in stream:
        text += resp.get_result()
        n += 1
        last = resp.to_dict() if hasattr(resp, "to_dict") else None
    _emit(text, n, last)


def openai_v2() -> None:
    import openai

    client = openai.OpenAI(
        base_url=os.environ["DRIVE_BASE_URL"] + "/v2",
        api_key=os.environ["DRIVE_API_KEY"],
        max_retries=0,
    )
    stream = client.chat.completions.create(
        model="ernie-4.0-8k",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, n, last = "", 0, None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
        n += 1
        last = chunk.model_dump()
    _emit(text, n, last)


def _openai() -> Any:
    import openai

    return openai.OpenAI(
        base_url=os.environ["DRIVE_BASE_URL"] + os.environ.get("DRIVE_PREFIX", "/v2"),
        api_key=os.environ["DRIVE_API_KEY"],
        max_retries=0,
    )


def openai_self_hosted() -> None:
    """Stream from a self-hosted ERNIE 4.5 (the emulator as vLLM or FastDeploy) with thinking
    switched on through ``chat_template_kwargs``, reading whichever reasoning field the server
    sends; then ask for a model it does not serve."""
    import openai

    client = _openai()
    stream = client.chat.completions.create(
        model=os.environ["DRIVE_MODEL"],
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )
    reasoning, text, fields, last = "", "", set(), None
    for chunk in stream:
        for choice in chunk.choices:
            for name in ("reasoning", "reasoning_content"):
                piece = getattr(choice.delta, name, None)
                if piece:
                    reasoning += piece
                    fields.add(name)
            text += choice.delta.content or ""
        last = chunk.model_dump()
    error: dict[str, Any] = {}
    try:
        client.chat.completions.create(
            model="not-served", messages=[{"role": "user", "content": PROMPT}]
        )
    except openai.APIStatusError as exc:
        error = {"class": type(exc).__name__, "status": exc.status_code, "message": exc.message}
    result = {
        "reasoning": reasoning,
        "text": text,
        "fields": sorted(fields),
        "usage": (last or {}).get("usage"),
        "error": error,
    }
    print(json.dumps(result, ensure_ascii=False))


def openai_reasoning() -> None:
    """Stream a reasoning model's thinking (``delta.reasoning_content``, an extra field the
    SDK keeps) and its answer, as PaddlePaddle's own X1 demo reads them."""
    stream = _openai().chat.completions.create(
        model=os.environ.get("DRIVE_MODEL", "ernie-x1.1"),
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        max_completion_tokens=1024,
    )
    reasoning, text, order, last = "", "", [], None
    for chunk in stream:
        for choice in chunk.choices:
            thought = getattr(choice.delta, "reasoning_content", None)
            if thought:
                reasoning += thought
                order.append("r")
            if choice.delta.content:
                text += choice.delta.content
                order.append("c")
        last = chunk.model_dump()
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    print(
        json.dumps(
            {"reasoning": reasoning, "text": text, "switches": switches, "last": last},
            ensure_ascii=False,
        )
    )


_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "获取指定城市的实时天气",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def openai_tools() -> None:
    """A two-step tool call: the streamed call (deltas merged by index, as OpenAI users do),
    the tool's result sent back, then the final answer."""
    client = _openai()
    model = os.environ.get("DRIVE_MODEL", "ernie-5.1")
    messages: list[Any] = [{"role": "user", "content": PROMPT}]
    stream = client.chat.completions.create(
        model=model, messages=messages, tools=[_WEATHER], stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = call["id"] or (delta.id or "")
                if delta.function is not None:
                    call["name"] = call["name"] or (delta.function.name or "")
                    call["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    streamed = [calls[i] for i in sorted(calls)]
    messages.append(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in streamed
            ],
        }
    )
    for call in streamed:
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": '{"temp": 21}'})
    final = client.chat.completions.create(model=model, messages=messages, tools=[_WEATHER])
    again = client.chat.completions.create(model=model, messages=messages[:1], tools=[_WEATHER])
    print(
        json.dumps(
            {
                "streamed": streamed,
                "stream_finish": finish,
                "whole_calls": [c.model_dump() for c in again.choices[0].message.tool_calls or []],
                "whole_finish": again.choices[0].finish_reason,
                "final": final.choices[0].message.content,
                "final_finish": final.choices[0].finish_reason,
            },
            ensure_ascii=False,
        )
    )


def openai_search() -> None:
    """Web search: ``web_search`` through ``extra_body``, the top-level ``search_results``
    read from the chunk's extra fields, the citation markers in the text."""
    stream = _openai().chat.completions.create(
        model=os.environ.get("DRIVE_MODEL", "ernie-5.1"),
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        extra_body={
            "web_search": {"enable": True, "enable_citation": True, "enable_trace": True},
            "enable_thinking": False,
        },
    )
    text, results = "", []
    for chunk in stream:
        extra = chunk.model_extra or {}
        if extra.get("search_results"):
            results.extend(extra["search_results"])
        for choice in chunk.choices:
            text += choice.delta.content or ""
    whole = _openai().chat.completions.create(
        model=os.environ.get("DRIVE_MODEL", "ernie-5.1"),
        messages=[{"role": "user", "content": PROMPT}],
        extra_body={"web_search": {"enable": True, "enable_trace": True}},
    )
    print(
        json.dumps(
            {
                "text": text,
                "results": results,
                "whole_results": (whole.model_extra or {}).get("search_results"),
            },
            ensure_ascii=False,
        )
    )


def openai_image() -> None:
    """An image question: a text part and a data-URL image part, to a vision model."""
    response = _openai().chat.completions.create(
        model=os.environ["DRIVE_MODEL"],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": PROMPT},
                    {"type": "image_url", "image_url": {"url": os.environ["DRIVE_IMAGE"]}},
                ],
            }
        ],
    )
    print(json.dumps({"text": response.choices[0].message.content}, ensure_ascii=False))


def openai_error() -> None:
    """A request the emulator refuses: the status and the error body as the SDK reports them."""
    import openai

    try:
        _openai().chat.completions.create(
            model=os.environ["DRIVE_MODEL"],
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
        )
    except openai.APIStatusError as exc:
        print(
            json.dumps(
                {"class": type(exc).__name__, "status": exc.status_code, "body": exc.body},
                ensure_ascii=False,
            )
        )


SCENARIOS = {
    f.__name__: f
    for f in (
        qianfan_v1,
        qianfan_v1_async,
        qianfan_v2,
        erniebot_v1,
        openai_v2,
        openai_reasoning,
        openai_tools,
        openai_search,
        openai_image,
        openai_error,
        openai_self_hosted,
    )
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
