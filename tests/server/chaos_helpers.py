"""Helpers of the chaos suite (``test_chaos.py``): one exchange per route, each reduced to a
:class:`Seen` — what the client saw, in the same terms on every route — and the official
``openai`` SDK kept running in ``.venv-peers`` as a worker that answers one request a line.

The drives never raise for what the server or the SDK answered: a refusal, an in-band error
and a cut are all outcomes to compare. They raise only for a broken test set-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from wenxin_stream import (
    AsyncClient,
    Client,
    ReasoningDelta,
    SSEDecoder,
    TextDelta,
    Timeout,
    WenxinError,
)

SDK_TIMEOUT = Timeout(connect=5.0, first_token=1.0, idle=1.0)
"""The SDK's limits in the suite: a stall longer than a second is a timeout."""

PEERS_PYTHON = Path(__file__).resolve().parents[2] / ".venv-peers" / "bin" / "python"
WORKER = Path(__file__).with_name("chaos_openai_worker.py")


@dataclass
class Seen:
    """What one client saw of one exchange.

    ``end`` is the end reason the client was told (native routes: the ``end`` event or frame;
    the SDK: the stream's ``end_reason``); ``status``/``code`` the failure it was told (HTTP
    status before output, else the in-band error's); ``stored`` the end reason the server
    kept for it (``GET /api/conversations/{id}``)."""

    text: str = ""
    reasoning: str = ""
    end: str | None = None
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None
    error_class: str | None = None
    partial_text: str | None = None
    finishes: list[str] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    stored: str | None = None
    stored_content: str | None = None
    http_status: int | None = None


# -- the SDK, both twins, straight at the emulator --------------------------------------------


def sdk_client_kwargs(api: str, base_url: str, credential: str) -> dict[str, Any]:
    """Constructor arguments of an SDK client of ``api`` at the emulator, with a credential of
    its own (the emulator counts ``times=N`` per credential)."""
    if api == "v1":
        auth: dict[str, Any] = {"api_key": credential, "secret_key": "sk", "base_url": base_url}
    else:
        auth = {"bearer_token": f"bce-v3/ALTAK-{credential}/x", "v2_base_url": base_url}
    return {"api": api, "retry": 0, "timeout": SDK_TIMEOUT, "emulator": False, **auth}


def _sdk_seen(
    events: list[Any], error: WenxinError | None, end_reason: object, finish: object
) -> Seen:
    seen = Seen(
        text="".join(e.text for e in events if isinstance(e, TextDelta)),
        reasoning="".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        end=str(end_reason) if end_reason is not None else None,
    )
    if finish is not None:
        seen.finishes.append(str(finish))
    if error is not None:
        seen.error_class = type(error).__name__
        seen.partial_text = getattr(error, "partial_text", None)
    return seen


def sdk_sync(api: str, base_url: str, credential: str, model: str, content: str) -> Seen:
    events: list[Any] = []
    error = None
    with Client(**sdk_client_kwargs(api, base_url, credential)) as client:
        stream = client.chat.stream(messages=content, model=model)
        try:
            with stream:
                events.extend(stream)
        except WenxinError as exc:
            error = exc
        finish = stream.get_final_message().finish_reason
    return _sdk_seen(events, error, stream.end_reason, finish)


def sdk_async(api: str, base_url: str, credential: str, model: str, content: str) -> Seen:
    async def run() -> Seen:
        events: list[Any] = []
        error = None
        async with AsyncClient(**sdk_client_kwargs(api, base_url, credential)) as client:
            stream = client.chat.stream(messages=content, model=model)
            try:
                async with stream:
                    async for event in stream:
                        events.append(event)
            except WenxinError as exc:
                error = exc
            finish = (await stream.get_final_message()).finish_reason
        return _sdk_seen(events, error, stream.end_reason, finish)

    return asyncio.run(run())


# -- the server's routes ----------------------------------------------------------------------


def _stored(client: httpx.Client, conversation_id: str, seen: Seen) -> None:
    """Read back the stored answer of ``conversation_id`` into ``seen``."""
    r = client.get(f"/api/conversations/{conversation_id}")
    assert r.status_code == 200, r.text
    messages = r.json()["messages"]
    if messages and messages[-1]["role"] == "assistant":
        seen.stored = messages[-1]["end_reason"]
        seen.stored_content = messages[-1]["content"]


def _error_into(seen: Seen, error: dict[str, Any]) -> None:
    seen.status = error.get("status", seen.status)
    seen.code = error.get("code")
    seen.retry_after = error.get("retry_after")


def native_sse(url: str, model: str, content: str) -> Seen:
    """Ask on ``POST /api/conversations/{id}/messages`` and read the stream as a stream."""
    seen = Seen()
    with httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/api/conversations", json={"model": model})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        body = {"content": content, "model": model}
        with client.stream("POST", f"/api/conversations/{cid}/messages", json=body) as response:
            seen.http_status = response.status_code
            if response.status_code != 200:
                response.read()
                seen.status = response.status_code
                seen.code = response.json()["error"]["code"]
                seen.retry_after = _retry_after(response)
            else:
                decoder = SSEDecoder()
                for chunk in response.iter_raw():
                    for event in decoder.feed(chunk):
                        seen.frames.append(event.event)
                        data = json.loads(event.data)
                        if event.event == "delta":
                            seen.text += data["text"]
                        elif event.event == "end":
                            seen.end = data["end_reason"]
                            if data.get("finish_reason") is not None:
                                seen.finishes.append(data["finish_reason"])
                            if "error" in data:
                                _error_into(seen, data["error"])
                decoder.close()
        _stored(client, cid, seen)
    return seen


def websocket(url: str, model: str, content: str) -> Seen:
    """Ask on ``/api/ws`` and read frames up to the ``end`` frame (or a refusal)."""
    seen = Seen()
    cid = None
    try:
        with connect(url.replace("http://", "ws://") + "/api/ws", open_timeout=10) as ws:
            ws.send(json.dumps({"type": "ask", "id": "c", "content": content, "model": model}))
            while True:
                frame = json.loads(ws.recv(timeout=30))
                seen.frames.append(frame["type"])
                if frame["type"] == "start":
                    cid = frame["conversation_id"]
                elif frame["type"] == "delta":
                    seen.text += frame["text"]
                elif frame["type"] == "error":
                    _error_into(seen, frame)
                    if cid is None:
                        break  # refused before the answer started: no end frame follows
                elif frame["type"] == "end":
                    seen.end = frame["end_reason"]
                    if frame.get("finish_reason") is not None:
                        seen.finishes.append(frame["finish_reason"])
                    break
    except ConnectionClosed as exc:
        seen.frames.append(f"closed {exc.rcvd.code if exc.rcvd else None}")
    if cid is not None:
        with httpx.Client(base_url=url, timeout=10) as client:
            _stored(client, cid, seen)
    return seen


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    return float(value) if value is not None else None


class OpenAIWorker:
    """The official ``openai`` SDK in its own interpreter, asked one request at a time."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "COV_"))}
        self.proc = subprocess.Popen(
            [str(PEERS_PYTHON), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )

    def ask(self, url: str, model: str, content: str, *, stream: bool = True) -> Seen:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        request = {"base_url": url + "/v1", "model": model, "content": content, "stream": stream}
        self.proc.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the openai worker exited ({self.proc.poll()})"
        out = json.loads(line)
        seen = Seen(text=out["text"], reasoning=out["reasoning"], finishes=out["finishes"])
        if out["error"] is not None:
            error = out["error"]
            seen.error_class = error["class"]
            seen.status = error["status"]
            seen.code = error["code"]
            if error["retry_after"] is not None:
                seen.retry_after = float(error["retry_after"])
        return seen

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)
