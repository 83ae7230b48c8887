"""Drive the official ``openai`` SDK against ``wenxin serve``; run by test_serve_openai.py.

Runs inside ``.venv-peers``. Argument: the scenario; environment: ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY`` exactly as a user would set them. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import openai

MESSAGES: Any = [
    {"role": "system", "content": "你是导游"},
    {"role": "user", "content": "介绍一下长城"},
]


def stream_sync() -> dict[str, Any]:
    client = openai.OpenAI(max_retries=0)
    stream = client.chat.completions.create(
        model="ernie-4.0-8k",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.5,
        max_tokens=500,
    )
    text, roles, finish, usage, chunks = "", [], [], None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
            assert chunk.choices == []
        for choice in chunk.choices:
            roles.append(choice.delta.role)
            text += choice.delta.content or ""
            finish.append(choice.finish_reason)
    return {
        "text": text,
        "first_role": roles[0],
        "finish": [f for f in finish if f],
        "usage": usage,
        "chunks": chunks,
    }


def stream_async() -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with openai.AsyncOpenAI(max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="ernie-lite-8k", messages=MESSAGES, stream=True
            )
            text = ""
            async for chunk in stream:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
            return {"text": text}

    return asyncio.run(run())


def whole() -> dict[str, Any]:
    client = openai.OpenAI(max_retries=0)
    completion = client.chat.completions.create(model="ernie-lite-8k", messages=MESSAGES)
    models = [m.id for m in client.models.list()]
    return {
        "text": completion.choices[0].message.content,
        "finish": completion.choices[0].finish_reason,
        "usage": completion.usage.model_dump() if completion.usage else None,
        "object": completion.object,
        "models": len(models),
    }


def error() -> dict[str, Any]:
    client = openai.OpenAI(max_retries=0)
    out: dict[str, Any] = {}
    try:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    except openai.NotFoundError as exc:
        out["not_found"] = exc.code
    bad = [{"role": "user", "content": "坏 [[wenxin:fault error=336003]]"}]
    try:
        client.chat.completions.create(model="ernie-lite-8k", messages=bad, stream=True)
    except openai.APIStatusError as exc:
        out["upstream_status"] = exc.status_code
    late = [{"role": "user", "content": "晚 [[wenxin:fault error=336003;error_after=3]]"}]
    try:
        for _ in client.chat.completions.create(model="ernie-lite-8k", messages=late, stream=True):
            pass
    except openai.APIError as exc:
        out["mid_stream"] = type(exc).__name__
    return out


SCENARIOS = {
    "stream_sync": stream_sync,
    "stream_async": stream_async,
    "whole": whole,
    "error": error,
}

if __name__ == "__main__":
    names = list(SCENARIOS) if sys.argv[1] == "all" else sys.argv[1:]
    print(json.dumps({name: SCENARIOS[name]() for name in names}, ensure_ascii=False))
