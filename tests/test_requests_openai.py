"""Requests to an OpenAI-compatible server (``api="openai"``): the builder, the dialect, and how
a client is configured for one — base URL, key, and never a Qianfan credential."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from wenxin_stream import AsyncClient, Client, ConfigurationError, InvalidRequestError
from wenxin_stream._credentials import NoAuth, OpenAIBearer
from wenxin_stream._requests import OPENAI_CHAT_PATH, build_openai_chat

MODEL = "baidu/ERNIE-4.5-21B-A3B-PT"
MESSAGES = [{"role": "user", "content": "你好"}]
QIANFAN_ENV = {
    "QIANFAN_AK": "qianfan-ak-never-sent",
    "QIANFAN_SK": "qianfan-sk-never-sent",
    "QIANFAN_BEARER_TOKEN": "bce-v3/ALTAK-never/sent",
    "QIANFAN_BASE_URL": "http://127.0.0.1:1",
}


def body(**params: Any) -> dict[str, Any]:
    stream = params.pop("stream", True)
    prepared = build_openai_chat(MODEL, MESSAGES, stream=stream, **params)
    assert prepared.path == OPENAI_CHAT_PATH
    loaded: dict[str, Any] = json.loads(prepared.body_bytes())
    return loaded


def test_the_body_is_openai_s() -> None:
    sent = body(temperature=0.5, max_completion_tokens=100, user_id="u1", system="be brief")
    assert sent == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "be brief"}, *MESSAGES],
        "stream": True,
        "temperature": 0.5,
        "max_tokens": 100,
        "user": "u1",
        "stream_options": {"include_usage": True},
    }


def test_thinking_goes_into_chat_template_kwargs() -> None:
    assert body(enable_thinking=True)["chat_template_kwargs"] == {"enable_thinking": True}
    assert body(enable_thinking=False)["chat_template_kwargs"] == {"enable_thinking": False}
    assert "chat_template_kwargs" not in body()  # OpenAI itself refuses the unknown field
    assert "enable_thinking" not in body(enable_thinking=True)


def test_extra_body_is_sent_as_is_and_wins() -> None:
    extra = {"chat_template_kwargs": {"options": {"thinking_mode": "close"}}, "top_k": 5}
    sent = body(enable_thinking=True, extra_body=extra)
    assert sent["chat_template_kwargs"] == {"options": {"thinking_mode": "close"}}
    assert sent["top_k"] == 5


def test_earlier_reasoning_is_not_sent_back() -> None:
    history = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning": "r1", "reasoning_content": "r2"},
        {"role": "user", "content": "q2"},
    ]
    prepared = build_openai_chat(MODEL, history, stream=False)
    sent = json.loads(prepared.body_bytes())
    assert sent["messages"][1] == {"role": "assistant", "content": "a"}
    assert "stream_options" not in sent


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"web_search": {"enable": True}}, "web_search"),
        ({"disable_search": False}, "web_search"),
        ({"penalty_score": 1.2}, "penalty_score"),
        ({"metadata": {"tag": "x"}}, "metadata"),
        ({"thinking_budget": 1024}, "thinking_budget"),
        ({"thinking_strategy": "short_think"}, "thinking_strategy"),
        ({"user_setting": "x"}, "user_setting"),
        ({"enable_thinking": "yes"}, "enable_thinking"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stream": False, "include_usage": True}, "stream_options"),
        ({"tools": "not a list"}, "tools"),
    ],
)
def test_refused_by_name(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        body(**params)
    assert exc.value.field == field


def test_qianfan_limits_are_not_applied() -> None:
    """Five long stop words and a big seed are fine for vLLM; only Qianfan limits them."""
    sent = body(stop=["a" * 30, "b", "c", "d", "e"], seed=2**40, top_logprobs=50, logprobs=True)
    assert len(sent["stop"]) == 5


def test_a_model_is_required() -> None:
    with pytest.raises(InvalidRequestError, match="the id it serves"):
        build_openai_chat("", MESSAGES, stream=True)


# --- client configuration --------------------------------------------------------------------


@pytest.mark.parametrize("client_type", [Client, AsyncClient])
def test_client_for_an_openai_compatible_server(client_type: type[Client | AsyncClient]) -> None:
    client = client_type(
        base_url="http://127.0.0.1:8000/v1/", api="openai", api_key="vllm-key", environ={}
    )
    assert (client.api, client.base_url, client.emulated) == (
        "openai",
        "http://127.0.0.1:8000/v1",
        False,
    )
    assert client._auth == OpenAIBearer("vllm-key")
    assert "vllm-key" not in repr(client)
    assert "vllm-key" not in repr(client.settings)


def test_no_key_means_no_authorization_and_no_qianfan_credential() -> None:
    client = Client(base_url="http://127.0.0.1:8000/v1", api="openai", environ=QIANFAN_ENV)
    assert isinstance(client._auth, NoAuth)
    core = client._core("hi", model=MODEL, endpoint=None, stream=True, params={})
    request = core.http_request(None, 0.0)
    assert request.url == "http://127.0.0.1:8000/v1/chat/completions"
    assert "Authorization" not in request.headers
    assert not any(secret in request.body.decode() for secret in QIANFAN_ENV.values())


def test_key_sent_as_bearer() -> None:
    client = Client(base_url="http://h:1/v1", api="openai", api_key="k-123", model=MODEL)
    request = client._core("hi", model=None, endpoint=None, stream=False, params={}).http_request(
        None, 0.0
    )
    assert request.headers["Authorization"] == "Bearer k-123"
    assert json.loads(request.body)["model"] == MODEL


def test_environment_names() -> None:
    env = {"WENXIN_OPENAI_BASE_URL": "http://127.0.0.1:8180/v1", "WENXIN_OPENAI_API_KEY": "fd-key"}
    client = Client(api="openai", environ={**QIANFAN_ENV, **env})
    assert client.base_url == "http://127.0.0.1:8180/v1"
    assert client._auth == OpenAIBearer("fd-key")


def test_a_base_url_is_required(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigurationError) as exc:
        Client(api="openai", environ=QIANFAN_ENV)
    assert exc.value.variable == "WENXIN_OPENAI_BASE_URL"
    assert "OFFLINE EMULATOR" not in caplog.text  # never falls back to the emulator


def test_a_base_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError) as exc:
        Client(base_url="http://user:pw-secret@h/v1", api="openai", environ={})
    assert "pw-secret" not in str(exc.value)


def test_unknown_api_is_refused() -> None:
    with pytest.raises(ValueError, match="'openai'"):
        Client(api="anthropic", environ={})  # type: ignore[arg-type]
