"""Client-side rate limits through the clients: QPS pacing, TPM reserve / settle / release, and
adaptation to the server's ``X-Ratelimit-*`` headers. Windows are short or the expected wait
is refused at once (``rate_limit_wait``), so nothing here sleeps long."""

from __future__ import annotations

import asyncio

import pytest
from sdk_helpers import (
    Api,
    Emu,
    Factory,
    Harness,
    MakeEach,
    Mode,
    build_client,
    credentials,
    fault,
    serve_emulator,
)

from wenxin_stream import ClientRateLimitTimeout, EndReason
from wenxin_stream._token_estimate import estimate_tokens

PROMPT = "限流测试"


async def _three_in_a_row(h: Harness) -> list[float]:
    for _ in range(3):
        (await h.stream(PROMPT)).raise_error()
    return [s.at for s in h.wire.chat()]


async def test_qps_paces_requests(make: Factory) -> None:
    """qps=2: any second holds at most two requests, so the third waits for the first to
    leave the window — one second on the client's (fake) clock, the only wait there is."""
    h = make(qps=2, fake_time=True)
    sent = await _three_in_a_row(h)
    assert len(sent) == 3
    assert h.clock.sleeps == pytest.approx([1.0])


async def test_the_client_tells_how_long_a_request_would_wait(make: Factory) -> None:
    """``rate_limit_delay()`` (what the server asks before it accepts work): 0 while a slot is
    free, the wait for the next one once the second is spent; asking reserves nothing."""
    h = make(qps=2, fake_time=True)
    assert h.client.rate_limit_delay() == 0.0
    for _ in range(2):
        (await h.stream(PROMPT)).raise_error()
    waits = {h.client.rate_limit_delay() for _ in range(3)}
    assert len(waits) == 1
    assert 0.0 < waits.pop() <= 1.0
    assert h.clock.sleeps == []


async def test_concurrent_streams_queue_under_qps(make_each: MakeEach) -> None:
    """Four streams at once on each client (four threads on the sync one) under qps=2."""

    async def four_at_once(h: Harness) -> list[float]:
        outs = await asyncio.gather(*(h.stream(PROMPT) for _ in range(4)))
        assert all(o.end_reason is EndReason.COMPLETED for o in outs), h.label
        return sorted(s.at for s in h.wire.chat())

    group = make_each(qps=2)
    times = await asyncio.gather(*(four_at_once(h) for h in group))
    # The limiter grants slots a second apart; the wire times can be closer by the time the
    # first requests spent after their grant (a v1 client's first request waits for its OAuth
    # token), hence the margin below 1 s. Two requests a second is the bound being checked:
    # without the limiter all four leave within a few milliseconds.
    for h, sent in zip(group, times, strict=True):
        assert sent[1] - sent[0] < 0.5, h.label
        assert 0.8 <= sent[2] - sent[0] < 2.0, h.label
        assert 0.8 <= sent[3] - sent[1] < 2.0, h.label


async def test_rpm_refuses_a_wait_beyond_rate_limit_wait(make: Factory) -> None:
    """rpm=6 allows a burst of one request per ten seconds; a caller that would have to wait
    longer than ``rate_limit_wait`` is told so at once, and nothing is sent."""
    h = make(rpm=6, rate_limit_wait=0.2, fake_time=True)
    (await h.stream(PROMPT)).raise_error()
    out = await h.stream(PROMPT)
    assert isinstance(out.error, ClientRateLimitTimeout)
    assert out.error.wait == pytest.approx(
        10.0
    )  # no time passed on the client's clock since the first
    assert h.clock.sleeps == []
    assert out.error.max_wait == 0.2
    assert not out.error.retryable
    assert len(h.wire.chat()) == 1


async def _usage_of(api: Api, mode: Mode, url: str, message: str) -> int:
    probe = build_client(mode, **credentials(api, url))
    out = await probe.stream(message)
    await probe.close()
    out.raise_error()
    assert out.result.usage is not None
    return out.result.usage.total_tokens


async def test_tpm_settles_estimates_to_the_reported_usage(
    make: Factory, api: Api, mode: Mode, sdk_emu: Emu
) -> None:
    url = sdk_emu.base_url
    estimate = estimate_tokens([{"role": "user", "content": PROMPT}])
    used = await _usage_of(api, mode, url, PROMPT)
    assert estimate > 2 * used + 5  # otherwise the test could not tell settle from none
    # room for one estimate plus two settled answers, but not for two estimates
    h = make(tpm=estimate + 2 * used + 5, rate_limit_wait=0.2)
    for _ in range(3):
        (await h.stream(PROMPT)).raise_error()
    fourth = await h.stream(PROMPT)
    assert isinstance(fourth.error, ClientRateLimitTimeout)
    assert fourth.error.wait > 50  # the first answer's tokens leave the minute window
    assert len(h.wire.chat()) == 3


async def test_tpm_gives_back_the_tokens_of_a_failed_request(make: Factory) -> None:
    failing = fault(PROMPT, "error=336003")
    estimate = estimate_tokens([{"role": "user", "content": PROMPT}])
    failing_estimate = estimate_tokens([{"role": "user", "content": failing}])
    h = make(tpm=max(estimate, failing_estimate) + 10, rate_limit_wait=0.2)
    for _ in range(3):
        out = await h.stream(failing)
        assert out.error is not None
        assert not isinstance(out.error, ClientRateLimitTimeout)
    (await h.stream(PROMPT)).raise_error()  # fits only if the failures gave their tokens back
    assert len(h.wire.chat()) == 4


async def test_a_cancelled_stream_settles_what_it_used(make: Factory) -> None:
    """A stream stopped early is charged its prompt and the text it delivered (the server
    counts those), not the whole reservation: room for a partial's cost, but not for two
    full reservations, is enough for the next request."""
    estimate = estimate_tokens([{"role": "user", "content": PROMPT}])
    h = make(tpm=estimate + 200, rate_limit_wait=0.2)
    out = await h.stream(PROMPT, stop_after=3)
    assert out.end_reason is EndReason.CANCELLED
    (await h.stream(PROMPT)).raise_error()
    assert len(h.wire.chat()) == 2


@pytest.mark.parametrize("quota", [1, 6])
async def test_the_servers_limit_headers_are_adopted(api: Api, mode: Mode, quota: int) -> None:
    """The emulator's ``--rpm`` makes it advertise ``X-Ratelimit-Limit-Requests``; the client
    adopts it (rpm=6: a burst of one per ten seconds after the first answer) or, when
    ``Remaining-Requests`` is 0 (rpm=1), blocks at once — before the server has to refuse."""
    with serve_emulator(rpm=quota) as emu:
        h = build_client(
            mode, rate_limit_wait=0.2, fake_time=True, **credentials(api, emu.base_url)
        )
        first = await h.stream(PROMPT)
        outs = [await h.stream(PROMPT) for _ in range(2)]
        await h.close()
    first.raise_error()
    assert first.stream.response_headers["x-ratelimit-limit-requests"] == str(quota)
    refused = [o.error for o in outs if isinstance(o.error, ClientRateLimitTimeout)]
    assert refused, [o.error for o in outs]
    assert all(o.error is None or isinstance(o.error, ClientRateLimitTimeout) for o in outs)
    assert len(h.wire.chat()) == 1 + len(outs) - len(refused)  # refused ones sent nothing
    # a sixth of the minute, on the client's clock (which stood still: no real time counts)
    assert [error.wait for error in refused] == pytest.approx([10.0] * len(refused))
    assert h.clock.sleeps == []


async def test_without_a_quota_the_advertised_limits_do_not_hold_anyone_back(
    make: Factory,
) -> None:
    h = make(rate_limit_wait=0.2)
    outs = [await h.stream(PROMPT) for _ in range(5)]
    assert all(o.error is None for o in outs)
    assert outs[0].stream.response_headers["x-ratelimit-limit-requests"] == "100000"
