"""The clients' injected clock and sleep: the defaults, and every timing of the client —
stream timings, retries, rate-limit waits, token lifetimes — following an injected clock."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from sdk_helpers import Mode, build_client, on_clock, sse_body

from wenxin_stream import AsyncClient, Client, EndReason, RetryPolicy
from wenxin_stream._clock import FakeClock, wall_clock
from wenxin_stream._synchronization import async_sleep, sync_sleep
from wenxin_stream._transport import HTTPRequest
from wenxin_stream._transport_mock import MockResponse, Pause
from wenxin_stream._transport_mock_async import AsyncMockTransport
from wenxin_stream._transport_mock_sync import MockTransport

V1 = {"api_key": "ak-time", "secret_key": "sk-time", "base_url": "http://mock.invalid"}


def test_the_defaults_are_real_time() -> None:
    sync = Client(environ={}, **V1)
    asyn = AsyncClient(environ={}, **V1)
    assert sync._clock is time.monotonic
    assert asyn._clock is time.monotonic
    assert sync._wall is time.time
    assert sync._sleep is sync_sleep is time.sleep
    assert asyn._sleep is async_sleep is asyncio.sleep
    assert sync._limiter._sleep is time.sleep
    assert asyn._limiter._sleep is asyncio.sleep
    sync.close()


def test_the_wall_clock_follows_an_injected_clock() -> None:
    assert wall_clock(None) is time.time
    assert wall_clock(time.monotonic) is time.time
    clock = FakeClock(start=5.0)
    wall = wall_clock(clock)
    before = wall()
    assert abs(before - time.time()) < 1.0  # starts at the real POSIX time
    clock.advance(3600.0)
    assert wall() - before == pytest.approx(3600.0)  # and moves with the clock only


def _oauth_and_chat(lifetimes: list[int]) -> Any:
    """A mock server: OAuth answers tokens t1, t2 … with the given lifetimes; chat answers."""

    def respond(request: HTTPRequest) -> MockResponse:
        if "/oauth/2.0/token" in request.url:
            number = sum("/oauth/" in r for r in seen) + 1
            seen.append(request.url)
            body = {"access_token": f"24.t{number}", "expires_in": lifetimes[number - 1]}
            return MockResponse(
                headers={"content-type": "application/json"}, body=[json.dumps(body).encode()]
            )
        seen.append(request.url)
        return MockResponse.split(sse_body("v1", ["好"]))

    seen: list[str] = []
    return respond, seen


async def test_token_lifetimes_follow_the_injected_clock(mode: Mode) -> None:
    """A 100-second token is refreshed ahead of expiry (10 % of its life early) when the
    client's clock says so — no real time passes."""
    clock = FakeClock()
    respond, seen = _oauth_and_chat([100, 100])
    transport = (MockTransport if mode == "sync" else AsyncMockTransport)(respond)
    h = build_client(mode, transport=transport, **V1, **on_clock(mode, clock))
    (await h.stream("你好")).raise_error()
    clock.advance(85.0)  # not yet due (due at 90 s)
    (await h.stream("你好")).raise_error()
    clock.advance(10.0)  # 95 s: due, still valid
    (await h.stream("你好")).raise_error()
    await h.close()
    kinds = ["token" if "/oauth/2.0/token" in url else "chat" for url in seen]
    assert kinds == ["token", "chat", "chat", "token", "chat"]
    assert "access_token=24.t2" in seen[-1]


async def test_every_wait_of_an_exchange_is_on_the_injected_clock(mode: Mode) -> None:
    """A stream through a mock: a failed attempt, the backoff, a paced body. Its timings are
    the fake clock's, to the microsecond, and nothing waited for real."""
    clock = FakeClock()
    body = sse_body("v1", ["一", "二"])
    cut = body.index(b"\n\n") + 2
    responses = [
        MockResponse(status=500, headers={}, body=[b'{"error_code": 336100}']),
        MockResponse(head_delay=0.2, body=[body[:cut], Pause(0.5), body[cut:]]),
    ]
    transport = (MockTransport if mode == "sync" else AsyncMockTransport)(
        responses, sleep=on_clock(mode, clock)["sleep"]
    )
    policy = RetryPolicy(max_attempts=2, initial_delay=1.5, jitter=0)
    h = build_client(
        mode, transport=transport, retry=policy, access_token="t", base_url="http://mock.invalid",
        **on_clock(mode, clock),
    )  # fmt: skip
    started = time.monotonic()
    out = await h.stream("你好")
    await h.close()
    out.raise_error()
    assert time.monotonic() - started < 1.0  # 2.2 s of scripted time took no real time
    assert out.end_reason is EndReason.COMPLETED
    assert clock.sleeps == pytest.approx([1.5, 0.2, 0.5])
    assert out.time_to_first_token == pytest.approx(1.7)  # from the first attempt
    assert out.elapsed == pytest.approx(2.2)
