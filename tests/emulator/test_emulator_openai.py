"""The emulator's OpenAI-compatible routes: ``/v1/chat/completions`` and ``/v1/models`` as vLLM
and as FastDeploy serve ERNIE 4.5 (``shared/ERNIE-CURRENT.md`` §7), byte for byte where the
flavours differ: reasoning field, extra fields, usage, error shapes, the key, pacing, faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from emu_helpers import events, json_events, timed_events

from servers import FAST, emulator, openai_emulator
from wenxin_stream import CONTINUE_PROMPT
from wenxin_stream.emulator import EmulatorConfig
from wenxin_stream.emulator._openai_wire import DEFAULT_MODELS

CHAT = "/v1/chat/completions"
KEY = "emu-openai-key-123456"
AUTH = {"Authorization": f"Bearer {KEY}"}


def chat_body(prompt: str = "介绍一下北京", *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], "stream": stream, **extra}


@pytest.fixture(scope="module")
def vllm() -> Iterator[httpx.Client]:
    with openai_emulator("vllm") as handle, httpx.Client(base_url=handle.base_url) as client:
        yield client


@pytest.fixture(scope="module")
def fastdeploy() -> Iterator[httpx.Client]:
    with (
        openai_emulator("fastdeploy", openai_api_key=KEY) as handle,
        httpx.Client(base_url=handle.base_url, headers=AUTH) as client,
    ):
        yield client


# --- vLLM ------------------------------------------------------------------------------------


def test_vllm_stream_shape(vllm: httpx.Client) -> None:
    body = chat_body(
        chat_template_kwargs={"enable_thinking": True}, stream_options={"include_usage": True}
    )
    response = vllm.post(CHAT, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    data = events(response.content)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["id"].startswith("chatcmpl-") for c in chunks)
    assert {c["model"] for c in chunks} == {DEFAULT_MODELS["vllm"]}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "reasoning" in deltas[0]
    assert not any("reasoning_content" in d for d in deltas)  # current vLLM's name only
    assert any("content" in d for d in deltas)
    for chunk in chunks:
        for choice in chunk["choices"]:
            assert choice["logprobs"] is None
            assert not {"flag", "ban_round", "arrival_time"} & set(choice)
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1
    assert finals[0]["choices"][0]["finish_reason"] == "stop"
    assert finals[0]["choices"][0]["stop_reason"] is None
    usage = chunks[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "completion_tokens_details" not in usage  # the ernie45 parser reports none


def test_vllm_usage_only_when_asked(vllm: httpx.Client) -> None:
    chunks = json_events(vllm.post(CHAT, json=chat_body()).content)
    assert all("usage" not in c for c in chunks)
    assert all("reasoning" not in c["choices"][0]["delta"] for c in chunks)  # thinking off


def test_vllm_whole_answer(vllm: httpx.Client) -> None:
    body = chat_body(stream=False, chat_template_kwargs={"enable_thinking": True})
    answer = vllm.post(CHAT, json=body).json()
    assert answer["object"] == "chat.completion"
    message = answer["choices"][0]["message"]
    assert message["reasoning"]
    assert message["content"]
    assert "reasoning_content" not in message
    assert answer["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize(
    ("body", "status", "type_", "phrase"),
    [
        (chat_body(model="other/model"), 404, "NotFoundError", "does not exist"),
        (chat_body(max_tokens=10**6), 400, "BadRequestError", "maximum context length is"),
        (chat_body(stream=False, stream_options={"include_usage": True}), 400, "BadRequestError",
         "stream=True"),
        ({"messages": []}, 400, "BadRequestError", ""),
        (chat_body("hi [[wenxin:fault error=336501]]"), 429, "RateLimitError", ""),
        (chat_body("hi [[wenxin:fault error=2]]"), 503, "ServiceUnavailableError", ""),
        (chat_body("hi [[wenxin:fault error=336100]]"), 500, "InternalServerError", "try again"),
    ],
)  # fmt: skip
def test_vllm_error_shape(
    vllm: httpx.Client, body: dict[str, Any], status: int, type_: str, phrase: str
) -> None:
    response = vllm.post(CHAT, json=body)
    assert response.status_code == status
    error = response.json()
    assert set(error) == {"object", "message", "type", "param", "code"}
    assert (error["object"], error["type"], error["code"]) == ("error", type_, status)
    assert phrase in error["message"]


def test_vllm_error_inside_a_stream_then_done(vllm: httpx.Client) -> None:
    response = vllm.post(CHAT, json=chat_body("hi [[wenxin:fault error=336100;error_after=2]]"))
    assert response.status_code == 200
    data = events(response.content)
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])
    assert error == {
        "error": {
            "object": "error",
            "message": error["error"]["message"],
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }
    assert len(data) == 2 + 2


def test_vllm_models(vllm: httpx.Client) -> None:
    listing = vllm.get("/v1/models").json()
    assert listing["object"] == "list"
    (model,) = listing["data"]
    assert (model["id"], model["owned_by"], model["max_model_len"]) == (
        DEFAULT_MODELS["vllm"],
        "vllm",
        32768,
    )


# --- FastDeploy ------------------------------------------------------------------------------


def test_fastdeploy_stream_shape(fastdeploy: httpx.Client) -> None:
    body = chat_body(model="default", chat_template_kwargs={"enable_thinking": True})
    body["stream_options"] = {}  # FastDeploy: include_usage defaults to true once present
    chunks = json_events(fastdeploy.post(CHAT, json=body).content)
    first = chunks[0]["choices"][0]
    assert first["delta"]["content"] == ""
    assert first["delta"]["reasoning_content"]
    assert "reasoning" not in first["delta"]
    with_choices = [c for c in chunks if c["choices"]]
    assert all(isinstance(c["choices"][0]["arrival_time"], float) for c in with_choices)
    assert all("logprobs" not in c["choices"][0] for c in with_choices)
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] > 0
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}


def test_fastdeploy_thinking_switches(fastdeploy: httpx.Client) -> None:
    def thinks(**extra: Any) -> bool:
        chunks = json_events(fastdeploy.post(CHAT, json=chat_body(**extra)).content)
        return any(c["choices"][0]["delta"].get("reasoning_content") for c in chunks)

    assert not thinks()
    assert thinks(chat_template_kwargs={"enable_thinking": True})
    assert thinks(metadata={"enable_thinking": True})  # FastDeploy's deprecated way
    assert thinks(chat_template_kwargs={"options": {"thinking_mode": "open"}})
    assert not thinks(chat_template_kwargs={"options": {"thinking_mode": "close"}})


def test_fastdeploy_reasoning_max_tokens_caps_thinking(fastdeploy: httpx.Client) -> None:
    def reasoning(**extra: Any) -> str:
        body = chat_body(stream=False, chat_template_kwargs={"enable_thinking": True}, **extra)
        text: str = fastdeploy.post(CHAT, json=body).json()["choices"][0]["message"][
            "reasoning_content"
        ]
        return text

    assert len(reasoning(reasoning_max_tokens=10)) < len(reasoning())


@pytest.mark.parametrize(
    ("body", "status", "type_", "code"),
    [
        (chat_body(model="other"), 400, "invalid_request_error", "model_not_support"),
        (chat_body(max_tokens=10**6), 400, "invalid_request_error", "context_length_exceeded"),
        (chat_body("hi [[wenxin:fault error=tokens_too_long]]"), 400, "invalid_request_error",
         "context_length_exceeded"),
        (chat_body("hi [[wenxin:fault error=336000]]"), 500, "internal_error", None),
    ],
)  # fmt: skip
def test_fastdeploy_error_shape(
    fastdeploy: httpx.Client, body: dict[str, Any], status: int, type_: str, code: str | None
) -> None:
    response = fastdeploy.post(CHAT, json=body)
    assert response.status_code == status
    error = response.json()
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert (error["error"]["type"], error["error"]["code"]) == (type_, code)


def test_fastdeploy_error_inside_a_stream_then_done(fastdeploy: httpx.Client) -> None:
    data = events(
        fastdeploy.post(
            CHAT, json=chat_body("x [[wenxin:fault error=336000;error_after=1]]")
        ).content
    )
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["type"] == "internal_error"


def test_fastdeploy_key_required(fastdeploy: httpx.Client) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = fastdeploy.post(CHAT, json=chat_body(), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert KEY not in response.text
    unauthenticated = httpx.get(str(fastdeploy.base_url) + "/v1/models")
    assert unauthenticated.status_code == 401
    assert fastdeploy.get("/v1/models").json()["data"][0]["owned_by"] == "FastDeploy"


# --- both ------------------------------------------------------------------------------------


def test_vllm_key_refusal_is_its_middleware_s() -> None:
    with openai_emulator("vllm", openai_api_key=KEY) as handle:
        response = httpx.post(handle.base_url + CHAT, json=chat_body())
        assert (response.status_code, response.json()) == (401, {"error": "Unauthorized"})
        ok = httpx.post(handle.base_url + CHAT, json=chat_body(), headers=AUTH)
        assert ok.status_code == 200


@pytest.mark.parametrize("flavour", ["vllm", "fastdeploy"])
def test_pacing_applies(flavour: str) -> None:
    config = EmulatorConfig(**{**FAST, "ttft": 0.3, "v2_interval": 0.05, "openai_flavour": flavour})
    with emulator(config) as handle, httpx.Client(base_url=handle.base_url) as c:
        response, timed = timed_events(
            c, "POST", CHAT, json=chat_body("hi [[wenxin:fault chunks=4]]")
        )
    assert response.status_code == 200
    times = [t for t, data in timed if data != "[DONE]"]
    assert len(times) == 4
    assert times[0] >= 0.25
    assert times[-1] - times[0] >= 0.12


@pytest.mark.parametrize("flavour", ["vllm", "fastdeploy"])
def test_cut_stream_never_ends_properly(flavour: str) -> None:
    with (
        openai_emulator(flavour) as handle,
        httpx.Client(base_url=handle.base_url) as c,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        c.post(CHAT, json=chat_body("hi [[wenxin:fault cut_after=2]]"))


@pytest.mark.parametrize("flavour", ["vllm", "fastdeploy"])
def test_continuation_is_the_rest_of_the_answer(flavour: str) -> None:
    with openai_emulator(flavour) as handle, httpx.Client(base_url=handle.base_url) as c:
        whole = c.post(CHAT, json=chat_body(stream=False)).json()["choices"][0]["message"]
        text = whole["content"]
        messages = [
            {"role": "user", "content": "介绍一下北京"},
            {"role": "assistant", "content": text[:10]},
            {"role": "user", "content": CONTINUE_PROMPT},
        ]
        rest = c.post(CHAT, json={"messages": messages}).json()["choices"][0]["message"]
    assert text[:10] + rest["content"] == text


@pytest.mark.parametrize("flavour", ["vllm", "fastdeploy"])
def test_refusals_before_the_answer(flavour: str) -> None:
    """Method, body, types, quota, an injected token expiry, content parts: in the flavour's
    shape every time."""
    with (
        openai_emulator(flavour, rpm=2, max_body_bytes=4096) as handle,
        httpx.Client(base_url=handle.base_url) as c,
    ):
        answers = [
            c.get(CHAT),
            c.post(CHAT, content=b"{not json", headers={"content-type": "application/json"}),
            c.post(CHAT, json=[1, 2]),
            c.post(CHAT, json=chat_body(stream="yes")),
            c.post(CHAT, json=chat_body("x" * 5000)),
        ]
        assert [a.status_code for a in answers] == [405, 400, 400, 400, 413]
        for answer in answers:
            error = answer.json()
            assert error["object"] == "error" if flavour == "vllm" else set(error) == {"error"}
        parts = [{"type": "text", "text": "介绍"}, {"type": "text", "text": "一下北京"}]
        ok = c.post(CHAT, json={"messages": [{"role": "user", "content": parts}]})
        assert ok.status_code == 200
        expired = c.post(CHAT, json=chat_body("hi [[wenxin:fault expire_token=1]]"))
        assert expired.status_code == 401
        limited = c.post(CHAT, json=chat_body())
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) > 0
        error = limited.json()
        kind = error["type"] if flavour == "vllm" else error["error"]["type"]
        assert kind == ("RateLimitError" if flavour == "vllm" else "rate_limit_error")
