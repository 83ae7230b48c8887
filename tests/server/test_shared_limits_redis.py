"""Per-key limits and stream leases in a real Redis (``_limits_redis``, ``_leases``): the Lua
scripts with a fake clock passed in (a minute passes at once), the same rules as the
in-process limiter, leases that expire unless renewed, and a Redis that is gone → 503."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services import Service, redis_server
from wenxin_stream._clock import FakeClock
from wenxin_stream.server._leases import Leases
from wenxin_stream.server._limits import Admission, KeyLimiter, KeyLimits, Rejection
from wenxin_stream.server._limits_redis import ROOM_AGE, SharedLimits, unavailable
from wenxin_stream.server._liveness import live_instances
from wenxin_stream.server._redis import SharedRedis

_prefixes = itertools.count()


@pytest.fixture
async def shared(redis_service: Service) -> AsyncIterator[SharedRedis]:
    redis = SharedRedis(redis_service.url, timeout=2.0, prefix=f"lim{next(_prefixes)}:")
    await redis.open()
    yield redis
    await redis.close()


def _limits(
    redis: SharedRedis, defaults: KeyLimits, clock: FakeClock, *, ttl: float = 10.0, name: str = "a"
) -> SharedLimits:
    return SharedLimits(
        defaults, Leases(redis, instance_id=name, ttl=ttl, clock=clock), clock=clock
    )


def _admitted(result: Admission | Rejection) -> Admission:
    assert isinstance(result, Admission), result
    return result


def _rejected(result: Admission | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


async def test_rpm_bucket_matches_the_in_process_limiter(shared: SharedRedis) -> None:
    clock = FakeClock()
    limits = _limits(shared, KeyLimits(rpm=6), clock)
    local = KeyLimiter(KeyLimits(rpm=6), clock=clock)
    steps = [0.0] * 7 + [9.9, 0.1, 0.0, 25.0, 0.0, 0.0, 0.0, 3600.0] + [0.0] * 7
    for step in steps:
        clock.advance(step)
        ours, theirs = await limits.acquire("k", None, 0), local.admit("k", None, 0)
        assert type(ours) is not Rejection or isinstance(theirs, Rejection), (step, ours, theirs)
        if isinstance(theirs, Rejection):
            rejection = _rejected(ours)
            assert rejection.code == "rate_limited"
            assert rejection.retry_after == pytest.approx(theirs.retry_after, abs=1e-6)
            assert rejection.retry_after_header == theirs.retry_after_header
        else:
            limits.release(_admitted(ours))
            local.release(theirs)


async def test_rpm_over_a_long_stretch_is_rpm_per_minute_plus_one_burst(
    shared: SharedRedis,
) -> None:
    clock = FakeClock()
    limits = _limits(shared, KeyLimits(rpm=60), clock)
    admitted = 0
    for _ in range(1200):  # five minutes of a request every 0.25 s
        result = await limits.acquire("k", None, 0)
        if isinstance(result, Admission):
            admitted += 1
        clock.advance(0.25)
    assert admitted == 60 + 299


async def test_tokens_are_reserved_then_settled_and_a_refusal_spends_nothing(
    shared: SharedRedis,
) -> None:
    clock = FakeClock()
    limits = _limits(shared, KeyLimits(rpm=2, tpm=100), clock)
    first = _admitted(await limits.acquire("k", None, 100))
    assert first.reserved_tokens == 100
    for _ in range(3):  # refused for tokens: the request bucket keeps its second request
        rejection = _rejected(await limits.acquire("k", None, 10))
        assert rejection.retry_after == pytest.approx(6.0)  # 10 tokens refill in 6 s
    limits.settle(first, 40)  # 60 tokens come back
    await limits.leases.flush()
    assert first.reserved_tokens == 40
    limits.release(first)
    _admitted(await limits.acquire("k", None, 60))  # the second request, the 60 tokens
    assert _rejected(await limits.acquire("k", None, 0)).retry_after == pytest.approx(30.0)
    # more than estimated is taken too: the bucket goes into debt and refills from there
    clock.advance(60)  # 2 requests and 100 tokens back
    third = _admitted(await limits.acquire("k", None, 10))
    limits.settle(third, 160)  # 150 more than reserved: level 100 - 160 = -60
    await limits.leases.flush()
    rejection = _rejected(await limits.acquire("k", None, 30))
    assert rejection.retry_after == pytest.approx(54.0)  # 90 tokens at 100/60 per s


async def test_an_estimate_above_the_limit_waits_for_a_full_bucket(shared: SharedRedis) -> None:
    clock = FakeClock()
    limits = _limits(shared, KeyLimits(tpm=100), clock)
    _admitted(await limits.acquire("k", None, 500))  # full bucket: admitted, 400 in debt
    assert _rejected(await limits.acquire("k", None, 500)).retry_after == pytest.approx(300.0)
    clock.advance(300)
    _admitted(await limits.acquire("k", None, 500))


async def test_stream_leases_count_expire_and_are_renewed(shared: SharedRedis) -> None:
    clock = FakeClock()
    a = _limits(shared, KeyLimits(max_streams=2), clock, ttl=3.0, name="a")
    b = _limits(shared, KeyLimits(max_streams=2), clock, ttl=3.0, name="b")
    held = _admitted(await a.acquire("k", None, 0))
    _admitted(await b.acquire("k", None, 0))
    rejection = _rejected(await a.acquire("k", None, 0))
    assert (rejection.code, rejection.status, rejection.retry_after_header) == (
        "too_many_streams",
        429,
        "1",
    )
    assert "limit 2" in rejection.message
    _admitted(await a.acquire("other", None, 0))  # per key
    clock.advance(2.0)
    assert await a.leases.renew() == 2  # a renews both of its leases in one pipeline
    clock.advance(2.0)  # b's lease (never renewed: "killed") is past its TTL, a's are not
    again = _admitted(await b.acquire("k", None, 0))
    _rejected(await b.acquire("k", None, 0))
    a.release(held)
    a.release(held)  # idempotent
    await a.leases.flush()
    assert a.leases.held() == 1
    b.release(again)
    await b.leases.flush()
    _admitted(await b.acquire("k", None, 0))
    members = await shared.client.zrange(a.leases.key("k"), 0, -1)
    assert len(members) == 1


async def test_a_start_overlaps_its_decision_only_while_the_key_has_room(
    shared: SharedRedis,
) -> None:
    clock, ticks = FakeClock(), FakeClock()
    limits = SharedLimits(
        KeyLimits(rpm=20, tpm=1000, max_streams=10),
        Leases(shared, instance_id="a", clock=clock),
        clock=clock,
        monotonic=ticks,
    )
    assert not limits.overlap("k", None, 10)  # nothing known of the key yet: wait for it
    _admitted(await limits.acquire("k", None, 10))  # left: 19 requests, 990 tokens, 1 stream
    # each overlapped start takes its share of the room; the streams (9 of 10 at most, the
    # margin's tenth kept) run out first: 8 more overlap, the ninth waits for its decision
    assert [limits.overlap("k", None, 10) for _ in range(9)] == [True] * 8 + [False]
    _admitted(await limits.acquire("k", None, 10))  # Redis's count again: 2 streams open
    assert limits.overlap("k", None, 10)
    assert not limits.overlap("k", None, 900)  # 980 left: 80 after it, under the tenth
    assert not limits.overlap("k", KeyLimits(rpm=30), 10)  # other limits than last decided
    ticks.advance(ROOM_AGE + 0.1)
    assert not limits.overlap("k", None, 10)  # too old to tell
    _admitted(await limits.acquire("k", None, 10))
    assert limits.overlap("k", None, 10)
    _rejected(await limits.acquire("k", None, 5000))  # above what the bucket holds now
    assert not limits.overlap("k", None, 10)  # a refusal forgets the room
    _admitted(await limits.acquire("k", None, 10))
    shared.healthy = False  # the last call to Redis failed: every start waits
    assert not limits.overlap("k", None, 10)
    shared.healthy = True
    assert limits.overlap("k", None, 10)
    few = SharedLimits(KeyLimits(rpm=5), Leases(shared, instance_id="b", clock=clock), clock=clock)
    _admitted(await few.acquire("f", None, 0))  # 4 of 5 left; one (at least) is kept
    assert [few.overlap("f", None, 0) for _ in range(4)] == [True, True, True, False]
    unlimited = _limits(shared, KeyLimits(), clock, name="c")
    _admitted(await unlimited.acquire("u", None, 10))  # decided without a round trip
    assert not unlimited.overlap("u", None, 10)


async def test_unlimited_keys_touch_nothing(shared: SharedRedis) -> None:
    limits = _limits(shared, KeyLimits(), FakeClock())
    admission = _admitted(await limits.acquire("k", None, 10_000))
    assert admission.reserved_tokens is None
    limits.settle(admission, 5)
    limits.release(admission)
    assert await shared.client.keys(f"{shared.prefix}*") == []


async def test_idle_state_expires_once_the_buckets_would_be_full(shared: SharedRedis) -> None:
    limits = _limits(shared, KeyLimits(rpm=60, tpm=600), FakeClock())
    _admitted(await limits.acquire("k", None, 6))
    ttl = await shared.client.pttl(limits.limits_key("k"))
    assert 1000 < ttl <= 3000  # one request of 60/min refills in 1 s (+1 s margin)


async def test_the_script_is_loaded_again_after_redis_forgot_it(shared: SharedRedis) -> None:
    limits = _limits(shared, KeyLimits(rpm=5), FakeClock())
    _admitted(await limits.acquire("k", None, 0))
    await shared.client.script_flush()
    _admitted(await limits.acquire("k", None, 0))


async def test_a_redis_that_went_away_is_503_never_a_local_fallback() -> None:
    with redis_server() as service:  # a Redis of its own, stopped while we use it
        redis = SharedRedis(service.url, timeout=0.3)
        await redis.open()
        limits = _limits(redis, KeyLimits(rpm=5), FakeClock())
        _admitted(await limits.acquire("k", None, 0))
    rejection = _rejected(await limits.acquire("k", None, 0))
    assert (rejection.status, rejection.code, rejection.retry_after_header) == (
        503,
        "shared_state_unavailable",
        "1",
    )
    assert not redis.healthy
    await redis.close()


def test_docs_errors_md_shows_the_shared_state_row() -> None:
    rejection = unavailable()
    text = (Path(__file__).resolve().parents[2] / "docs" / "ERRORS.md").read_text("utf-8")
    [row] = [line for line in text.splitlines() if "shared state (Redis" in line]
    cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
    assert cells[1] == str(rejection.status)
    assert cells[2] == f"`{rejection.code}`, with `Retry-After: {rejection.retry_after_header}`"


async def test_liveness_key_renewed_with_the_leases_and_live_instances(
    shared: SharedRedis,
) -> None:
    a = Leases(shared, instance_id="a", ttl=3.0)
    b = Leases(shared, instance_id="b", ttl=3.0)
    assert await live_instances(shared, ["a", "b", "c"]) == set()
    assert await a.renew() == 0  # no lease held: the liveness key is renewed all the same
    await b.renew()
    assert await live_instances(shared, ["a", "b", "c", "a"]) == {"a", "b"}
    assert await live_instances(shared, []) == set()
    assert 2000 < await shared.client.pttl(a.liveness_key) <= 3000
    b.start()
    await b.aclose()  # a graceful stop: gone at once
    assert await live_instances(shared, ["a", "b"]) == {"a"}
    await shared.client.pexpire(a.liveness_key, 1)  # a kill -9: no renewal, the key lapses
    await asyncio.sleep(0.05)
    assert await live_instances(shared, ["a"]) == set()
