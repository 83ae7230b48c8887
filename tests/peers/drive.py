"""Drive one official SDK against the emulator; run by tests/peers/test_peers.py.

This script runs inside ``.venv-peers`` (never the package's own environment). It takes the
scenario name as its only argument, reads its configuration from the environment exactly as a
user would set it (base URLs, keys), streams one answer and prints one JSON line to stdout:
``{"text": ..., "chunks": N, "last": {...last raw chunk...}}``.
"""

from __future__ import annotations

import asyncio
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


SCENARIOS = {
    f.__name__: f for f in (qianfan_v1, qianfan_v1_async, qianfan_v2, erniebot_v1, openai_v2)
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
