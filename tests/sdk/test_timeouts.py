"""Timeouts that say what they bound — connect, first token, idle gap, deadline — and a healthy
long stream that none of them kills (LESSONS 7)."""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sdk_helpers import MakeEach, Mode, build_client, fault, on_clock

from wenxin_stream import APITimeoutError, EndReason, RetryPolicy, Timeout
from wenxin_stream._clock import FakeClock
from wenxin_stream._transport_mock import BodyItem, MockResponse, Pause
from wenxin_stream._transport_mock_async import AsyncMockTransport
from wenxin_stream._transport_mock_sync import MockTransport

PROMPT = "超时测试"


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A local port whose listener never accepts, with its accept queue full, so that a new
    connection attempt hangs in SYN-SENT (the kernel drops its SYNs) until the client's
    connect timeout. Nothing leaves the machine."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(16):  # fill the accept queue until a connection attempt hangs
            probe = socket.socket()
            probe.setblocking(False)
            probe.connect_ex(("127.0.0.1", port))
            fillers.append(probe)
            _, writable, _ = select.select([], [probe], [], 0.1)
            if not writable:
                break
        else:
            raise AssertionError("could not fill the accept queue of a local listener")
        yield port
    finally:
        for probe in fillers:
            probe.close()
        listener.close()


async def test_connect_timeout(make_each: MakeEach) -> None:
    with unanswered_port() as port:
        group = make_each(url=f"http://127.0.0.1:{port}", timeout=Timeout(connect=0.3), retry=0)
        outs = await asyncio.gather(*(h.stream(PROMPT) for h in group))
    for h, out in zip(group, outs, strict=True):
        error = out.error
        assert isinstance(error, APITimeoutError), h.label
        assert error.timeout_kind == "connect", h.label
        assert error.timeout == 0.3
        assert error.end_reason is out.end_reason is EndReason.TIMED_OUT
        assert 0.25 <= out.elapsed < 2.0, h.label
        assert len(h.wire.sent) == 1


async def test_connect_timeout_is_retried(make_each: MakeEach) -> None:
    with unanswered_port() as port:
        policy = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)
        group = make_each(
            url=f"http://127.0.0.1:{port}", timeout=Timeout(connect=0.2), retry=policy
        )
        outs = await asyncio.gather(*(h.stream(PROMPT) for h in group))
    for h, out in zip(group, outs, strict=True):
        assert isinstance(out.error, APITimeoutError), h.label
        assert out.error.timeout_kind == "connect"
        assert len(h.wire.sent) == 2, h.label


async def test_connect_timeout_with_the_mock_transport(mode: Mode) -> None:
    """On a fake clock the mock's connect takes exactly the connect limit, no real time."""
    clock = FakeClock()
    script = MockResponse(connect_delay=5.0)
    transport_type = MockTransport if mode == "sync" else AsyncMockTransport
    transport = transport_type([script], sleep=on_clock(mode, clock)["sleep"])
    h = build_client(
        mode,
        access_token="t",
        base_url="http://mock.invalid",
        transport=transport,
        timeout=Timeout(connect=0.1),
        retry=0,
        **on_clock(mode, clock),
    )
    out = await h.stream(PROMPT)
    await h.close()
    assert isinstance(out.error, APITimeoutError)
    assert out.error.timeout_kind == "connect"
    assert out.end_reason is EndReason.TIMED_OUT
    assert clock.sleeps == pytest.approx([0.1])
    assert out.elapsed == pytest.approx(0.1)


async def test_first_token_timeout(make_each: MakeEach) -> None:
    group = make_each(timeout=Timeout(first_token=0.25, idle=5), retry=0)
    outs = await asyncio.gather(*(h.stream(fault(PROMPT, "ttft=2")) for h in group))
    for h, out in zip(group, outs, strict=True):
        error = out.error
        assert isinstance(error, APITimeoutError), h.label
        assert error.timeout_kind == "first_token", h.label
        assert error.end_reason is out.end_reason is EndReason.TIMED_OUT
        assert 0.2 <= out.elapsed < 1.2, h.label


async def test_first_token_timeout_of_a_whole_answer(make_each: MakeEach) -> None:
    """A non-stream answer's headers come only with the answer: the first-token limit."""
    group = make_each(timeout=Timeout(first_token=0.25, idle=5), retry=0)
    results = await asyncio.gather(
        *(h.create(fault(PROMPT, "ttft=2")) for h in group), return_exceptions=True
    )
    for h, result in zip(group, results, strict=True):
        assert isinstance(result, APITimeoutError), h.label
        assert result.timeout_kind == "first_token", h.label


async def test_idle_timeout(make_each: MakeEach) -> None:
    group = make_each(timeout=Timeout(first_token=5, idle=0.25))
    message = fault(PROMPT, "interval=0.02;stall=2;stall_after=3")
    outs = await asyncio.gather(*(h.stream(message) for h in group))
    for h, out in zip(group, outs, strict=True):
        error = out.error
        assert isinstance(error, APITimeoutError), h.label
        assert error.timeout_kind == "idle", h.label
        assert len(out.texts) == 3
        assert error.partial_text == out.delivered
        assert error.end_reason is out.end_reason is EndReason.TIMED_OUT
        assert len(h.wire.chat()) == 1, h.label


async def test_deadline_cuts_a_long_stream(make_each: MakeEach) -> None:
    group = make_each(timeout=Timeout(first_token=5, idle=5, deadline=0.5))
    message = fault(PROMPT, "interval=0.1;chunks=20")
    outs = await asyncio.gather(*(h.stream(message) for h in group))
    for h, out in zip(group, outs, strict=True):
        error = out.error
        assert isinstance(error, APITimeoutError), h.label
        assert error.timeout_kind == "deadline", h.label
        assert error.timeout == 0.5
        assert 2 <= len(out.texts) <= 6, h.label
        assert error.partial_text == out.delivered
        assert error.end_reason is out.end_reason is EndReason.TIMED_OUT
        assert 0.45 <= out.elapsed < 1.0, h.label


async def test_deadline_covers_retries(make_each: MakeEach) -> None:
    """The deadline bounds the whole exchange: retries do not get a fresh one."""
    policy = RetryPolicy(max_attempts=5, initial_delay=0.01, jitter=0)
    group = make_each(timeout=Timeout(first_token=5, idle=5, deadline=0.6), retry=policy)
    message = fault(PROMPT, "stall=3;stall_after=0")
    outs = await asyncio.gather(*(h.stream(message) for h in group))
    for h, out in zip(group, outs, strict=True):
        error = out.error
        assert isinstance(error, APITimeoutError), h.label
        assert error.timeout_kind == "deadline", h.label
        assert error.end_reason is EndReason.TIMED_OUT
        assert out.elapsed < 1.2, h.label  # not 5 × 0.6 s
        assert len(h.wire.chat()) == 1, h.label


async def test_deadline_of_a_whole_answer_is_called_deadline(make_each: MakeEach) -> None:
    group = make_each(timeout=Timeout(first_token=5, idle=5, deadline=0.3), retry=0)
    start = time.monotonic()
    results = await asyncio.gather(
        *(h.create(fault(PROMPT, "ttft=2")) for h in group), return_exceptions=True
    )
    assert time.monotonic() - start < 1.0
    for h, result in zip(group, results, strict=True):
        assert isinstance(result, APITimeoutError), h.label
        assert result.timeout_kind == "deadline", h.label


async def test_a_healthy_long_stream_is_not_killed(make_each: MakeEach) -> None:
    """30 chunks 40 ms apart (1.2 s) under an idle limit of 0.3 s and a first-token limit of
    0.5 s: the limits bound silences, not the length of the answer."""
    group = make_each(timeout=Timeout(connect=1, first_token=0.5, idle=0.3))
    message = fault(PROMPT, "ttft=0.1;interval=0.04;chunks=30")
    outs = await asyncio.gather(*(h.stream(message) for h in group))
    for h, out in zip(group, outs, strict=True):
        out.raise_error()
        assert out.end_reason is EndReason.COMPLETED, h.label
        assert len(out.texts) == 30
        assert out.elapsed >= 0.1 + 29 * 0.04 - 0.02
        assert out.elapsed > 0.5 + 0.3


async def test_idle_timeout_with_exact_silences(mode: Mode) -> None:
    """Through the mock transport: silences shorter than the idle limit pass, the first
    longer one fires it, and the text before it is kept (on a fake clock: exactly)."""
    clock = FakeClock()
    chunk = b'data: {"id":"as-1","sentence_id":0,"result":"%s","is_end":false}\n\n'
    body: list[BodyItem] = [chunk % "一".encode(), Pause(0.1), chunk % "二".encode()]
    body += [Pause(0.6), b"never"]
    transport_type = MockTransport if mode == "sync" else AsyncMockTransport
    transport = transport_type([MockResponse(body=body)], sleep=on_clock(mode, clock)["sleep"])
    h = build_client(
        mode,
        access_token="t",
        base_url="http://mock.invalid",
        transport=transport,
        timeout=Timeout(first_token=1, idle=0.25),
        **on_clock(mode, clock),
    )
    out = await h.stream(PROMPT)
    await h.close()
    assert isinstance(out.error, APITimeoutError)
    assert out.error.timeout_kind == "idle"
    assert out.error.partial_text == "一二"
    assert transport.responses[0].aborted
    assert len(transport.requests) == 1
    assert clock.sleeps == pytest.approx([0.1, 0.25])  # the short silence, then the idle limit
    assert out.elapsed == pytest.approx(0.35)
