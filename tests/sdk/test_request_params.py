"""Request parameters: every one the SDK knows is an explicit keyword of ``chat.stream`` and
``chat.create``, anything else goes in ``extra_body``, and a misspelt keyword is a TypeError
before anything is sent (through both twins and both generations, on the mock transport)."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
from sdk_helpers import Api, Harness, Mode, build_client, sse_body

from wenxin_stream import AsyncChat, AsyncConversation, Chat, Conversation, InvalidRequestError
from wenxin_stream._requests import CHAT_PARAMETERS, chat_params
from wenxin_stream._transport_mock import MockResponse
from wenxin_stream._transport_mock_async import AsyncMockTransport
from wenxin_stream._transport_mock_sync import MockTransport

NOT_PARAMETERS = {"self", "messages", "model", "endpoint", "continue_on_error", "extra_body"}


def harness(api: Api, mode: Mode, count: int = 1) -> tuple[Harness, Any]:
    responses = [MockResponse.split(sse_body(api, ["你好"])) for _ in range(count)]
    transport = (MockTransport if mode == "sync" else AsyncMockTransport)(responses)
    creds: dict[str, Any] = (
        {"access_token": "24.fixed-token-for-the-mock", "base_url": "http://mock.invalid"}
        if api == "v1"
        else {"bearer_token": "bce-v3/ALTAK-mock/secret", "v2_base_url": "http://mock.invalid"}
    )
    return build_client(mode, transport=transport, retry=0, **creds), transport


def sent_body(transport: Any, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(transport.requests[index].body)
    return body


@pytest.mark.parametrize("chat", [Chat, AsyncChat])
@pytest.mark.parametrize("method", ["stream", "create"])
def test_the_signatures_name_every_parameter_and_nothing_else(chat: type, method: str) -> None:
    parameters = inspect.signature(getattr(chat, method)).parameters
    assert all(
        p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in parameters.items() if n != "self"
    )
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [name for name in parameters if name not in NOT_PARAMETERS]
    assert named == list(CHAT_PARAMETERS)  # same names, same order


def test_chat_params_keeps_the_given_parameters_only() -> None:
    arguments = {"self": object(), "messages": [], "temperature": 0.5, "top_p": None, "x": 1}
    assert chat_params(arguments) == {"temperature": 0.5}


@pytest.mark.parametrize("method", ["stream", "create"])
async def test_a_misspelt_keyword_is_a_type_error_naming_it(
    api: Api, mode: Mode, method: str
) -> None:
    h, transport = harness(api, mode)
    with pytest.raises(TypeError, match="temprature"):
        getattr(h.client.chat, method)(messages="你好", temprature=0.5)
    await h.close()
    assert transport.requests == []  # nothing was sent


async def test_the_parameters_in_use_in_the_package_still_work(api: Api, mode: Mode) -> None:
    """The server, the CLI and the conversation pass these today."""
    h, transport = harness(api, mode)
    user = {"user_id": "u-1"} if api == "v1" else {"user": "u-1"}
    out = await h.stream(
        "你好", system="简短回答", temperature=0.5, top_p=0.9, max_tokens=64, stop=["。"], **user
    )
    await h.close()
    out.raise_error()
    body = sent_body(transport)
    assert (body["temperature"], body["top_p"], body["stop"]) == (0.5, 0.9, ["。"])
    assert body["max_output_tokens" if api == "v1" else "max_tokens"] == 64
    assert body["user_id" if api == "v1" else "user"] == "u-1"
    if api == "v1":
        assert body["system"] == "简短回答"
    else:
        assert body["messages"][0] == {"role": "system", "content": "简短回答"}


async def test_none_means_not_given(api: Api, mode: Mode) -> None:
    h, transport = harness(api, mode)
    (await h.stream("你好", temperature=None, stop=None)).raise_error()
    await h.close()
    assert "temperature" not in sent_body(transport)
    assert "stop" not in sent_body(transport)


async def test_extra_body_is_sent_as_is(api: Api, mode: Mode) -> None:
    h, transport = harness(api, mode)
    extra = {"extra_parameters": {"request_source": "wenxin-test"}, "x_flag": None}
    (await h.stream("你好", temperature=0.3, extra_body=extra)).raise_error()
    await h.close()
    body = sent_body(transport)
    assert body["extra_parameters"] == {"request_source": "wenxin-test"}
    assert body["x_flag"] is None  # as is: a None in extra_body is sent as null
    assert body["temperature"] == 0.3


async def test_extra_body_is_not_checked(mode: Mode) -> None:
    """The named parameters are checked against ERNIE's rules; extra_body is not (the caller
    takes over), so it can send what the SDK would refuse."""
    h, transport = harness("v1", mode)
    with pytest.raises(InvalidRequestError, match="temperature"):
        await h.create("你好", temperature=5.0)
    out = await h.stream("你好", extra_body={"temperature": 5.0})
    await h.close()
    out.raise_error()
    assert sent_body(transport)["temperature"] == 5.0


async def test_whole_answers_take_the_same_parameters(api: Api, mode: Mode) -> None:
    answer = (
        {"id": "as-1", "result": "好", "is_end": True, "usage": {"total_tokens": 2}}
        if api == "v1"
        else {
            "id": "as-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "好"}}],
            "usage": {"total_tokens": 2},
        }
    )
    script = MockResponse(
        headers={"content-type": "application/json"}, body=[json.dumps(answer).encode()]
    )
    transport = (MockTransport if mode == "sync" else AsyncMockTransport)([script])
    creds: dict[str, Any] = (
        {"access_token": "24.t", "base_url": "http://mock.invalid"}
        if api == "v1"
        else {"bearer_token": "bce-v3/ALTAK-m/s", "v2_base_url": "http://mock.invalid"}
    )
    h = build_client(mode, transport=transport, retry=0, **creds)
    result = await h.create("你好", top_p=0.2, extra_body={"k": [1]})
    await h.close()
    assert result.content == "好"
    assert (sent_body(transport)["top_p"], sent_body(transport)["k"]) == (0.2, [1])
    if api == "v2":
        with pytest.raises(InvalidRequestError, match="only allowed when streaming"):
            await build_client(mode, transport=transport, **creds).create(
                "你好", include_usage=True
            )


async def test_a_conversation_passes_parameters_through_and_rejects_unknown_ones(
    api: Api, mode: Mode
) -> None:
    h, transport = harness(api, mode, count=2)
    conversation_type = Conversation if mode == "sync" else AsyncConversation
    conv = conversation_type(h.client, temperature=0.4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="temprature"):
        conv.stream("你好", temprature=0.1)
    assert transport.requests == []
    stream = conv.stream("你好", top_p=0.8)
    if mode == "sync":
        await h.call(stream.until_done)  # type: ignore[union-attr]
    else:
        await stream.until_done()  # type: ignore[misc]
    await h.close()
    body = sent_body(transport)
    assert (body["temperature"], body["top_p"]) == (0.4, 0.8)
