"""Client-side rate limits on a fake clock: pacing, token budgets, server headers, 429 pauses,
bounded waits, fairness under threads and tasks, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wenxin_stream._clock import FakeClock
from wenxin_stream._exceptions import (
    APIConnectionError,
    ClientRateLimitTimeout,
    WenxinError,
    api_error_from_v1,
    api_error_from_v2,
    is_retryable,
)
from wenxin_stream._ratelimit import RateLimiter, RateLimits, Reservation, rate_limit_scope
from wenxin_stream._ratelimit_async import AsyncRateLimiter
from wenxin_stream._ratelimit_sync import SyncRateLimiter

T0 = 1_000_000.0
FOREVER = 1e9


def most_in_any_window(times: Iterable[float], period: float) -> int:
    """The largest number of ``times`` inside any half-open interval ``[t, t + period)``."""
    ordered = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j < len(ordered) and ordered[j] < start + period:
            j += 1
        best = max(best, j - i)
    return best


def sync_limiter(limits: RateLimits, **kwargs: float) -> tuple[SyncRateLimiter, FakeClock]:
    clock = FakeClock(T0)
    return SyncRateLimiter(limits, clock=clock, sleep=clock.sleep, **kwargs), clock


# --- pacing ------------------------------------------------------------------------------------


def test_no_limits_never_waits() -> None:
    limiter, clock = sync_limiter(RateLimits())
    for _ in range(1000):
        res = limiter.acquire(10_000)
        assert res.state == "granted"
    assert clock.sleeps == []
    assert clock() == T0


def test_qps_paces_requests() -> None:
    limiter, clock = sync_limiter(RateLimits(qps=2), max_wait=FOREVER)
    starts = [limiter.acquire().start_at - T0 for _ in range(6)]
    assert starts == [0, 0, 1, 1, 2, 2]
    assert clock() == T0 + 2


def test_qps_below_one_spaces_requests() -> None:
    limiter, _ = sync_limiter(RateLimits(qps=0.5), max_wait=FOREVER)
    assert [limiter.acquire().start_at - T0 for _ in range(3)] == [0, 2, 4]


def test_fractional_qps_above_one_rounds_down() -> None:
    limiter, _ = sync_limiter(RateLimits(qps=2.5), max_wait=FOREVER)
    assert [limiter.acquire().start_at - T0 for _ in range(4)] == [0, 0, 1, 1]


def test_rpm_allows_a_sixth_as_a_burst_then_paces() -> None:
    limiter, _ = sync_limiter(RateLimits(rpm=60), max_wait=FOREVER)
    starts = [limiter.acquire().start_at - T0 for _ in range(61)]
    for burst in range(6):
        assert starts[burst * 10 : burst * 10 + 10] == [burst * 10.0] * 10
    assert starts[60] == 60.0
    assert most_in_any_window(starts, 60) == 60
    assert most_in_any_window(starts, 10) == 10


def test_requests_arriving_slowly_do_not_wait() -> None:
    limiter, clock = sync_limiter(RateLimits(rpm=6))
    for _ in range(5):
        assert limiter.acquire().start_at == clock()
        clock.advance(10)
    assert clock.sleeps == []


# --- bounded waiting ---------------------------------------------------------------------------


def test_wait_longer_than_max_wait_raises_at_once_and_records_nothing() -> None:
    limiter, clock = sync_limiter(RateLimits(rpm=6), max_wait=5)
    limiter.acquire()
    with pytest.raises(ClientRateLimitTimeout) as info:
        limiter.acquire()
    assert info.value.wait == pytest.approx(10)
    assert info.value.max_wait == 5
    assert clock.sleeps == []  # raised without waiting
    # The refused caller took no slot: a patient caller gets the next one.
    assert limiter.acquire(max_wait=20).start_at == T0 + 10


def test_timeout_is_a_local_non_retryable_error() -> None:
    error = ClientRateLimitTimeout(12.0, 5.0)
    assert isinstance(error, WenxinError)
    assert not is_retryable(error)
    assert "12" in str(error)
    assert "max_wait=5" in str(error)


def test_rescheduling_past_the_deadline_raises_when_the_waiter_wakes() -> None:
    core = RateLimiter(RateLimits(qps=1), max_wait=3)
    core.reserve(now=T0)
    waiting = core.reserve(now=T0)
    assert waiting.start_at == T0 + 1
    core.on_rate_limited(10, now=T0)
    assert waiting.start_at == T0 + 10
    with pytest.raises(ClientRateLimitTimeout):
        core.poll(waiting, T0 + 1)
    assert waiting.state == "cancelled"
    with pytest.raises(ValueError, match="cancelled"):
        core.poll(waiting, T0 + 11)


def test_a_woken_waiter_that_was_moved_sleeps_again() -> None:
    limiter, clock = sync_limiter(RateLimits(qps=1), max_wait=FOREVER)
    limiter.acquire()
    moved = threading.Event()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if not moved.is_set():
            moved.set()
            limiter.on_rate_limited(5)  # arrives while the waiter sleeps

    limiter._sleep = sleep
    res = limiter.acquire()
    assert res.start_at == T0 + 1 + 5
    assert clock.sleeps == [1, 5]


# --- tokens per minute -------------------------------------------------------------------------


def test_tpm_reserve_and_settle() -> None:
    core = RateLimiter(RateLimits(tpm=1000), max_wait=FOREVER)
    first = core.reserve(600, now=T0)
    second = core.reserve(600, now=T0)
    assert first.state == "granted"
    assert second.start_at == T0 + 60  # must wait for the first to age out
    core.settle(first, 300, now=T0 + 1)  # the server used less than estimated
    assert second.start_at == T0 + 1
    assert core.poll(second, T0 + 1) == 0
    assert second.state == "granted"
    assert first.state == "settled"
    assert first.tokens == 300


def test_settle_above_the_estimate_pushes_waiters_back() -> None:
    core = RateLimiter(RateLimits(tpm=1000), max_wait=FOREVER)
    first = core.reserve(100, now=T0)
    core.reserve(100, now=T0 + 10)
    third = core.reserve(700, now=T0 + 20)
    assert third.start_at == T0 + 20
    core.settle(third, 800, now=T0 + 21)  # 100 + 100 + 800: the budget is spent
    waiter = core.reserve(100, now=T0 + 22)
    assert waiter.start_at == T0 + 60  # the first entry has to age out
    core.settle(first, 0, now=T0 + 23)
    assert waiter.start_at == T0 + 23


def test_release_gives_the_tokens_back_but_the_request_stays_counted() -> None:
    core = RateLimiter(RateLimits(rpm=6, tpm=1000), max_wait=FOREVER)
    res = core.reserve(1000, now=T0)
    core.release(res, now=T0)
    assert res.state == "released"
    nxt = core.reserve(1000, now=T0)
    assert nxt.start_at == T0 + 10  # tokens free, but the burst window has one request per 10 s
    core.release(res, now=T0)  # idempotent


def test_release_of_a_waiting_reservation_cancels_it() -> None:
    core = RateLimiter(RateLimits(qps=1), max_wait=FOREVER)
    core.reserve(now=T0)
    waiting = core.reserve(now=T0)
    later = core.reserve(now=T0)
    assert later.start_at == T0 + 2
    core.release(waiting, now=T0)
    assert waiting.state == "cancelled"
    assert later.start_at == T0 + 1


def test_estimate_larger_than_the_budget_waits_for_an_empty_window() -> None:
    core = RateLimiter(RateLimits(tpm=1000), max_wait=FOREVER)
    core.reserve(10, now=T0)
    huge = core.reserve(5000, now=T0 + 5)
    assert huge.start_at == T0 + 60
    assert core.reserve(10, now=T0 + 5).start_at == T0 + 120  # huge fills the window


def test_settle_split_into_input_and_output() -> None:
    core = RateLimiter(RateLimits(input_tpm=1000, output_tpm=500), max_wait=FOREVER)
    res = core.reserve(800, now=T0, input_tokens=300)  # 300 in, 500 out
    assert (res.tokens, res.input_tokens) == (800, 300)
    assert core.reserve(100, now=T0, input_tokens=100).start_at == T0  # 0 output
    blocked = core.reserve(100, now=T0, input_tokens=50)  # 50 output tokens do not fit
    assert blocked.start_at == T0 + 60
    core.settle(res, 350, now=T0 + 1, input_tokens=300, output_tokens=50)
    assert blocked.start_at == T0 + 1
    # Defaults: the reserved prompt part, the rest is output.
    other = core.reserve(200, now=T0 + 2, input_tokens=150)
    core.poll(other, T0 + 2)
    core.settle(other, 100, now=T0 + 2)
    assert (other.tokens, other.input_tokens) == (100, 100)


def test_settle_rules() -> None:
    core = RateLimiter(RateLimits(qps=1), max_wait=FOREVER)
    core.reserve(now=T0)
    waiting = core.reserve(5, now=T0)
    with pytest.raises(ValueError, match="granted"):
        core.settle(waiting, 5, now=T0)
    core.cancel(waiting, now=T0)
    core.settle(waiting, 5, now=T0)  # ignored
    assert waiting.state == "cancelled"
    with pytest.raises(ValueError, match="tokens"):
        core.reserve(-1, now=T0)


def test_settle_after_the_entry_aged_out() -> None:
    core = RateLimiter(RateLimits(tpm=100), max_wait=FOREVER)
    res = core.reserve(100, now=T0)
    core.reserve(0, now=T0 + 61)  # prunes the aged-out entry
    core.settle(res, 100_000, now=T0 + 62)  # outside every window now: changes nothing
    assert core.reserve(100, now=T0 + 62).start_at == T0 + 62


# --- server headers and 429s -------------------------------------------------------------------


def test_header_limit_becomes_ours_when_none_configured() -> None:
    limiter, _ = sync_limiter(RateLimits())
    limiter.update_from_headers(
        {
            "X-Ratelimit-Limit-Requests": "120",
            "X-Ratelimit-Limit-Tokens": "30000",
            "x-ratelimit-limit-input-tokens": " 20000 ",
            "X-RATELIMIT-LIMIT-OUTPUT-TOKENS": "8000",
        }
    )
    assert limiter.limits == RateLimits(rpm=120, tpm=30000, input_tpm=20000, output_tpm=8000)


async def test_the_async_shell_adapts_to_headers_too() -> None:
    clock = FakeClock()
    limiter = AsyncRateLimiter(RateLimits(rpm=300), clock=clock, sleep=clock.asleep)
    limiter.update_from_headers({"X-Ratelimit-Limit-Requests": "120"})
    assert limiter.limits == RateLimits(rpm=120)


def test_header_limit_lowers_but_never_raises_the_configured_one() -> None:
    limiter, _ = sync_limiter(RateLimits(rpm=300, tpm=100_000))
    limiter.update_from_headers({"X-Ratelimit-Limit-Requests": "120"})
    assert limiter.limits.rpm == 120
    limiter.update_from_headers({"X-Ratelimit-Limit-Requests": "200"})  # quota raised
    assert limiter.limits.rpm == 200
    limiter.update_from_headers({"X-Ratelimit-Limit-Requests": "1000"})
    assert limiter.limits.rpm == 300
    assert limiter.limits.tpm == 100_000


def test_header_rpm_applies_on_top_of_a_configured_qps() -> None:
    limiter, _ = sync_limiter(RateLimits(qps=5), max_wait=FOREVER)
    limiter.update_from_headers({"X-Ratelimit-Limit-Requests": "6"})
    assert limiter.limits == RateLimits(qps=5, rpm=6)
    assert [limiter.acquire().start_at - T0 for _ in range(3)] == [0, 10, 20]


@pytest.mark.parametrize("value", ["", "abc", "-5", "nan", "inf"])
def test_garbage_headers_are_ignored(value: str) -> None:
    limiter, _ = sync_limiter(RateLimits(rpm=300))
    limiter.update_from_headers(
        {"X-Ratelimit-Limit-Requests": value, "X-Ratelimit-Remaining-Requests": value}
    )
    assert limiter.limits.rpm == 300
    assert limiter.acquire().start_at == T0


def test_a_zero_limit_header_is_ignored() -> None:
    limiter, _ = sync_limiter(RateLimits(rpm=300))
    limiter.update_from_headers({"X-Ratelimit-Limit-Requests": "0"})
    assert limiter.limits.rpm == 300


def test_remaining_zero_waits_until_our_oldest_request_ages_out() -> None:
    limiter, clock = sync_limiter(RateLimits(rpm=300), max_wait=FOREVER)
    limiter.acquire()
    clock.advance(20)
    limiter.acquire()
    limiter.update_from_headers({"X-Ratelimit-Remaining-Requests": "0"})
    assert limiter.acquire().start_at == T0 + 60


def test_headers_repeating_the_limits_in_force_move_no_one_but_a_spent_budget_does() -> None:
    core = RateLimiter(RateLimits(rpm=6), max_wait=FOREVER)
    core.reserve(now=T0)
    waiting = core.reserve(now=T0)  # one request per 10 s in a burst
    assert waiting.start_at == T0 + 10
    same = {"X-Ratelimit-Limit-Requests": "6", "X-Ratelimit-Remaining-Requests": "4"}
    for _ in range(2):
        core.update_from_headers(same, now=T0 + 1)
        assert (core.limits.rpm, waiting.start_at) == (6, T0 + 10)
    spent = {"X-Ratelimit-Limit-Requests": "6", "X-Ratelimit-Remaining-Requests": "0"}
    core.update_from_headers(spent, now=T0 + 1)  # the same limit, and the budget is spent
    assert waiting.start_at == T0 + 60  # until our oldest request leaves the minute


@pytest.mark.parametrize(
    ("remaining", "spent"),
    [("0", True), ("0.5", True), (" 0 ", True), ("00", True), ("1e-3", True),
     ("\u0660", True),  # an Arabic-Indic zero: float() reads it, as it does any decimal digit
     ("1", False), ("12", False), (" 7", False), ("10.0", False), ("007", False),
     ("\u0661", False), ("", False), ("-1", False)],
)  # fmt: skip
def test_a_spent_budget_is_any_remaining_below_one_however_it_is_written(
    remaining: str, spent: bool
) -> None:
    """The shortcut for plain whole numbers (not parsed) agrees with the parse."""
    core = RateLimiter(RateLimits(), max_wait=FOREVER)
    core.update_from_headers({"X-Ratelimit-Remaining-Requests": remaining}, now=T0)
    assert (core.reserve(now=T0).start_at > T0) is spent


def test_a_limit_header_is_read_again_whenever_its_text_changes() -> None:
    core = RateLimiter(RateLimits(), max_wait=FOREVER)
    for text, rpm in [("600", 600), ("600", 600), ("60", 60), ("junk", 60), ("600.0", 600),
                      ("600", 600), ("0", 600), ("6", 6)]:  # fmt: skip
        core.update_from_headers({"X-Ratelimit-Limit-Requests": text}, now=T0)
        assert core.limits.rpm == rpm, text


def test_remaining_zero_without_local_history_waits_a_sixth_of_the_window() -> None:
    limiter, _ = sync_limiter(RateLimits(), max_wait=FOREVER)
    limiter.update_from_headers(
        {"X-Ratelimit-Limit-Requests": "300", "X-Ratelimit-Remaining-Requests": "0"}
    )
    assert limiter.acquire().start_at == T0 + 10


def test_remaining_tokens_zero_blocks_token_use() -> None:
    limiter, clock = sync_limiter(RateLimits(), max_wait=FOREVER)
    limiter.update_from_headers({"X-Ratelimit-Remaining-Tokens": "0"})
    assert limiter.acquire(100).start_at == T0 + 10
    clock.advance(100)
    limiter.update_from_headers({"X-Ratelimit-Remaining-Output-Tokens": "0"})
    now = clock()
    assert limiter.acquire(100).start_at == now + 10
    limiter.update_from_headers({"X-Ratelimit-Remaining-Input-Tokens": "12"})  # not 0: no block
    now = clock()
    assert limiter.acquire(100).start_at == now


def test_on_rate_limited_pauses_everyone() -> None:
    limiter, clock = sync_limiter(RateLimits(), max_wait=FOREVER)
    limiter.on_rate_limited(5)
    assert limiter.acquire().start_at == T0 + 5
    assert limiter.acquire().start_at == T0 + 5
    limiter.on_rate_limited()  # no Retry-After: the default pause
    now = clock()
    assert limiter.acquire().start_at == now + 1
    limiter.on_rate_limited(float("nan"))
    now = clock()
    assert limiter.acquire().start_at == now + 1


def test_on_rate_limited_pushes_back_waiting_callers() -> None:
    core = RateLimiter(RateLimits(qps=1), max_wait=FOREVER)
    core.reserve(now=T0)
    first = core.reserve(now=T0)
    second = core.reserve(now=T0)
    core.on_rate_limited(10, now=T0 + 0.5)
    assert (first.start_at, second.start_at) == (T0 + 10.5, T0 + 11.5)


def test_on_rate_limited_with_a_scope_blocks_that_budget() -> None:
    core = RateLimiter(RateLimits(tpm=10_000), max_wait=FOREVER)
    core.reserve(100, now=T0)
    core.on_rate_limited(now=T0 + 30, scope="tokens")
    assert core.reserve(100, now=T0 + 30).start_at == T0 + 60  # oldest entry ages out
    core2 = RateLimiter(RateLimits(rpm=300), max_wait=FOREVER)
    core2.on_rate_limited(now=T0, scope="requests")
    assert core2.reserve(now=T0).start_at == T0 + 10
    core3 = RateLimiter(max_wait=FOREVER)
    core3.on_rate_limited(now=T0, scope="input_tokens")
    assert core3.reserve(10, now=T0).start_at == T0 + 10
    core3.on_rate_limited(2.0, now=T0 + 20, scope="output_tokens")
    assert core3.reserve(10, now=T0 + 20).start_at == T0 + 30


def test_delay_says_how_long_a_caller_would_wait_and_records_nothing() -> None:
    core = RateLimiter(RateLimits(rpm=6, tpm=1000), max_wait=FOREVER)
    assert core.delay(now=T0) == 0.0
    core.reserve(now=T0)  # the burst window holds one request per 10 s
    assert core.delay(now=T0 + 4) == 6.0
    assert core.delay(now=T0 + 4) == 6.0  # asking twice changes nothing
    assert core.reserve(now=T0 + 4).start_at == T0 + 10
    assert core.delay(now=T0 + 4) == 16.0  # behind the waiting caller
    assert core.delay(5000, now=T0 + 30) == 0.0  # more tokens than the budget: an empty window
    # the oldest request ages out at T0+60: the waiting caller moves there, the next one is
    # a burst window (10 s) later
    core.on_rate_limited(now=T0 + 30, scope="requests")
    assert core.delay(now=T0 + 30) == 40.0
    paused = RateLimiter(max_wait=FOREVER)
    paused.on_rate_limited(7.5, now=T0)
    assert paused.delay(now=T0 + 0.5) == 7.0
    assert paused.delay(now=T0 + 9) == 0.0


async def test_the_shells_and_the_client_tell_the_delay() -> None:
    clock = FakeClock(T0)
    shell = AsyncRateLimiter(RateLimits(qps=1), clock=clock, sleep=clock.asleep)
    await shell.acquire()
    assert shell.delay() == 1.0
    sync, _ = sync_limiter(RateLimits(qps=1))
    sync.acquire()
    assert sync.delay() == 1.0


@pytest.mark.parametrize(
    ("error", "scope"),
    [
        (api_error_from_v1({"error_code": 336501, "error_msg": "rpm"}), "requests"),
        (api_error_from_v1({"error_code": 336502, "error_msg": "tpm"}), "tokens"),
        (api_error_from_v1({"error_code": 336503, "error_msg": "x"}), "input_tokens"),
        (api_error_from_v1({"error_code": 336504, "error_msg": "x"}), "output_tokens"),
        (api_error_from_v1({"error_code": 18, "error_msg": "qps"}), None),
        (api_error_from_v2(429, {"error": {"code": "rpm_rate_limit_exceeded"}}), "requests"),
        (api_error_from_v2(429, {"error": {"code": "tpm_rate_limit_exceeded"}}), "tokens"),
        (api_error_from_v2(429, {"error": {"code": "cluster_tpm_rate_limit_exceeded"}}), "tokens"),
        (
            api_error_from_v2(429, {"error": {"code": "input_tpm_rate_limit_exceeded"}}),
            "input_tokens",
        ),
        (
            api_error_from_v2(429, {"error": {"code": "output_tpm_rate_limit_exceeded"}}),
            "output_tokens",
        ),
        (api_error_from_v2(429, {"error": {"code": "user_rate_limit_exceeded"}}), None),
        (api_error_from_v2(429, b""), None),
        (APIConnectionError(), None),
    ],
    ids=repr,
)
def test_rate_limit_scope(error: BaseException, scope: str | None) -> None:
    assert rate_limit_scope(error) == scope


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"qps": 0}, {"rpm": -1}, {"tpm": float("inf")}, {"rpm": 1.5}, {"qps": True}],
)
def test_invalid_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimits(**kwargs)  # type: ignore[arg-type]


def test_qps_and_rpm_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="not both"):
        RateLimiter(RateLimits(qps=1, rpm=60))


@pytest.mark.parametrize("kwargs", [{"max_wait": -1.0}, {"default_pause": float("nan")}])
def test_invalid_waits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_poll_and_cancel_of_a_granted_reservation() -> None:
    core = RateLimiter()
    res = core.reserve(now=T0)
    assert core.poll(res, T0) == 0
    core.cancel(res, now=T0)  # no effect once granted
    assert res.state == "granted"


# --- the invariant, under random traffic -------------------------------------------------------

ops = st.lists(
    st.tuples(
        st.floats(0, 30),  # time since the previous operation
        st.integers(0, 400),  # estimate
        st.sampled_from(["reserve", "reserve", "reserve", "cancel", "pause", "header"]),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops, rpm=st.integers(1, 40), tpm=st.integers(100, 2000))
def test_no_window_ever_holds_more_than_its_limit(
    ops: list[tuple[float, int, str]], rpm: int, tpm: int
) -> None:
    core = RateLimiter(RateLimits(rpm=rpm, tpm=tpm), max_wait=120)
    now = T0
    live: list[Reservation] = []
    for gap, estimate, op in ops:
        now += gap
        if op == "cancel" and live:
            core.cancel(live[estimate % len(live)], now=now)
        elif op == "pause":
            core.on_rate_limited(gap / 10, now=now)
        elif op == "header":
            core.update_from_headers({"X-Ratelimit-Limit-Requests": str(rpm + 5)}, now=now)
        else:
            with contextlib.suppress(ClientRateLimitTimeout):
                live.append(core.reserve(min(estimate, tpm), now=now))
        for res in live:
            if res.state == "waiting":
                with contextlib.suppress(ClientRateLimitTimeout):
                    core.poll(res, now)
    kept = [r for r in live if r.state != "cancelled"]
    starts = [r.start_at for r in kept]
    assert most_in_any_window(starts, 60) <= rpm
    assert most_in_any_window(starts, 10) <= -(-rpm // 6)
    for r in kept:  # token budget, checked at each start
        in_window = [o.tokens for o in kept if r.start_at - 60 < o.start_at <= r.start_at]
        assert sum(in_window) <= tpm
    assert [r.start_at for r in kept] == sorted(r.start_at for r in kept)  # FIFO


# --- threads and tasks -------------------------------------------------------------------------


@pytest.fixture
def eager_thread_switching() -> Iterator[None]:
    """Switch threads as often as possible, so that races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("eager_thread_switching")
def test_threads_never_exceed_the_limit_and_none_starves() -> None:
    limiter, clock = sync_limiter(RateLimits(rpm=30), max_wait=FOREVER)
    grants: list[tuple[float, float]] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            res = limiter.acquire(1)
            with lock:
                grants.append((res.start_at, clock()))

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert len(grants) == 120
    starts = [s for s, _ in grants]
    assert most_in_any_window(starts, 60) <= 30
    assert most_in_any_window(starts, 10) <= 5
    assert all(returned >= start for start, returned in grants)  # never early


async def test_tasks_never_exceed_the_limit() -> None:
    clock = FakeClock(T0)
    limiter = AsyncRateLimiter(RateLimits(qps=3), clock=clock, sleep=clock.asleep, max_wait=FOREVER)
    starts: list[float] = []

    async def worker() -> None:
        for _ in range(5):
            res = await limiter.acquire()
            assert clock() >= res.start_at
            starts.append(res.start_at)

    await asyncio.gather(*(worker() for _ in range(20)))
    assert len(starts) == 100
    assert most_in_any_window(starts, 1.0) == 3


async def test_async_default_sleep_and_immediate_grant() -> None:
    limiter = AsyncRateLimiter(RateLimits(qps=1000))
    res = await limiter.acquire(5)
    assert res.state == "granted"
    limiter.settle(res, 3)
    limiter.release(res)
    assert res.state == "released"


async def test_cancelled_waiter_gives_its_place_back() -> None:
    clock = FakeClock(T0)
    gate, both_waiting = asyncio.Event(), asyncio.Event()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            both_waiting.set()
        await gate.wait()

    limiter = AsyncRateLimiter(RateLimits(qps=1), clock=clock, sleep=sleep, max_wait=FOREVER)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await asyncio.wait_for(both_waiting.wait(), 5)
    assert sleeps == [1, 2]
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    clock.advance(1)
    gate.set()
    res = await second
    assert res.start_at == T0 + 1  # moved up into the cancelled waiter's slot


async def test_async_bounded_wait_raises() -> None:
    clock = FakeClock(T0)
    limiter = AsyncRateLimiter(RateLimits(rpm=6), clock=clock, sleep=clock.asleep, max_wait=1)
    await limiter.acquire()
    with pytest.raises(ClientRateLimitTimeout):
        await limiter.acquire()


def test_sync_waiter_interrupted_gives_its_place_back() -> None:
    clock = FakeClock(T0)

    class Interrupted(BaseException):
        pass

    def sleep(seconds: float) -> None:
        raise Interrupted

    limiter = SyncRateLimiter(RateLimits(qps=1), clock=clock, sleep=sleep, max_wait=FOREVER)
    limiter.acquire()
    with pytest.raises(Interrupted):
        limiter.acquire()
    limiter._sleep = clock.sleep
    assert limiter.acquire().start_at == T0 + 1  # the interrupted caller's slot is free again


def test_fake_clock() -> None:
    clock = FakeClock(5.0)
    clock.advance(1.5)
    clock.sleep(2)
    clock.sleep(-1)  # recorded, but time does not go back
    assert clock() == 8.5
    assert clock.sleeps == [2, -1]
    assert repr(clock) == "FakeClock(now=8.5)"
    with pytest.raises(ValueError, match="back"):
        clock.advance(-1)
