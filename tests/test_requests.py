"""Request builders: model resolution, system handling, every rule violation raised locally,
parameter pass-through, frozen bodies, secrets kept out of reprs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from wenxin_stream._events import freeze
from wenxin_stream._exceptions import InvalidRequestError
from wenxin_stream._models import V1_CHAT_PREFIX, V2_CHAT_PATH
from wenxin_stream._requests import (
    OAUTH_TOKEN_PATH,
    PreparedRequest,
    build_oauth_token_query,
    build_oauth_token_request,
    build_openai_chat,
    build_v1_chat,
    build_v2_chat,
)

USER = {"role": "user", "content": "你好"}
ASSISTANT = {"role": "assistant", "content": "你好！"}


def body(request: PreparedRequest) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(request.body_bytes())
    return loaded


# --- v1: the endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("ERNIE-4.0-8K", "completions_pro"),
        ("ernie-4.0-8k", "completions_pro"),
        ("ERNIE-Bot", "completions"),
        ("ERNIE-Bot-turbo", "eb-instant"),
        ("ernie-speed-128k", "ernie-speed-128k"),
        ("completions_pro", "completions_pro"),  # a known endpoint name
        ("eb-instant", "eb-instant"),
    ],
)
def test_v1_model_resolution(name: str, endpoint: str) -> None:
    request = build_v1_chat(name, [USER], stream=False)
    assert request.method == "POST"
    assert request.path == V1_CHAT_PREFIX + endpoint
    assert request.query == ()


def test_v1_unknown_model_is_a_local_error_that_explains_endpoint() -> None:
    with pytest.raises(InvalidRequestError) as info:
        build_v1_chat("ERNIE-4.O-8K", [USER], stream=True)
    assert info.value.field == "model"
    message = str(info.value)
    assert "unknown v1 model 'ERNIE-4.O-8K'" in message
    assert "endpoint='ERNIE-4.O-8K'" in message
    assert info.value.problem.v1_code == 336005


def test_v1_custom_endpoint() -> None:
    request = build_v1_chat(None, [USER], stream=True, endpoint="xbiimimv_xxx")
    assert request.path == V1_CHAT_PREFIX + "xbiimimv_xxx"
    assert request.stream
    same = build_v1_chat("ERNIE-4.0-8K", [USER], stream=True, endpoint="completions_pro")
    assert same.path.endswith("/completions_pro")


@pytest.mark.parametrize(
    ("model", "endpoint", "text"),
    [
        (None, "a/b", "not a valid endpoint name"),
        (None, "", "not a valid endpoint name"),
        (None, "ep?x=1", "not a valid endpoint name"),
        ("ERNIE-4.0-8K", "completions", "disagree"),
        ("nonsense", "completions", "disagree"),
        (None, None, "a model name (or endpoint=...) is required"),
        ("  ", None, "is required"),
    ],
)
def test_v1_endpoint_errors(model: str | None, endpoint: str | None, text: str) -> None:
    with pytest.raises(InvalidRequestError, match=text.replace("(", r"\(").replace(")", r"\)")):
        build_v1_chat(model, [USER], stream=False, endpoint=endpoint)


# --- v1: system and messages ----------------------------------------------------------------


def test_v1_leading_system_moves_to_the_system_field() -> None:
    messages = [{"role": "system", "content": "你是助手"}, USER]
    request = build_v1_chat("ERNIE-3.5-8K", messages, stream=False)
    assert body(request) == {"messages": [USER], "stream": False, "system": "你是助手"}
    assert messages[0] == {"role": "system", "content": "你是助手"}  # caller's list untouched
    assert len(messages) == 2


def test_v1_two_system_messages_joined_by_a_blank_line() -> None:
    messages = [
        {"role": "system", "content": "A"},
        {"role": "system", "content": "B"},
        USER,
    ]
    assert body(build_v1_chat("ERNIE-3.5-8K", messages, stream=False))["system"] == "A\n\nB"
    explicit = build_v1_chat("ERNIE-3.5-8K", messages, stream=False, system="S")
    assert body(explicit)["system"] == "S\n\nA\n\nB"
    only = build_v1_chat("ERNIE-3.5-8K", [USER], stream=False, system="S")
    assert body(only)["system"] == "S"


def test_v1_system_elsewhere_is_an_error() -> None:
    messages = [USER, ASSISTANT, {"role": "system", "content": "late"}, USER]
    with pytest.raises(InvalidRequestError, match="message 2 has role system") as info:
        build_v1_chat("ERNIE-3.5-8K", messages, stream=False)
    assert info.value.field == "messages"


def test_v1_system_types() -> None:
    with pytest.raises(InvalidRequestError, match="system message 0 must be a string"):
        build_v1_chat("ERNIE-3.5-8K", [{"role": "system", "content": None}, USER], stream=False)
    with pytest.raises(InvalidRequestError, match="system must be a string"):
        build_v1_chat("ERNIE-3.5-8K", [USER], stream=False, system=["x"])


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ([], "the messages must not be empty"),
        ("hello", "must be a list of message objects"),
        (None, "must be a list of message objects"),
        ([USER, ASSISTANT], "the length of messages must be an odd number"),
        ([ASSISTANT], "even index in the messages must be user"),
        ([USER, USER, USER], "odd index in the messages must be assistant"),
        ([{"role": "function", "name": "f", "content": "x"}], "must be user"),
        ([{"role": "user", "content": ""}], "content of message 0 must not be empty"),
        ([{"role": "user"}], "content of message 0 must not be empty"),
        ([{"role": "user", "content": ["x"]}], "must be a string"),
        ([{"role": "user", "content": " \n\r"}], "last message must not be blank"),
        (["just text"], "message 0 must be an object"),
        (
            [USER, {"role": "assistant", "content": "x"}, {"role": "function", "content": "{}"}],
            "with role function must have a name",
        ),
    ],
)
def test_v1_message_rules(messages: Any, text: str) -> None:
    with pytest.raises(InvalidRequestError, match=text) as info:
        build_v1_chat("ERNIE-4.0-8K", messages, stream=True)
    assert info.value.field == "messages"
    assert str(info.value).startswith("invalid request: ")


def test_v1_function_call_flow_is_valid() -> None:
    messages = [
        USER,
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": '{"ok": true}'},
    ]
    request = build_v1_chat("ERNIE-4.0-8K", messages, stream=False, functions=[{"name": "f"}])
    assert body(request)["functions"] == [{"name": "f"}]


# --- v1: parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field", "text"),
    [
        ({"temperature": 0}, "temperature", r"temperature must be in range \(0, 1\]"),
        ({"temperature": 1.5}, "temperature", "temperature must be in range"),
        ({"temperature": "hot"}, "temperature", "temperature must be a number"),
        ({"top_p": -0.1}, "top_p", r"top_p must be in range \[0, 1\]"),
        ({"penalty_score": 0.5}, "penalty_score", r"penalty_score must be in range \[1, 2\]"),
        ({"penalty_score": 2.5}, "penalty_score", "penalty_score must be in range"),
        ({"max_output_tokens": 1}, "max_output_tokens", r"\[2, 2048\]"),
        ({"max_output_tokens": 2049}, "max_output_tokens", r"\[2, 2048\]"),
        ({"max_tokens": 1}, "max_output_tokens", r"\[2, 2048\]"),
        ({"stop": ["a"] * 5}, "stop", "at most 4 elements"),
        ({"stop": ["x" * 21]}, "stop", "at most 20 chars"),
        ({"stop": "END"}, "stop", "stop must be a list of strings"),
        ({"disable_search": "yes"}, "disable_search", "disable_search must be a boolean"),
        ({"enable_citation": 1}, "enable_citation", "must be a boolean"),
        ({"max_tokens": 5, "max_output_tokens": 5}, "max_output_tokens", "pass only one"),
        ({"model": "ERNIE-4.0-8K"}, "model", "first argument"),
    ],
)
def test_v1_parameter_rules(params: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(InvalidRequestError, match=text) as info:
        build_v1_chat("ERNIE-4.0-8K", [USER], stream=False, **params)
    assert info.value.field == field


def test_v1_valid_parameters_and_pass_through() -> None:
    request = build_v1_chat(
        "ERNIE-4.0-8K",
        [USER],
        stream=True,
        temperature=0.95,
        top_p=0,
        penalty_score=2,
        max_tokens=2048,
        stop=["。"],
        disable_search=True,
        future_field={"nested": [1, 2]},
        extra_parameters={"request_source": "x"},
        user_id=None,  # None means "not given"
    )
    assert body(request) == {
        "messages": [USER],
        "stream": True,
        "temperature": 0.95,
        "top_p": 0,
        "penalty_score": 2,
        "max_output_tokens": 2048,
        "stop": ["。"],
        "disable_search": True,
        "future_field": {"nested": [1, 2]},
        "extra_parameters": {"request_source": "x"},
    }


def test_body_is_frozen_and_serialised_compactly() -> None:
    request = build_v1_chat("ERNIE-4.0-8K", [USER], stream=False, extra={"a": [1]})
    assert request.json_body is not None
    with pytest.raises(TypeError):
        request.json_body["stream"] = True  # type: ignore[index]
    with pytest.raises(AttributeError):
        request.json_body["messages"].append(USER)
    raw = request.body_bytes()
    expected = '{"messages":[{"role":"user","content":"你好"}],"stream":false,"extra":{"a":[1]}}'
    assert raw == expected.encode()
    assert PreparedRequest("GET", "/x").body_bytes() == b""


@pytest.mark.parametrize("build", [build_v1_chat, build_v2_chat, build_openai_chat])
def test_the_body_serialised_when_built_is_the_frozen_body_serialised(
    build: Callable[..., PreparedRequest],
) -> None:
    model = "ERNIE-4.0-8K" if build is build_v1_chat else "ernie-4.5-turbo-128k"
    caller_frozen = freeze({"role": "assistant", "content": "好的"})  # e.g. a kept result's
    messages = [USER, caller_frozen, {"role": "user", "content": '继续\n"引号"'}]
    request = build(model, messages, stream=True, extra_body={"x": {"y": [1, (2, 3)]}})
    assert request.encoded is not None
    assert request.body_bytes() == dataclasses.replace(request, encoded=None).body_bytes()


# --- v2 -------------------------------------------------------------------------------------


def test_v2_stream_body_asks_for_usage() -> None:
    messages = [{"role": "system", "content": "S"}, USER]
    request = build_v2_chat("ernie-4.0-8k", messages, stream=True, temperature=0.2)
    assert request.path == V2_CHAT_PATH
    assert request.stream
    assert body(request) == {
        "model": "ernie-4.0-8k",
        "messages": messages,
        "stream": True,
        "temperature": 0.2,
        "stream_options": {"include_usage": True},
    }


def test_v2_stream_options() -> None:
    off = build_v2_chat("m", [USER], stream=True, include_usage=False)
    assert body(off)["stream_options"] == {"include_usage": False}
    merged = build_v2_chat("m", [USER], stream=True, stream_options={"chunk_include_usage": True})
    assert body(merged)["stream_options"] == {"chunk_include_usage": True, "include_usage": True}
    kept = build_v2_chat("m", [USER], stream=True, stream_options={"include_usage": False})
    assert body(kept)["stream_options"] == {"include_usage": False}
    plain = build_v2_chat("m", [USER], stream=False)
    assert "stream_options" not in body(plain)
    assert body(plain)["stream"] is False


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_tokens", 100), ("max_completion_tokens", 100), ("max_output_tokens", 100)],
)
def test_v2_max_tokens_spellings(name: str, value: int) -> None:
    request = build_v2_chat("m", [USER], stream=False, **{name: value})
    assert body(request)["max_tokens"] == 100
    assert set(body(request)) == {"model", "messages", "stream", "max_tokens"}


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"max_tokens": 0}, "max_tokens", "positive integer"),
        ({"max_tokens": True}, "max_tokens", "positive integer"),
        ({"max_tokens": "5"}, "max_tokens", "positive integer"),
        ({"max_tokens": 5, "max_completion_tokens": 5}, "max_tokens", "pass only one"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"stop": "END"}, "stop", "list of strings"),
        ({"stream_options": ["x"]}, "stream_options", "must be an object"),
        ({"include_usage": True}, "stream_options", "only allowed when streaming"),
        ({"stream_options": {}}, "stream_options", "only allowed when streaming"),
    ],
)
def test_v2_parameter_rules(kwargs: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(InvalidRequestError, match=text) as info:
        build_v2_chat("m", [USER], stream=False, **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ([], "must not be empty"),
        ([{"role": "robot", "content": "x"}], "role of message 0 is invalid"),
        ([USER, {"role": "tool", "content": "{}"}], "must have a tool_call_id"),
        ([{"role": "user", "content": "  "}], "must not be blank"),
        ([{"role": "user", "content": 5}], "is malformed"),
    ],
)
def test_v2_message_rules(messages: list[Any], text: str) -> None:
    with pytest.raises(InvalidRequestError, match=text):
        build_v2_chat("ernie-4.0-8k", messages, stream=True)


def test_v2_alternation_is_opt_in() -> None:
    messages = [USER, USER]
    build_v2_chat("ernie-4.0-8k", messages, stream=False)
    with pytest.raises(InvalidRequestError, match="odd index"):
        build_v2_chat("ernie-4.0-8k", messages, stream=False, alternation=True)


@pytest.mark.parametrize("model", ["", "   ", None, 5])
def test_v2_model_required(model: Any) -> None:
    with pytest.raises(InvalidRequestError, match="model is empty"):
        build_v2_chat(model, [USER], stream=False)


def test_v2_pass_through_and_content_parts() -> None:
    parts = [
        {"type": "text", "text": "图里是什么？"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    messages = [{"role": "user", "content": parts}]
    request = build_v2_chat(
        "ernie-4.5-turbo-vl",
        messages,
        stream=False,
        web_search={"enable": True},
        seed=None,
        brand_new_option=1,
    )
    loaded = body(request)
    assert loaded["messages"] == messages
    assert loaded["web_search"] == {"enable": True}
    assert loaded["brand_new_option"] == 1
    assert "seed" not in loaded


# --- OAuth and reprs ------------------------------------------------------------------------

API_KEY = "Ab3xK9pQ2mW7"
SECRET_KEY = "Zx8vC1nB4mL6kJ3hG5fD"


def test_oauth_query() -> None:
    assert build_oauth_token_query(API_KEY, SECRET_KEY) == (
        ("grant_type", "client_credentials"),
        ("client_id", API_KEY),
        ("client_secret", SECRET_KEY),
    )
    request = build_oauth_token_request(API_KEY, SECRET_KEY)
    assert (request.method, request.path, request.json_body) == ("POST", OAUTH_TOKEN_PATH, None)


@pytest.mark.parametrize(
    ("api_key", "secret_key", "field"),
    [
        ("", SECRET_KEY, "api_key"),
        (API_KEY, "", "secret_key"),
        (API_KEY + "\n", SECRET_KEY, "api_key"),
        (API_KEY, " " + SECRET_KEY, "secret_key"),
        (API_KEY, None, "secret_key"),
    ],
)
def test_oauth_key_checks(api_key: Any, secret_key: Any, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        build_oauth_token_query(api_key, secret_key)
    assert info.value.field == field
    assert SECRET_KEY not in str(info.value)


def test_reprs_hide_secrets() -> None:
    text = repr(build_oauth_token_request(API_KEY, SECRET_KEY))
    assert SECRET_KEY not in text
    assert API_KEY not in text
    assert "'client_secret', '***'" in text
    assert "'grant_type', 'client_credentials'" in text
    assert str(build_oauth_token_request(API_KEY, SECRET_KEY)) == text
    authed = PreparedRequest("POST", "/x", (("access_token", "24.secret"), ("a", "1")))
    assert "24.secret" not in repr(authed)
    assert "('a', '1')" in repr(authed)
    chat = build_v1_chat("ERNIE-4.0-8K", [USER], stream=True, system="S")
    assert repr(chat) == (
        "PreparedRequest(method='POST', path='/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
        "completions_pro', query=(), stream=True, body_fields=('messages', 'stream', 'system'))"
    )


def test_v2_system_parameter_becomes_a_leading_system_message() -> None:
    from wenxin_stream._requests import build_v2_chat

    req = build_v2_chat(
        "ernie-4.0-8k", [{"role": "user", "content": "你好"}], stream=False, system="你是助手"
    )
    assert req.json_body is not None
    assert [m["role"] for m in req.json_body["messages"]] == ["system", "user"]
    assert req.json_body["messages"][0]["content"] == "你是助手"
    assert "system" not in req.json_body


# --- today's ERNIE: reasoning history, the catalogue's checks --------------------------------


def test_earlier_reasoning_is_not_sent_back() -> None:
    history = [
        USER,
        {"role": "assistant", "content": "答", "reasoning_content": "想", "reasoning": "想"},
        {"role": "user", "content": "再说说"},
    ]
    request = build_v2_chat("ernie-x1.1", history, stream=True)
    sent = body(request)["messages"]
    assert sent[1] == {"role": "assistant", "content": "答"}
    assert "reasoning_content" in history[1]  # the caller's list is untouched


def test_an_unknown_model_is_sent_unchecked() -> None:
    request = build_v2_chat(
        "deepseek-v3.2-think", [USER], stream=False, enable_thinking=True, logprobs=True
    )
    assert body(request)["model"] == "deepseek-v3.2-think"


@pytest.mark.parametrize(
    ("model", "params", "field"),
    [
        ("ernie-x1-turbo-32k", {"stop": ["。"]}, "stop"),
        ("ernie-4.0-8k", {"enable_thinking": True}, "enable_thinking"),
        ("ernie-x1.1", {"logprobs": True}, "logprobs"),
        ("ernie-lite-8k", {"max_completion_tokens": 4096}, "max_tokens"),
        ("ernie-char-8k", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ("ernie-x1.1", {"thinking_budget": 10}, "thinking_budget"),
        ("ernie-x1.1", {"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ],
)
def test_a_catalogue_model_refuses_what_it_cannot_honour(
    model: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        build_v2_chat(model, [USER], stream=False, **params)
    assert caught.value.field == field
    assert field.split(".")[0] in str(caught.value)


def test_an_image_for_a_text_model_is_refused_before_sending() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    question = [{"role": "user", "content": [{"type": "text", "text": "看图"}, image]}]
    with pytest.raises(InvalidRequestError) as caught:
        build_v2_chat("ernie-x1.1", question, stream=False)
    assert caught.value.field == "messages[0].content[1]"
    assert body(build_v2_chat("ernie-4.5-vl-28b-a3b", question, stream=False))["messages"]


def test_extra_body_stays_unchecked() -> None:
    request = build_v2_chat("ernie-x1-turbo-32k", [USER], stream=False, extra_body={"seed": 3})
    assert body(request)["seed"] == 3
