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


def _refused(client: openai.OpenAI, question: str, **kwargs: Any) -> dict[str, Any]:
    messages: Any = [{"role": "user", "content": question}]
    try:
        client.chat.completions.create(model="ernie-lite-8k", messages=messages, **kwargs)
    except openai.APIStatusError as exc:
        return {
            "class": type(exc).__name__,
            "status": exc.status_code,
            "code": exc.code,
            "retry_after": exc.response.headers.get("retry-after"),
        }
    return {"class": None}


def refusals() -> dict[str, Any]:
    """ERNIE refusals through the SDK with its default retries (2): which it retries is
    counted upstream by the test."""
    client = openai.OpenAI()  # max_retries=2, the default
    return {
        "invalid": _refused(client, "坏 [[wenxin:fault error=336003;times=1]]"),
        "too_long": _refused(client, "长 [[wenxin:fault error=336007;times=1]]", stream=True),
        "model": _refused(client, "无 [[wenxin:fault error=336005;times=1]]"),
        "credentials": _refused(client, "钥 [[wenxin:fault error=13;times=1]]"),
        "quota": _refused(client, "额 [[wenxin:fault error=17;times=1]]", stream=True),
    }


def rate_limited() -> dict[str, Any]:
    """One ERNIE rate limit, then a second request: both 429 with Retry-After (no retries:
    the Retry-After is ERNIE's minute)."""
    client = openai.OpenAI(max_retries=0)
    return {
        "first": _refused(client, "快 [[wenxin:fault error=336501;times=1]]", stream=True),
        "second": _refused(client, "再问"),
    }


SCENARIOS = {
    "stream_sync": stream_sync,
    "stream_async": stream_async,
    "whole": whole,
    "error": error,
    "refusals": refusals,
    "rate_limited": rate_limited,
}

if __name__ == "__main__":
    everyday = ("stream_sync", "stream_async", "whole", "error")
    names = list(everyday) if sys.argv[1] == "all" else sys.argv[1:]
    print(json.dumps({name: SCENARIOS[name]() for name in names}, ensure_ascii=False))
