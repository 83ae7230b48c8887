"""Per-key limits: RPM as a token bucket, TPM through the shared sliding-window core,
concurrent streams, state eviction. Time is a FakeClock: a minute passes in microseconds."""

from __future__ import annotations

import pytest

from wenxin_stream._clock import FakeClock
from wenxin_stream.server._limits import (
    IDLE_SECONDS,
    Admission,
    KeyLimiter,
    KeyLimits,
    Rejection,
)

NONE = KeyLimits()


def _admitted(result: Admission | Rejection) -> Admission:
    assert isinstance(result, Admission), result
    return result


def _rejected(result: Admission | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


def test_limits_validation_and_defaults() -> None:
    for bad in ({"rpm": 0}, {"tpm": -5}, {"max_streams": True}, {"rpm": 1.5}):
        with pytest.raises(ValueError, match="positive integer"):
            KeyLimits(**bad)
    defaults = KeyLimits(rpm=60, tpm=1000, max_streams=4)
    assert KeyLimits(tpm=50).over(defaults) == KeyLimits(rpm=60, tpm=50, max_streams=4)
    assert NONE.over(defaults) == defaults


def test_unlimited_keys_are_always_admitted() -> None:
    limiter = KeyLimiter(NONE, clock=FakeClock())
    admissions = [_admitted(limiter.admit("k", None, 10_000)) for _ in range(1000)]
    assert limiter.streams("k") == 1000
    assert admissions[0].reserved_tokens is None
    for admission in admissions:
        limiter.settle(admission, 5)  # no rate limit: nothing to settle, no error
        limiter.release(admission)
    assert limiter.streams("k") == 0


def test_concurrent_stream_limit() -> None:
    limiter = KeyLimiter(KeyLimits(max_streams=2), clock=FakeClock())
    first = _admitted(limiter.admit("k", None, 1))
    _admitted(limiter.admit("k", None, 1))
    rejection = _rejected(limiter.admit("k", None, 1))
    assert rejection.code == "too_many_streams"
    assert "limit 2" in rejection.message
    assert rejection.retry_after_header == "1"
    _admitted(limiter.admit("other", None, 1))  # per key
    limiter.release(first)
    limiter.release(first)  # idempotent: frees one slot, not two
    assert first.released
    assert limiter.streams("k") == 1
    _admitted(limiter.admit("k", None, 1))
    _rejected(limiter.admit("k", None, 1))


def test_key_limits_override_defaults() -> None:
    limiter = KeyLimiter(KeyLimits(max_streams=1), clock=FakeClock())
    own = KeyLimits(max_streams=3)
    for _ in range(3):
        _admitted(limiter.admit("big", own, 1))
    _rejected(limiter.admit("big", own, 1))
    _admitted(limiter.admit("small", None, 1))
    _rejected(limiter.admit("small", KeyLimits(rpm=100), 1))  # max_streams from the defaults


def test_rpm_is_a_bucket_exactly_rpm_at_once_then_429_until_one_refills() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(KeyLimits(rpm=6), clock=clock)
    for _ in range(6):  # a quiet key may spend its whole minute at once
        limiter.release(_admitted(limiter.admit("k", None, 0)))
    rejection = _rejected(limiter.admit("k", None, 0))
    assert rejection.code == "rate_limited"
    assert "6 requests/min" in rejection.message
    assert rejection.retry_after == pytest.approx(10.0)  # one request refills in 60/6 s
    assert rejection.retry_after_header == "10"
    clock.advance(9.9)
    assert _rejected(limiter.admit("k", None, 0)).retry_after == pytest.approx(0.1)
    assert _rejected(limiter.admit("k", None, 0)).retry_after_header == "1"  # at least 1
    clock.advance(0.1)
    limiter.release(_admitted(limiter.admit("k", None, 0)))  # exactly when it said
    assert _rejected(limiter.admit("k", None, 0)).retry_after == pytest.approx(10.0)
    clock.advance(25)  # 2.5 requests refilled: two pass, the third waits for the half
    for _ in range(2):
        limiter.release(_admitted(limiter.admit("k", None, 0)))
    assert _rejected(limiter.admit("k", None, 0)).retry_after == pytest.approx(5.0)
    clock.advance(3600)  # refilling stops at the capacity: one minute's worth, not an hour's
    for _ in range(6):
        limiter.release(_admitted(limiter.admit("k", None, 0)))
    _rejected(limiter.admit("k", None, 0))


def test_rpm_over_a_long_stretch_is_rpm_per_minute_plus_one_burst() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(KeyLimits(rpm=60), clock=clock)
    admitted = 0
    for _ in range(2400):  # ten minutes of a request every 0.25 s (t = 0 … 599.75)
        result = limiter.admit("k", None, 0)
        if isinstance(result, Admission):
            admitted += 1
            limiter.release(result)
        clock.advance(0.25)
    assert admitted == 60 + 599  # the full bucket, then one a second refilled over 599.75 s


def test_a_refused_request_spends_nothing() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(KeyLimits(rpm=2, tpm=100), clock=clock)
    first = _admitted(limiter.admit("k", None, 100))  # the minute's tokens: 1 request spent
    for _ in range(5):  # refused for tokens: the request bucket keeps its one request
        rejection = _rejected(limiter.admit("k", None, 10))
        assert 59 < rejection.retry_after <= 60
    limiter.settle(first, 50)
    limiter.release(first)
    second = _admitted(limiter.admit("k", None, 10))  # the bucket still had its second request
    limiter.release(second)
    rejection = _rejected(limiter.admit("k", None, 10))  # now the bucket is empty
    assert rejection.retry_after == pytest.approx(30.0)
    clock.advance(30)
    _admitted(limiter.admit("k", None, 10))


def test_a_changed_rpm_resizes_the_bucket_without_refilling_it() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(NONE, clock=clock)
    for _ in range(3):
        limiter.release(_admitted(limiter.admit("k", KeyLimits(rpm=4), 0)))
    limiter.release(_admitted(limiter.admit("k", KeyLimits(rpm=60), 0)))  # 1 left of 4: spent
    assert _rejected(limiter.admit("k", KeyLimits(rpm=60), 0)).retry_after == pytest.approx(1.0)
    clock.advance(1)  # the new rate: one a second
    # a new token limit leaves the request bucket as it was (just refilled by one)
    limiter.release(_admitted(limiter.admit("k", KeyLimits(rpm=60, tpm=10**6), 0)))
    _rejected(limiter.admit("k", KeyLimits(rpm=60, tpm=10**6), 0))
    limiter.release(_admitted(limiter.admit("k", KeyLimits(tpm=10**6), 0)))  # no RPM any more
    limiter.release(_admitted(limiter.admit("k", KeyLimits(tpm=10**6), 0)))
    limiter.release(_admitted(limiter.admit("k", KeyLimits(rpm=1), 0)))  # a new, full bucket
    assert _rejected(limiter.admit("k", KeyLimits(rpm=1), 0)).retry_after == pytest.approx(60.0)
    clock.advance(60)
    limiter.release(_admitted(limiter.admit("k", KeyLimits(rpm=1), 0)))


def test_tpm_counts_estimates_then_actual_usage() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(KeyLimits(tpm=1000), clock=clock)
    first = _admitted(limiter.admit("k", None, 600))
    assert first.reserved_tokens == 600
    rejection = _rejected(limiter.admit("k", None, 600))
    assert rejection.code == "rate_limited"
    assert "1000 tokens/min" in rejection.message
    assert 59 < rejection.retry_after <= 60
    limiter.settle(first, 100)  # the answer was short: the budget comes back
    assert first.reserved_tokens == 100
    second = _admitted(limiter.admit("k", None, 600))
    limiter.release(second)
    limiter.settle(second, 900)  # settling after release is fine (usage arrives last)
    _rejected(limiter.admit("k", None, 600))
    clock.advance(60)
    _admitted(limiter.admit("k", None, 600))


def test_rejection_for_streams_does_not_spend_the_rate() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(KeyLimits(rpm=6, max_streams=1), clock=clock)
    held = _admitted(limiter.admit("k", None, 0))
    for _ in range(20):
        assert _rejected(limiter.admit("k", None, 0)).code == "too_many_streams"
    limiter.release(held)
    for _ in range(5):  # the bucket held 6 requests and the first spent one
        limiter.release(_admitted(limiter.admit("k", None, 0)))
    _rejected(limiter.admit("k", None, 0))


def test_changed_limits_keep_the_open_streams() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(NONE, clock=clock)
    held = _admitted(limiter.admit("k", KeyLimits(max_streams=5, rpm=600), 0))
    tighter = KeyLimits(max_streams=1, rpm=600)
    _rejected(limiter.admit("k", tighter, 0))  # the open stream still counts
    limiter.release(held)
    assert limiter.streams("k") == 0
    _admitted(limiter.admit("k", tighter, 0))


def test_idle_keys_are_evicted_busy_ones_kept() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(KeyLimits(rpm=600), clock=clock)
    for i in range(100):
        limiter.release(_admitted(limiter.admit(f"idle{i}", None, 0)))
    busy = _admitted(limiter.admit("busy", None, 0))
    assert len(limiter) == 101
    clock.advance(IDLE_SECONDS + 1)
    _admitted(limiter.admit("new", None, 0))  # triggers the sweep
    assert len(limiter) == 2
    assert limiter.streams("busy") == 1
    limiter.release(busy)
    assert limiter.streams("busy") == 0
    assert limiter.streams("never-seen") == 0
    assert limiter.defaults == KeyLimits(rpm=600)
    assert "released=True" in repr(busy)
