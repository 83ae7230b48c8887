"""Today's ERNIE through ``wenxin serve``'s OpenAI route: thinking, tools, web search, images,
the catalogue's models, and the fields that are refused — the official openai SDK (from
``.venv-peers``) and raw HTTP, over the embedded emulator."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import Running, sse_events

from servers import serving
from wenxin_stream.emulator import EmulatorConfig, ServerHandle
from wenxin_stream.emulator import create_app as create_emulator

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
DRIVER = Path(__file__).with_name("openai_current_drive.py")
WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "获取城市的当前天气",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
ASK = [{"role": "user", "content": "北京今天的天气怎么样?"}]
SEARCH = {"enable": True, "enable_trace": True, "enable_citation": True}


@pytest.fixture(scope="module")
def drive(shared: Running) -> dict[str, Any]:
    """Every scenario of the driver, run once by the official openai SDK."""
    if not PEERS_PYTHON.exists():  # pragma: no cover - depends on the machine
        pytest.skip("run scripts/install to create .venv-peers")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "COV_"))}
    env |= {"OPENAI_BASE_URL": shared.url + "/v1", "OPENAI_API_KEY": "anything-in-dev-mode"}
    proc = subprocess.run(
        [str(PEERS_PYTHON), str(DRIVER), "all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.peers
def test_openai_sdk_streams_x1_reasoning_before_the_answer(drive: dict[str, Any]) -> None:
    out = drive["reasoning_stream"]
    assert out["reasoning"].startswith("【模拟思考】")
    assert out["text"]
    assert out["reasoning"] not in out["text"]
    assert out["reasoning_before_text"]
    assert out["finish"] == ["stop"]
    assert out["usage"]["completion_tokens"] > 0
    whole = drive["reasoning_whole"]
    assert (whole["reasoning"], whole["text"]) == (out["reasoning"], out["text"])
    assert whole["finish"] == "stop"


@pytest.mark.peers
@pytest.mark.parametrize("scenario", ["tools_stream", "tools_whole"])
def test_openai_sdk_completes_a_two_step_tool_call(drive: dict[str, Any], scenario: str) -> None:
    out = drive[scenario]
    assert out["finish"] == "tool_calls"
    [call] = out["calls"]
    assert call["name"] == "get_current_weather"
    assert json.loads(call["arguments"]) == {"city": "北京"}
    assert len(call["id"]) == 32
    assert "25℃" in out["final"]
    assert out["final_finish"] == "stop"


@pytest.mark.peers
def test_openai_sdk_gets_search_results_and_citations(drive: dict[str, Any]) -> None:
    out = drive["search"]
    for mode in ("stream", "whole"):
        results = out[f"{mode}_results"]
        assert [r["index"] for r in results] == [1, 2, 3]
        assert all(r["url"].startswith("https://example.com/") for r in results)
        assert "^[1]^" in out[f"{mode}_text"]
    assert out["stream_text"] == out["whole_text"]


@pytest.mark.peers
def test_openai_sdk_gets_an_image_answer_from_a_vision_model(drive: dict[str, Any]) -> None:
    out = drive["image"]
    assert "PNG" in out["stream_text"]
    assert "16×8" in out["stream_text"]
    assert out["whole_text"] == out["stream_text"]


@pytest.mark.peers
def test_openai_sdk_sees_refusals_with_the_field_named(drive: dict[str, Any]) -> None:
    out = drive["refused"]
    for name in ("retired", "retired_stream", "retired_model"):
        assert (out[name]["status"], out[name]["code"]) == (403, "model_offline"), name
        assert out[name]["class"] == "PermissionDeniedError"
    expected = {
        "tools_unsupported": "tools",
        "thinking_off": "enable_thinking",
        "image_on_text_model": "messages[0].content[0]",
        "unknown_field": "foo",
        "n": "n",
    }
    for name, param in expected.items():
        assert (out[name]["status"], out[name]["param"]) == (400, param), name
    assert out["unknown_field"]["code"] == "unknown_field"


@pytest.mark.peers
def test_openai_sdk_lists_the_catalogue(drive: dict[str, Any]) -> None:
    out = drive["models"]
    listed = out["listed"]
    assert "ernie-5.0" not in listed  # retired on 2026-10-29
    x1 = listed["ernie-x1.1"]
    assert x1["context_window"] == 65536
    assert x1["capabilities"] == ["reasoning", "tools", "search"]
    assert listed["ernie-x1.1-preview"]["alias_of"] == "ernie-x1.1"
    assert out["alias"]["alias_of"] == "ernie-x1-turbo-32k"


def _post(srv: Running, **body: Any) -> httpx.Response:
    with srv.client() as c:
        return c.post("/v1/chat/completions", json=body)


def _chunks(r: httpx.Response) -> list[dict[str, Any]]:
    events = sse_events(r.content)
    assert events[-1].data == "[DONE]"
    return [json.loads(e.data) for e in events[:-1]]


def test_tool_call_deltas_are_openai_shaped(shared: Running) -> None:
    r = _post(shared, model="ernie-5.1", messages=ASK, tools=WEATHER, stream=True)
    assert r.status_code == 200
    deltas = [c["choices"][0]["delta"] for c in _chunks(r) if c["choices"]]
    parts = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    first, rest = parts
    assert (first["index"], first["type"]) == (0, "function")
    assert first["function"] == {"name": "get_current_weather", "arguments": ""}
    assert rest == {"index": 0, "function": {"arguments": '{"city": "北京"}'}}
    finish = [c["choices"][0]["finish_reason"] for c in _chunks(r) if c["choices"]]
    assert finish[-1] == "tool_calls"


def test_search_results_come_before_the_text_citing_them(shared: Running) -> None:
    r = _post(shared, model="ernie-5.1", messages=ASK, web_search=SEARCH, stream=True)
    chunks = _chunks(r)
    first_text = next(i for i, c in enumerate(chunks) if c["choices"][0]["delta"].get("content"))
    [with_results] = [i for i, c in enumerate(chunks) if "search_results" in c]
    assert with_results < first_text
    assert chunks[with_results]["choices"][0]["delta"] == {}


def test_web_search_true_is_baidus_enable(shared: Running) -> None:
    r = _post(shared, model="ernie-5.1", messages=ASK, web_search=True)
    assert r.status_code == 200, r.text
    r = _post(shared, model="ernie-speed-8k", messages=ASK, web_search=True)
    assert (r.status_code, r.json()["error"]["param"]) == (400, "web_search")


def test_answers_sent_back_lose_their_reasoning_and_nulls(shared: Running) -> None:
    answer = _post(shared, model="ernie-x1.1", messages=ASK).json()["choices"][0]["message"]
    assert answer["reasoning_content"]
    history = [*ASK, answer, {"role": "user", "content": "那明天呢?"}]
    r = _post(shared, model="ernie-x1.1", messages=history, n=1, store=False, logit_bias={})
    assert r.status_code == 200, r.text
    r = _post(shared, model="ernie-x1.1", messages=[{**ASK[0], "weight": 1}])
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_messages")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # not streaming
        ({"stream": True, "stream_options": {"include_usage": True, "x": 1}}, "stream_options"),
        ({"store": True}, "store"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"temperature": float("inf")}, "temperature"),
        ({"max_completion_tokens": 10**6}, "max_tokens"),  # over the model's output limit
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"seed": -1}, "seed"),
    ],
)
def test_fields_the_model_cannot_honour_are_400(
    shared: Running, body: dict[str, Any], param: str
) -> None:
    with shared.client() as c:
        content = json.dumps({"model": "ernie-5.1", "messages": ASK, **body})
        r = c.post(
            "/v1/chat/completions",
            content=content,
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@pytest.fixture(scope="module")
def detailed_emu() -> Iterator[ServerHandle]:
    """An emulator that reports reasoning tokens."""
    config = EmulatorConfig(ttft=0.0, interval=0.0, v2_interval=0.0, reasoning_tokens_detail=True)
    with serving(create_emulator(config)) as handle:
        yield handle


def test_usage_carries_reasoning_tokens(make_server: Any, detailed_emu: ServerHandle) -> None:
    srv = make_server(upstream=detailed_emu.base_url)
    r = _post(srv, model="ernie-x1.1", messages=ASK)
    usage = r.json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] > 0
    r = _post(
        srv, model="ernie-x1.1", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    [last] = [c for c in _chunks(r) if c.get("usage")]
    assert last["usage"]["completion_tokens_details"] == usage["completion_tokens_details"]


def test_models_routes_answer_from_the_catalogue(shared: Running) -> None:
    with shared.client() as c:
        assert c.get("/v1/models/ERNIE-5.1").json()["id"] == "ernie-5.1"
        r = c.get("/v1/models/no-such-model")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "model_not_found")
        native = c.get("/api/models").json()["models"]
    by_id = {m["id"]: m for m in native}
    assert set(by_id["ernie-5.1"]) == {
        "id", "name", "family", "group", "context_window", "max_output_tokens",
        "capabilities", "reasoning", "default", "retired",
    }  # fmt: skip
    # The page's thinking switch: hybrid models take enable_thinking, "always" ones ignore it.
    assert by_id["ernie-x1.1"]["reasoning"] == "always"
    assert by_id["ernie-lite-8k"]["reasoning"] is None
    assert {m["reasoning"] for m in native} == {"always", "hybrid", None}
    assert by_id["ernie-5.0"]["retired"] is True
    assert by_id["ernie-x1.1"]["group"] == "current"
    assert by_id["ernie-4.5-vl-28b-a3b"]["capabilities"] == ["reasoning", "vision"]
    assert [m["id"] for m in native if m["default"]] == ["ernie-lite-8k"]


def test_an_unknown_model_is_what_the_upstream_says(shared: Running) -> None:
    """The server passes an id the catalogue does not know (as the SDK does); the emulator,
    like Baidu, answers 401 invalid_model, which the error table answers 404."""
    r = _post(shared, model="deepseek-v3", messages=ASK)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "model_not_found")
    assert r.json()["error"]["upstream_code"] == "invalid_model"
