"""``/v1/chat/completions``: the official openai SDK (from .venv-peers) and raw HTTP."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import Running, sse_events

from wenxin_stream.emulator import ServerHandle

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
DRIVER = Path(__file__).with_name("openai_drive.py")
QUESTION = [{"role": "system", "content": "你是导游"}, {"role": "user", "content": "介绍一下长城"}]


def _direct(emu: ServerHandle, messages: list[dict[str, str]]) -> str:
    with httpx.Client(base_url=emu.base_url, timeout=10) as c:
        r = c.post(
            "/v2/chat/completions",
            headers={"Authorization": "Bearer bce-v3/ALTAK-d/x"},
            json={"model": "ernie-lite-8k", "messages": messages},
        )
    text: str = r.json()["choices"][0]["message"]["content"]
    return text


@pytest.mark.peers
def test_the_official_openai_sdk_works_unchanged(shared: Running, emu: ServerHandle) -> None:
    if not PEERS_PYTHON.exists():  # pragma: no cover - depends on the machine
        pytest.skip("run scripts/install to create .venv-peers")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "COV_"))}
    env |= {"OPENAI_BASE_URL": shared.url + "/v1", "OPENAI_API_KEY": "anything-in-dev-mode"}
    proc = subprocess.run(
        [str(PEERS_PYTHON), str(DRIVER), "all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = _direct(emu, QUESTION)
    sync = out["stream_sync"]
    assert sync["text"] == expected
    assert sync["first_role"] == "assistant"
    assert sync["finish"] == ["stop"]
    assert sync["usage"]["total_tokens"] > 0
    assert out["stream_async"]["text"] == expected
    whole = out["whole"]
    assert whole["text"] == expected
    assert whole["finish"] == "stop"
    assert whole["object"] == "chat.completion"
    assert whole["usage"]["completion_tokens"] > 0
    assert whole["models"] > 10
    assert out["error"] == {
        "not_found": "model_not_found",
        "upstream_status": 400,  # ERNIE's invalid_argument: the client's mistake
        "mid_stream": "APIError",
    }


def _completion(srv: Running, **body: Any) -> httpx.Response:
    with srv.client() as c:
        return c.post(
            "/v1/chat/completions", json={"model": "ernie-lite-8k", "messages": QUESTION, **body}
        )


def test_stream_chunks_like_openai(shared: Running, emu: ServerHandle) -> None:
    r = _completion(shared, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.content)
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in chunks if c["choices"]]
    # the finish comes once the answer has ended, in a chunk of its own (as OpenAI's does)
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    assert content[-1]["choices"][0]["delta"] == {}
    assert all(c["choices"][0]["finish_reason"] is None for c in content[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in content)
    assert text == _direct(emu, QUESTION)


def test_stream_without_usage(shared: Running) -> None:
    events = sse_events(_completion(shared, stream=True).content)
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert all(c["choices"] for c in chunks)
    assert "usage" not in chunks[-1]


def test_upstream_errors_map_to_their_status_and_mid_stream_error_events(shared: Running) -> None:
    bad = [{"role": "user", "content": "坏 [[wenxin:fault error=336003]]"}]
    for stream in (False, True):
        r = _completion(shared, messages=bad, stream=stream)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == "invalid_argument"
        assert error["upstream_code"] == "invalid_argument"
        assert "Traceback" not in r.text
    late = [{"role": "user", "content": "晚 [[wenxin:fault error=336003;error_after=3]]"}]
    events = sse_events(_completion(shared, messages=late, stream=True).content)
    assert events[-1].data == "[DONE]"
    assert json.loads(events[-2].data)["error"]["code"] == "invalid_argument"
    assert not any('"finish_reason":"' in e.data for e in events)  # a cut never finishes


def test_upstream_timeout_is_504(make_server: Any) -> None:
    srv = make_server(upstream_first_token_timeout=0.3)
    slow = [{"role": "user", "content": "慢 [[wenxin:fault ttft=3]]"}]
    r = _completion(srv, messages=slow)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"


def test_models(shared: Running) -> None:
    with shared.client() as c:
        body = c.get("/v1/models").json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    legacy = by_id["ernie-4.0-8k"]
    assert {k: legacy[k] for k in ("object", "created", "owned_by")} == {
        "object": "model",
        "created": 0,
        "owned_by": "baidu",
    }
    assert legacy["context_window"] == 8192


def test_v1_upstream(make_server: Any, emu: ServerHandle) -> None:
    from wenxin_stream import AsyncClient

    client = AsyncClient(
        api_key="serve-ak", secret_key="serve-sk", base_url=emu.base_url, api="v1", retry=0
    )
    srv = make_server(client=client, upstream_api="v1")
    paced = [{"role": "user", "content": "长城 [[wenxin:fault interval=0.01;chunks=3]]"}]
    events = sse_events(_completion(srv, messages=paced, stream=True, user="u-1").content)
    chunks = [json.loads(e.data) for e in events[:-1]]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    # v1's finish comes in an empty chunk after the content: a chunk of its own
    assert finish[-1] == "stop"
    assert chunks[-1]["choices"][0]["delta"] == {}
    with srv.client() as c:
        assert "ERNIE-4.0-8K" in c.get("/api/info").json()["models"]
        cid = c.post("/api/conversations", json={"system": "你是导游"}).json()["id"]
        for question in ("第一个问题", "第二个 [[wenxin:fault error=336003]]", "第三个"):
            r = c.post(f"/api/conversations/{cid}/messages", json={"content": question})
            assert r.status_code == 200
        answers = c.get(f"/api/conversations/{cid}").json()["messages"][1::2]
    # the failed turn is left out, so the third request was valid for v1's alternation rule
    assert [a["end_reason"] for a in answers] == ["completed", "upstream_error", "completed"]
