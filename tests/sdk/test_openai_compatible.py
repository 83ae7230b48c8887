"""The SDK against OpenAI-compatible servers (``api="openai"``): the emulator as vLLM and as
FastDeploy serving ERNIE 4.5, through both twins — streams, whole answers, thinking, usage,
each error shape, faults inside a stream, retries before the first text, continue mode, and
the key kept out of every log line and error."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sdk_helpers import Emu, Harness, Mode, build_client, credentials, fault, serve_emulator

from wenxin_stream import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncClient,
    AsyncConversation,
    AuthenticationError,
    BadRequestError,
    ChunkMeta,
    ContextLengthError,
    EndReason,
    FinishEvent,
    FinishReason,
    IncompleteStreamError,
    InternalServerError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    RateLimitError,
    ReasoningDelta,
    TextDelta,
    Timeout,
    ToolCallDelta,
    UsageEvent,
    WenxinError,
)
from wenxin_stream._transport_mock import MockResponse
from wenxin_stream._transport_mock_async import AsyncMockTransport
from wenxin_stream._transport_mock_sync import MockTransport
from wenxin_stream.emulator._openai_wire import DEFAULT_MODELS

KEY = "sk-emulated-openai-key-0123456789abcdef"
"""The emulated server's API key: it must never appear in a log line or an error."""

FLAVOURS = ("vllm", "fastdeploy")
MODEL = {"vllm": DEFAULT_MODELS["vllm"], "fastdeploy": "default"}
EXPECTED_EVENTS = {ChunkMeta, ReasoningDelta, TextDelta, FinishEvent, UsageEvent}
"""The event types an answer with thinking brings: exactly v2's, nothing else."""


@pytest.fixture(scope="module", params=FLAVOURS)
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Emu]]:
    """One keyed emulator per flavour, shared by the tests of this module."""
    flavour: str = request.param
    with serve_emulator(openai_flavour=flavour, openai_api_key=KEY) as emu:
        yield flavour, emu


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    value: Mode = request.param
    return value


Make = Callable[..., Harness]


@pytest.fixture
async def make(server: tuple[str, Emu], mode: Mode) -> AsyncIterator[Make]:
    """``make(**kwargs)``: a client of ``mode`` for the flavour's server (``url=`` for another
    emulator)."""
    flavour, emu = server
    made: list[Harness] = []

    def factory(*, url: str | None = None, **kwargs: Any) -> Harness:
        kwargs.setdefault("api_key", KEY)
        kwargs.setdefault("model", MODEL[flavour])
        harness = build_client(mode, base_url=(url or emu.base_url) + "/v1", api="openai", **kwargs)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.close()


def flavour_of(server: tuple[str, Emu]) -> str:
    return server[0]


@pytest.fixture
def fresh(server: tuple[str, Emu]) -> Iterator[str]:
    """The base URL of a new keyed emulator of the flavour: its ``times=N`` counters, kept per
    key, start at zero."""
    with serve_emulator(openai_flavour=flavour_of(server), openai_api_key=KEY) as emu:
        yield emu.base_url


# --- answers ---------------------------------------------------------------------------------


async def test_stream_with_thinking_and_usage(make: Make, server: tuple[str, Emu]) -> None:
    h = make()
    out = await h.stream("介绍一下北京", enable_thinking=True)
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    assert {type(e) for e in out.events} == EXPECTED_EVENTS
    kinds = [type(e) for e in out.events if type(e) in (ReasoningDelta, TextDelta)]
    assert kinds.index(TextDelta) > 0
    assert ReasoningDelta not in kinds[kinds.index(TextDelta) :]  # thinking, then the answer
    assert out.result.reasoning
    assert out.result.content == out.text
    usage = out.result.usage
    assert usage is not None
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if flavour_of(server) == "fastdeploy":
        assert usage.extra["completion_tokens_details"]["reasoning_tokens"] > 0
    (sent,) = h.wire.chat()
    assert sent.url.endswith("/v1/chat/completions")
    assert sent.request.headers["Authorization"] == f"Bearer {KEY}"
    body = json.loads(sent.request.body)
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["stream_options"] == {"include_usage": True}


async def test_without_thinking_no_reasoning(make: Make) -> None:
    out = await make().stream("介绍一下北京")
    out.raise_error()
    assert not out.of(ReasoningDelta)
    assert out.text


async def test_whole_answer_equals_the_stream(make: Make) -> None:
    h = make()
    streamed = await h.stream("介绍一下上海", enable_thinking=True)
    whole = await h.create("介绍一下上海", enable_thinking=True)
    assert whole.content == streamed.text
    assert whole.reasoning == streamed.result.reasoning
    assert whole.usage is not None
    assert whole.usage.completion_tokens == streamed.result.usage.completion_tokens  # type: ignore[union-attr]
    assert whole.model == streamed.result.model


# --- errors ----------------------------------------------------------------------------------


async def test_wrong_key(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    h = make(api_key="sk-wrong-key-that-is-also-secret-123456")
    with caplog.at_level(logging.DEBUG):
        out = await h.stream("hi")
    assert type(out.error) is AuthenticationError
    assert out.error.api == "openai"
    assert out.error.status_code == 401
    assert len(h.wire.chat()) == 1  # a static key: no refresh, no retry
    for secret in (KEY, "sk-wrong-key-that-is-also-secret-123456"):
        assert secret not in str(out.error)
        assert secret not in repr(out.error)
        assert secret not in caplog.text


async def test_missing_key(make: Make) -> None:
    h = make(api_key=None)
    with pytest.raises(AuthenticationError):
        await h.create("hi")
    (sent,) = h.wire.chat()
    assert "Authorization" not in sent.request.headers


async def test_unknown_model(make: Make, server: tuple[str, Emu]) -> None:
    h = make(model="no-such-model")
    with pytest.raises(APIError) as exc:
        await h.create("hi")
    expected = NotFoundError if flavour_of(server) == "vllm" else BadRequestError
    assert type(exc.value) is expected
    assert not exc.value.retryable
    assert len(h.wire.chat()) == 1


async def test_context_length(make: Make) -> None:
    h = make()
    out = await h.stream("hi", max_tokens=10**6)
    assert type(out.error) is ContextLengthError
    assert out.error.status_code == 400
    assert out.end_reason is EndReason.UPSTREAM_ERROR
    assert len(h.wire.chat()) == 1


async def test_rate_limited_with_retry_after(mode: Mode, server: tuple[str, Emu]) -> None:
    flavour = flavour_of(server)
    with serve_emulator(openai_flavour=flavour, rpm=1) as emu:
        h = build_client(
            mode, base_url=emu.base_url + "/v1", api="openai", model=MODEL[flavour], retry=0
        )
        try:
            (await h.stream("one")).raise_error()
            out = await h.stream("two")
        finally:
            await h.close()
    assert type(out.error) is RateLimitError
    assert out.error.retryable
    assert out.error.retry_after is not None
    assert out.error.retry_after > 0


@pytest.mark.parametrize("stream", [True, False])
async def test_a_5xx_before_the_first_text_is_retried(make: Make, fresh: str, stream: bool) -> None:
    h = make(url=fresh)
    prompt = fault("你好", "error=336100;times=1")
    if stream:
        out = await h.stream(prompt)
        out.raise_error()
        text = out.text
    else:
        text = (await h.create(prompt)).content
    assert text
    assert len(h.wire.chat()) == 2


async def test_an_error_inside_the_stream_is_honest(make: Make) -> None:
    """vLLM and FastDeploy follow the error line with ``data: [DONE]``: still an error."""
    h = make()
    out = await h.stream(fault("介绍一下北京", "error=336100;error_after=3"))
    assert type(out.error) is InternalServerError
    assert out.error.retryable
    assert out.error.status_code == 200
    assert out.end_reason is EndReason.UPSTREAM_ERROR
    assert out.error.partial_text == out.delivered
    assert len(out.texts) == 3
    assert len(h.wire.chat()) == 1  # text reached the caller: never replayed


async def test_a_cut_stream_is_incomplete(make: Make) -> None:
    out = await make().stream(fault("介绍一下北京", "cut_after=2"))
    # the body ends unterminated: the transport or the parser notices first
    assert isinstance(out.error, APIConnectionError | IncompleteStreamError)
    assert out.end_reason is EndReason.INCOMPLETE
    assert out.error.partial_text == out.delivered
    assert len(out.texts) == 2


async def test_continue_mode_resumes_without_repeating(make: Make, fresh: str) -> None:
    h = make(url=fresh, continue_on_error=True)
    whole = await h.stream("介绍一下北京的历史")
    whole.raise_error()
    for spec in ("error=336100;error_after=4;times=1", "cut_after=5;times=1"):
        out = await h.stream(fault("介绍一下北京的历史", spec))
        out.raise_error()
        assert out.end_reason is EndReason.COMPLETED
        assert out.text == whole.text, spec
        assert out.delivered == whole.text, spec
    assert len(h.wire.chat()) == 1 + 2 + 2


async def test_continue_mode_off_raises(make: Make) -> None:
    out = await make().stream(fault("介绍一下北京的历史", "error=336100;error_after=2"))
    assert isinstance(out.error, WenxinError)
    assert out.end_reason is EndReason.UPSTREAM_ERROR


async def test_refused_locally_before_any_request(make: Make) -> None:
    h = make()
    with pytest.raises(InvalidRequestError, match="web search"):
        await h.stream("hi", web_search={"enable": True})
    with pytest.raises(InvalidRequestError, match="FastDeploy merges"):
        await h.create("hi", metadata={"tag": "x"})
    assert h.wire.chat() == []


async def test_transport_faults(make: Make) -> None:
    """The emulator's wire faults on this route, through the SDK: the text stays whole across
    split characters, a bad line is a MalformedResponseError, a stall past the idle timeout an
    APITimeoutError."""
    h = make(timeout=Timeout(connect=5, first_token=5, idle=0.3))
    reference = await h.stream("utf8 边界 😀 测试")
    reference.raise_error()
    split = await h.stream(fault("utf8 边界 😀 测试", "split_utf8=1"))
    split.raise_error()
    assert split.text == reference.text
    bad = await h.stream(fault("utf8 边界 😀 测试", "malformed_after=2"))
    assert type(bad.error) is MalformedResponseError
    assert bad.error.api == "openai"
    stalled = await h.stream(fault("utf8 边界 😀 测试", "stall=1;stall_after=2"))
    assert type(stalled.error) is APITimeoutError
    assert stalled.error.timeout_kind == "idle"
    assert stalled.end_reason is EndReason.TIMED_OUT


async def test_an_echoed_openai_style_key_is_masked(mode: Mode) -> None:
    """A server (or a proxy in front of it) that quotes the key in its error: masked."""
    key = "sk-proj-echoed0123456789abcdefXYZ"
    body = json.dumps({"error": {"message": f"invalid key {key}", "code": "invalid_api_key"}})
    transport_type = MockTransport if mode == "sync" else AsyncMockTransport
    transport = transport_type(
        [MockResponse(401, {"content-type": "application/json"}, [body.encode()])]
    )
    h = build_client(
        mode, transport=transport, base_url="http://mock.invalid/v1", api="openai", api_key=key,
        model="m", retry=0,
    )  # fmt: skip
    out = await h.stream("hi")
    await h.close()
    assert type(out.error) is AuthenticationError
    assert key not in str(out.error)
    assert key not in repr(out.error)
    assert "sk-***" in str(out.error)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "获取指定城市的实时天气",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


async def test_a_two_step_tool_call(make: Make) -> None:
    """FastDeploy and vLLM parse ERNIE's tool calls into OpenAI's deltas, with ``index``."""
    h = make()
    question = "北京今天天气怎么样？"
    out = await h.stream(question, tools=[WEATHER])
    out.raise_error()
    deltas = out.of(ToolCallDelta)
    assert deltas
    assert all(d.index == 0 for d in deltas)
    (call,) = out.result.tool_calls
    assert call.name == "get_current_weather"
    assert json.loads(call.arguments) == {"location": "北京"}
    assert out.result.finish_reason is FinishReason.TOOL_CALLS
    function = {"name": call.name, "arguments": call.arguments}
    history = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": call.id, "type": "function", "function": function}]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]  # fmt: skip
    answer = await h.create(history, tools=[WEATHER])
    assert 'get_current_weather 返回了 {"temp": 21}' in answer.content


async def test_a_conversation_keeps_its_history(server: tuple[str, Emu]) -> None:
    flavour, emu = server
    client = AsyncClient(
        base_url=emu.base_url + "/v1", api="openai", api_key=KEY, model=MODEL[flavour]
    )
    async with client:
        talk = AsyncConversation(client, system="简洁")
        texts = []
        for question in ("介绍一下北京", "再介绍一下上海"):
            async with talk.stream(question) as stream:
                texts.append("".join([piece async for piece in stream.text_stream]))
        history = talk.messages
    assert all(texts)
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert [history[1]["content"], history[3]["content"]] == texts


@pytest.mark.parametrize("thinking", [False, True])
async def test_the_events_are_v2_s(mode: Mode, server: tuple[str, Emu], thinking: bool) -> None:
    """One emulator, one question: v2 (a hybrid thinking model) and this server kind give the
    same events — text pieces, reasoning, finish, usage — apart from ids and model names."""
    flavour, emu = server
    v2 = build_client(mode, **credentials("v2", emu.base_url), model="ernie-5.1")
    selfhosted = build_client(
        mode, base_url=emu.base_url + "/v1", api="openai", api_key=KEY, model=MODEL[flavour]
    )
    try:
        outs = [await h.stream("介绍一下长城", enable_thinking=thinking) for h in (v2, selfhosted)]
    finally:
        await v2.close()
        await selfhosted.close()
    for out in outs:
        out.raise_error()

    def shape(events: list[Any]) -> list[Any]:
        kept = [e for e in events if type(e) is not ChunkMeta]
        if flavour == "fastdeploy":  # its usage has details v2's has not: compare the counts
            kept = [
                UsageEvent(dataclasses.replace(e.usage, extra={})) if type(e) is UsageEvent else e
                for e in kept
            ]
        return kept

    assert shape(outs[0].events) == shape(outs[1].events)
    assert bool(outs[1].result.reasoning) is thinking
