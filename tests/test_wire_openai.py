"""OpenAI-compatible servers on the wire: their error shapes onto the exception tree, their
streams onto v2's events (``_wire_openai``, ``_exceptions.api_error_from_openai``,
``_error_codes.openai_status``), with the shapes of ``shared/ERNIE-CURRENT.md`` §7."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wenxin_stream import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    FinishEvent,
    IncompleteStreamError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    ReasoningDelta,
    TextDelta,
    UnknownFieldsEvent,
    UsageEvent,
    V2StreamParser,
    encode_event,
)
from wenxin_stream._exceptions import api_error_from_openai
from wenxin_stream._sse import DONE_EVENT
from wenxin_stream._wire_openai import OpenAIStreamParser, parse_openai_body

VLLM_TOO_LONG = (
    "This model's maximum context length is 2048 tokens. However, you requested 3000 tokens "
    "(1000 in the messages, 2000 in the completion). Please reduce the length of the messages "
    "or completion."
)


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(encode_event(json.dumps(c, ensure_ascii=False)) for c in chunks)
    return body + DONE_EVENT if done else body


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "cls", "code", "retryable"),
    [
        # OpenAI's own shape, string codes
        (429, {"error": {"message": "slow down", "type": "requests",
                         "code": "rate_limit_exceeded"}},
         RateLimitError, "rate_limit_exceeded", True),
        (429, {"error": {"message": "no money", "type": "insufficient_quota",
                         "code": "insufficient_quota"}},
         RateLimitError, "insufficient_quota", False),
        (401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                         "param": None, "code": "invalid_api_key"}},
         AuthenticationError, "invalid_api_key", False),
        (400, {"error": {"message": "too long", "type": "invalid_request_error",
                         "param": "messages", "code": "context_length_exceeded"}},
         ContextLengthError, "context_length_exceeded", False),
        (503, {"error": {"message": "overloaded", "type": "server_error", "code": None}},
         InternalServerError, None, True),
        # vLLM's flat shape: the status repeated as the code
        (400, {"object": "error", "message": VLLM_TOO_LONG, "type": "BadRequestError",
               "param": None, "code": 400},
         ContextLengthError, "400", False),
        (404, {"object": "error", "message": "The model `x` does not exist.",
               "type": "NotFoundError", "param": None, "code": 404},
         NotFoundError, "404", False),
        (500, {"object": "error", "message": "boom", "type": "InternalServerError", "param": None,
               "code": 500},
         InternalServerError, "500", True),
        (401, {"error": "Unauthorized"}, AuthenticationError, None, False),
        # FastDeploy: current ErrorInfo, and the older flat body with an int code
        (400, {"error": {"message": "Input text is too long, length of prompt token(9000) + "
                         "max_tokens(1) > max_model_len(2048)", "type": "invalid_request_error",
                         "param": None, "code": "context_length_exceeded"}},
         ContextLengthError, "context_length_exceeded", False),
        (400, {"error": {"message": "Unsupported model: [x]", "type": "invalid_request_error",
                         "param": None, "code": "model_not_support"}},
         BadRequestError, "model_not_support", False),
        (408, {"object": "error", "message": "Request queued time exceed 30", "code": 408},
         BadRequestError, "408", True),
        # FastAPI's own validation error
        (422, {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
         BadRequestError, None, False),
    ],
)  # fmt: skip
def test_error_shapes(
    status: int, body: dict[str, Any], cls: type[APIError], code: str | None, retryable: bool
) -> None:
    exc = api_error_from_openai(status, json.dumps(body).encode())
    assert type(exc) is cls
    assert exc.api == "openai"
    assert exc.status_code == status
    assert exc.code == code
    assert exc.retryable is retryable
    assert exc.message


def test_garbage_and_empty_bodies_name_the_status() -> None:
    exc = api_error_from_openai(502, b"<html>Bad Gateway</html>")
    assert type(exc) is InternalServerError
    assert "HTTP 502 Bad Gateway" in exc.message
    assert "<html>" in exc.message
    assert exc.retryable
    empty = api_error_from_openai(400, b"")
    assert type(empty) is BadRequestError
    assert "an empty body" in empty.message


@pytest.mark.parametrize(
    ("body", "cls", "retryable"),
    [
        ({"error": {"object": "error", "message": "m", "type": "BadRequestError", "code": 400}},
         BadRequestError, False),
        ({"error": {"object": "error", "message": "m", "type": "InternalServerError",
                    "code": 500}}, InternalServerError, True),
        ({"error": {"message": "m", "type": "internal_error", "param": None, "code": None}},
         InternalServerError, True),
        ({"error": {"message": "m", "type": "rate_limit_error"}}, RateLimitError, True),
        ({"error": {"message": "m"}}, InternalServerError, True),
        ({"object": "error", "message": "m", "code": 400}, BadRequestError, False),
    ],
)  # fmt: skip
def test_errors_inside_a_stream_are_classified_without_a_status(
    body: dict[str, Any], cls: type[APIError], retryable: bool
) -> None:
    exc = api_error_from_openai(200, body)
    assert type(exc) is cls
    assert exc.status_code == 200
    assert exc.retryable is retryable


def test_a_secret_in_an_error_message_is_masked() -> None:
    body = {"error": {"message": "bad header Authorization: Bearer sk-abcdefghijklmnop1234"}}
    exc = api_error_from_openai(401, json.dumps(body))
    assert "sk-abcdefghijklmnop1234" not in str(exc)
    assert "sk-abcdefghijklmnop1234" not in repr(exc)


# --- streams ---------------------------------------------------------------------------------


def vllm_stream(field: str) -> bytes:
    """A vLLM stream: thinking under ``field``, then text, nulls on every choice."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if finish:
            choice["stop_reason"] = None
        return {**base, "choices": [choice]}

    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    return sse(
        chunk({"role": "assistant", field: "想"}),
        chunk({field: "一想"}),
        chunk({"content": "你好"}),
        chunk({"content": "！"}, "stop"),
        {**base, "choices": [], "usage": usage},
    )


def events(parser: V2StreamParser, data: bytes) -> list[Any]:
    out = parser.feed(data)
    out += parser.close()
    return out


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_vllm_streams_give_v2_events(field: str) -> None:
    got = events(OpenAIStreamParser(), vllm_stream(field))
    kinds = [type(e) for e in got if type(e) is not type(got[0])]  # without the ChunkMetas
    assert kinds == [ReasoningDelta, ReasoningDelta, TextDelta, TextDelta, FinishEvent, UsageEvent]
    assert "".join(e.text for e in got if type(e) is ReasoningDelta) == "想一想"
    assert "".join(e.text for e in got if type(e) is TextDelta) == "你好！"
    assert not [e for e in got if type(e) is UnknownFieldsEvent]  # nulls are not news


def test_the_same_stream_on_v2_reports_the_nulls() -> None:
    """The difference is only in what counts as unknown: v2 keeps reporting every field."""
    got = events(V2StreamParser(), vllm_stream("reasoning"))
    assert any(type(e) is UnknownFieldsEvent for e in got)


def test_fastdeploy_extras_dropped_but_real_ones_kept() -> None:
    first = {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "default",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "", "reasoning_content": "",
                          "tool_calls": None, "prompt_token_ids": None},
                "arrival_time": 0.12,
            }
        ],
    }  # fmt: skip
    last = {
        "id": "chatcmpl-2",
        "choices": [
            {"index": 0, "delta": {"content": "好"}, "finish_reason": "recover_stop",
             "arrival_time": 0.2}
        ],
        "metrics": {"first_token_time": 0.1},
    }  # fmt: skip
    parser = OpenAIStreamParser()
    got = parser.feed(sse(first, last)[: -len(DONE_EVENT)])
    unknown = [e for e in got if type(e) is UnknownFieldsEvent]
    assert [dict(e.fields) for e in unknown] == [{"metrics": {"first_token_time": 0.1}}]
    # recover_stop: the text so far is delivered, but the answer did not finish
    assert [e.text for e in got if type(e) is TextDelta] == ["好"]
    assert not [e for e in got if type(e) is FinishEvent]
    with pytest.raises(InternalServerError) as exc:
        parser.feed(DONE_EVENT)
    assert exc.value.code == "recover_stop"
    assert exc.value.retryable
    assert not parser.finished


@pytest.mark.parametrize(
    "error",
    [
        {"error": {"object": "error", "message": "engine dead", "type": "InternalServerError",
                   "param": None, "code": 500}},
        {"error": {"message": "engine dead", "type": "internal_error", "param": None,
                   "code": None}},
        {"object": "error", "message": "engine dead", "code": 500},
    ],
)  # fmt: skip
def test_an_error_then_done_is_an_error_not_an_end(error: dict[str, Any]) -> None:
    """vLLM and FastDeploy send ``data: [DONE]`` after a stream's error: the error wins."""
    text = {"id": "c", "choices": [{"index": 0, "delta": {"content": "半"}}]}
    parser = OpenAIStreamParser()
    body = sse(text, error)
    first = parser.feed(body[: len(encode_event(json.dumps(text)))])
    assert [e.text for e in first if type(e) is TextDelta] == ["半"]
    with pytest.raises(InternalServerError) as exc:
        parser.feed(body[len(encode_event(json.dumps(text))) :])
    assert "engine dead" in str(exc.value)
    assert exc.value.retryable
    assert not parser.finished


def test_a_stream_without_done_is_incomplete_and_says_openai() -> None:
    parser = OpenAIStreamParser()
    parser.feed(sse({"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}]}, done=False))
    with pytest.raises(IncompleteStreamError) as exc:
        parser.close()
    assert exc.value.api == "openai"
    assert str(exc.value).startswith("openai stream ended")


def test_a_bare_json_error_instead_of_a_stream() -> None:
    parser = OpenAIStreamParser()
    body = json.dumps({"object": "error", "message": VLLM_TOO_LONG, "code": 400}).encode()
    with pytest.raises(ContextLengthError):
        parser.feed(body)


# --- whole answers ---------------------------------------------------------------------------


def test_non_stream_answer_with_reasoning_and_extras() -> None:
    body = {
        "id": "chatcmpl-3",
        "object": "chat.completion",
        "created": 5,
        "model": "baidu/ERNIE-4.5-21B-A3B-PT",
        "system_fingerprint": "fp",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "答", "reasoning": "想",
                            "tool_calls": [], "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                  "completion_tokens_details": {"reasoning_tokens": 1}},
        "prompt_logprobs": None,
        "kv_transfer_params": {"x": 1},
    }  # fmt: skip
    result = parse_openai_body(200, json.dumps(body).encode())
    assert (result.content, result.reasoning, result.raw_finish_reason) == ("答", "想", "stop")
    assert result.usage is not None
    assert result.usage.total_tokens == 3
    assert dict(result.extra) == {"kv_transfer_params": {"x": 1}}


def test_non_stream_recover_stop_is_an_error() -> None:
    choice = {"index": 0, "message": {"content": "半"}, "finish_reason": "recover_stop"}
    with pytest.raises(InternalServerError) as exc:
        parse_openai_body(200, json.dumps({"id": "x", "choices": [choice]}))
    assert exc.value.code == "recover_stop"


def test_non_stream_error_with_status_200_is_an_error() -> None:
    with pytest.raises(BadRequestError):
        parse_openai_body(200, json.dumps({"object": "error", "message": "m", "code": 400}))
