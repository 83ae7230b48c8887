"""Retries: how many attempts, how long between them (backoff, ``Retry-After``), and what is
never retried."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from sdk_helpers import (
    Api,
    Factory,
    Mode,
    build_client,
    credentials,
    fault,
    serve_emulator,
)

from wenxin_stream import (
    APIConnectionError,
    APITimeoutError,
    EndReason,
    InternalServerError,
    RateLimitError,
    RetryPolicy,
    Timeout,
)
from wenxin_stream._clock import FakeClock

PROMPT = "重试测试"


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_retry_zero_means_one_attempt(make: Factory) -> None:
    h = make(retry=0)
    out = await h.stream(fault(PROMPT, "error=336100;times=1"))
    assert isinstance(out.error, InternalServerError)
    assert out.error.retryable
    assert len(h.wire.chat()) == 1


ONE_RETRY = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)


async def test_retry_int_sets_the_number_of_retries(make: Factory) -> None:
    assert make(retry=1).client.retry.max_attempts == 2
    assert make(retry=0).client.retry.max_attempts == 1


async def test_one_retry_recovers_from_one_failure(make: Factory) -> None:
    h = make(retry=ONE_RETRY)
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, "error=336100;times=1"))
    out.raise_error()
    assert out.text == reference
    assert len(h.wire.chat()) == 1 + 2


@pytest.mark.parametrize("attempts", [1, 2, 4])
async def test_max_attempts_bounds_the_attempts(make: Factory, attempts: int) -> None:
    h = make(retry=RetryPolicy(max_attempts=attempts, initial_delay=0.01, jitter=0))
    out = await h.stream(fault(PROMPT, "error=336100"))
    assert isinstance(out.error, InternalServerError)
    assert len(h.wire.chat()) == attempts


async def test_backoff_grows_between_attempts(make: Factory) -> None:
    """The client waits the policy's backoff between attempts (on its fake clock: exactly)."""
    policy = RetryPolicy(max_attempts=3, initial_delay=0.15, multiplier=2.0, jitter=0.0)
    h = make(retry=policy, fake_time=True)
    out = await h.stream(fault(PROMPT, "error=336100;times=2"))
    out.raise_error()
    assert len(h.wire.chat()) == 3
    assert h.clock.sleeps == [0.15, 0.3]


async def test_timeout_before_any_text_is_retried(make: Factory) -> None:
    h = make(timeout=Timeout(first_token=0.2, idle=5), retry=ONE_RETRY)
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, "stall=1;stall_after=0;times=1"))
    out.raise_error()
    assert out.text == reference
    assert len(h.wire.chat()) == 1 + 2


async def test_connection_refused_after_the_configured_attempts(make: Factory) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    h = make(
        url=url, retry=RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0), fake_time=True
    )
    out = await h.stream(PROMPT)
    assert isinstance(out.error, APIConnectionError)
    assert not isinstance(out.error, APITimeoutError)
    assert out.error.retryable
    assert out.error.partial_text == ""
    assert out.end_reason is EndReason.UPSTREAM_ERROR
    assert out.events == []
    # v1 never gets past the OAuth fetch; every attempt is one request either way
    assert len(h.wire.sent) == 3
    assert h.clock.sleeps == [0.01, 0.02]  # the backoff between them, nothing else


async def test_connection_refused_without_retries(make: Factory) -> None:
    h = make(url=f"http://127.0.0.1:{closed_port()}", retry=0)
    with pytest.raises(APIConnectionError):
        await h.create(PROMPT)
    assert len(h.wire.sent) == 1


class SteppedClock:
    """The emulator's quota clock: real seconds passing, from a value the test sets."""

    def __init__(self) -> None:
        self.jump_to(1_000_000.0)

    def __call__(self) -> float:
        return self.base + (time.time() - self.origin)

    def jump_to(self, value: float) -> None:
        self.base, self.origin = value, time.time()


@pytest.mark.parametrize("api", ["v2"])
async def test_retry_after_of_a_429_is_honoured(api: Api, mode: Mode) -> None:
    quota_clock = SteppedClock()
    client_clock = FakeClock()

    def sleep(seconds: float) -> None:
        """The client's sleep: no real waiting, but the emulator's quota clock moves too."""
        client_clock.sleep(seconds)
        quota_clock.jump_to(quota_clock() + seconds)

    async def asleep(seconds: float) -> None:
        sleep(seconds)
        await asyncio.sleep(0)

    with serve_emulator(rpm=1, clock=quota_clock) as emu:
        creds = credentials(api, emu.base_url)
        first = build_client(mode, **creds)
        quota_clock.jump_to(1_000_000.0)  # the first request is counted in second 1_000_000
        (await first.stream(PROMPT)).raise_error()
        await first.close()
        # 59.3 s later (on the emulator's clock) that request is still in the window: the
        # next one is refused with Retry-After: 1 (the second it leaves the window)
        quota_clock.jump_to(1_000_059.3)
        policy = RetryPolicy(max_attempts=3, initial_delay=0.01, multiplier=1.0, jitter=0.0)
        second = build_client(  # a fresh client-side limiter
            mode,
            retry=policy,
            clock=client_clock,
            sleep=sleep if mode == "sync" else asleep,
            **creds,
        )
        out = await second.stream(PROMPT)
        await second.close()
    out.raise_error()
    assert len(second.wire.chat()) == 2
    assert client_clock.sleeps == [1.0]  # Retry-After, not the 10 ms backoff
    assert out.end_reason is EndReason.COMPLETED


@pytest.mark.parametrize("api", ["v2"])
async def test_retry_after_beyond_the_policy_is_raised_at_once(api: Api, mode: Mode) -> None:
    with serve_emulator(rpm=1) as emu:
        creds = credentials(api, emu.base_url)
        first = build_client(mode, **creds)
        (await first.stream(PROMPT)).raise_error()
        await first.close()
        policy = RetryPolicy(max_attempts=3, initial_delay=0.01, max_retry_after=5.0)
        second = build_client(mode, retry=policy, fake_time=True, **creds)
        out = await second.stream(PROMPT)
        await second.close()
    error = out.error
    assert isinstance(error, RateLimitError)
    assert error.status_code == 429
    assert error.code == "rpm_rate_limit_exceeded"
    assert error.retry_after is not None
    assert 5 < error.retry_after <= 60
    assert len(second.wire.chat()) == 1
    assert second.clock.sleeps == []  # raised at once


@pytest.mark.parametrize("api", ["v1"])
async def test_v1_quota_error_is_retried_then_raised(api: Api, mode: Mode) -> None:
    with serve_emulator(rpm=1) as emu:
        creds = credentials(api, emu.base_url)
        first = build_client(mode, **creds)
        (await first.stream(PROMPT)).raise_error()
        await first.close()
        second = build_client(mode, **creds)  # same app, its own limiter
        out = await second.stream(PROMPT)
        await second.close()
    error = out.error
    assert isinstance(error, RateLimitError)
    assert error.code == 336501
    assert error.status_code == 200
    assert len(second.wire.chat()) == 3
