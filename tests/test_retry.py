"""The retry policy: backoff sequence, cap, jitter, Retry-After, what is and is not retried."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wenxin_stream._exceptions import (
    APIConnectionError,
    APITimeoutError,
    IncompleteStreamError,
    InvalidRequestError,
    MalformedResponseError,
    WenxinError,
    api_error_from_v1,
    api_error_from_v2,
)
from wenxin_stream._retry import RetryPolicy, RetryState
from wenxin_stream._validation import Problem

OVERLOADED = api_error_from_v1({"error_code": 336100, "error_msg": "try again"})
CONNECTION = APIConnectionError("connection reset")


def rate_limited(retry_after: str) -> WenxinError:
    return api_error_from_v2(
        429,
        {"error": {"code": "rpm_rate_limit_exceeded", "message": "slow down"}},
        headers={"Retry-After": retry_after},
    )


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.multiplier) == (3, 0.5, 2.0)
    assert (policy.max_delay, policy.jitter, policy.max_retry_after) == (20.0, 0.5, 60.0)


def test_backoff_sequence_with_fixed_rand() -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay=1.0, multiplier=2.0, jitter=0.0)
    assert [policy.delay(n, OVERLOADED, 0.0) for n in range(1, 6)] == [1, 2, 4, 8, 16]


def test_jitter_is_added_in_full_seconds() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=1.0, jitter=1.0)
    assert policy.delay(1, OVERLOADED, 0.0) == 1.0
    assert policy.delay(1, OVERLOADED, 0.5) == 1.5
    assert policy.delay(2, OVERLOADED, 0.25) == 2.25


def test_cap_applies_before_jitter() -> None:
    policy = RetryPolicy(max_attempts=50, initial_delay=1.0, max_delay=5.0, jitter=0.5)
    assert policy.delay(10, OVERLOADED, 0.0) == 5.0
    assert policy.delay(10, OVERLOADED, 0.999) == pytest.approx(5.4995)
    # No overflow far out.
    assert policy.delay(49, OVERLOADED, 0.0) == 5.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = RetryPolicy(max_attempts=10_000, multiplier=10.0)
    assert policy.backoff(5_000, 0.0) == policy.max_delay


@given(
    attempt=st.integers(1, 200),
    rand=st.floats(0.0, 1.0, exclude_max=True),
)
def test_delay_bounds(attempt: int, rand: float) -> None:
    policy = RetryPolicy(max_attempts=1_000)
    delay = policy.delay(attempt, CONNECTION, rand)
    assert delay is not None
    assert policy.initial_delay <= delay <= policy.max_delay + policy.jitter


def test_attempts_exhausted() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.delay(1, OVERLOADED, 0.0) is not None
    assert policy.delay(2, OVERLOADED, 0.0) is not None
    assert policy.delay(3, OVERLOADED, 0.0) is None


def test_none_never_retries() -> None:
    policy = RetryPolicy.none()
    assert policy.max_attempts == 1
    assert policy.delay(1, CONNECTION, 0.0) is None


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(initial_delay=0.5, jitter=0.0)
    assert policy.delay(1, rate_limited("7"), 0.0) == 7.0
    # A Retry-After shorter than the backoff does not shorten it.
    assert RetryPolicy(initial_delay=3.0, jitter=0.0).delay(1, rate_limited("1"), 0.0) == 3.0


def test_retry_after_in_milliseconds() -> None:
    error = api_error_from_v2(429, {}, headers={"retry-after-ms": "2500"})
    assert RetryPolicy(jitter=0.0).delay(1, error, 0.0) == 2.5


def test_retry_after_longer_than_the_cap_means_do_not_retry() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(1, rate_limited("60"), 0.0) == 60.0
    assert policy.delay(1, rate_limited("61"), 0.0) is None


@pytest.mark.parametrize(
    "error",
    [
        OVERLOADED,
        api_error_from_v1({"error_code": 18, "error_msg": "qps"}),
        api_error_from_v1({"error_code": 336501, "error_msg": "rpm"}),
        api_error_from_v1({"error_code": 336502, "error_msg": "tpm"}),
        api_error_from_v1({"error_code": 2, "error_msg": "unavailable"}),
        api_error_from_v2(500, {"error": {"code": "internal_error", "message": "x"}}),
        api_error_from_v2(503, b""),
        CONNECTION,
        APITimeoutError("connect", timeout=5.0),
        APITimeoutError("idle", timeout=30.0),
        IncompleteStreamError("cut", api="v2"),
    ],
    ids=repr,
)
def test_retryable_errors(error: WenxinError) -> None:
    assert RetryPolicy().delay(1, error, 0.0) is not None


@pytest.mark.parametrize(
    "error",
    [
        api_error_from_v1({"error_code": 336003, "error_msg": "bad"}),
        api_error_from_v1({"error_code": 17, "error_msg": "daily limit"}),
        api_error_from_v1({"error_code": 6, "error_msg": "no permission"}),
        api_error_from_v2(400, {"error": {"code": "invalid_argument", "message": "x"}}),
        api_error_from_v2(401, {"error": {"code": "invalid_appid", "message": "x"}}),
        InvalidRequestError(Problem("messages", "empty", 336003, "invalid_messages")),
        MalformedResponseError("bad json", b"{"),
        ValueError("not ours"),
    ],
    ids=repr,
)
def test_permanent_errors_are_not_retried(error: BaseException) -> None:
    assert RetryPolicy().delay(1, error, 0.0) is None


@pytest.mark.parametrize("code", [100, 110, 111])
def test_token_errors_are_not_retried_by_the_policy(code: int) -> None:
    # The token path is separate: invalidate, refresh once, replay (not a retry).
    error = api_error_from_v1({"error_code": code, "error_msg": "token"})
    assert error.token_expired
    assert RetryPolicy().delay(1, error, 0.0) is None
    v2 = api_error_from_v2(401, {"error": {"code": "invalid_iam_token", "message": "x"}})
    assert RetryPolicy().delay(1, v2, 0.0) is None


@pytest.mark.parametrize("rand", [-0.1, 1.0, 2.0, float("nan")])
def test_rand_must_be_in_unit_interval(rand: float) -> None:
    with pytest.raises(ValueError, match="rand"):
        RetryPolicy().delay(1, CONNECTION, rand)


def test_attempt_starts_at_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().delay(0, CONNECTION, 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_delay": -1.0},
        {"max_delay": float("inf")},
        {"jitter": float("nan")},
        {"max_retry_after": -5.0},
        {"multiplier": 0.5},
        {"multiplier": float("inf")},
    ],
)
def test_invalid_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("attempts", [2.0, True, "3"])
def test_max_attempts_must_be_an_int(attempts: object) -> None:
    with pytest.raises(TypeError):
        RetryPolicy(max_attempts=attempts)  # type: ignore[arg-type]


def test_policy_is_frozen_hashable_and_picklable() -> None:
    policy = RetryPolicy(max_attempts=4)
    with pytest.raises(AttributeError):
        policy.max_attempts = 5  # type: ignore[misc]
    assert hash(policy) == hash(RetryPolicy(max_attempts=4))
    assert pickle.loads(pickle.dumps(policy)) == policy


class TestRetryState:
    def test_counts_attempts_and_uses_the_injected_rand(self) -> None:
        state = RetryState(
            RetryPolicy(max_attempts=3, initial_delay=1.0, jitter=1.0), rand=lambda: 0.5
        )
        assert state.next_delay(CONNECTION) == 1.5
        assert state.next_delay(CONNECTION) == 2.5
        assert state.next_delay(CONNECTION) is None
        assert state.attempts == 3
        assert state.total_delay == 4.0
        assert "attempts=3" in repr(state)

    def test_default_rand_stays_within_jitter(self) -> None:
        state = RetryState(RetryPolicy(initial_delay=1.0, jitter=0.5))
        delay = state.next_delay(CONNECTION)
        assert delay is not None
        assert 1.0 <= delay < 1.5

    def test_nothing_is_retried_once_text_reached_the_caller(self) -> None:
        state = RetryState(RetryPolicy(), rand=lambda: 0.0)
        assert state.next_delay(CONNECTION, delivered=True) is None

    def test_partial_text_on_the_error_counts_as_delivered(self) -> None:
        error = APIConnectionError("reset mid-stream")
        error.partial_text = "你好"
        assert RetryState(RetryPolicy(), rand=lambda: 0.0).next_delay(error) is None

    def test_permanent_error_ends_the_loop(self) -> None:
        state = RetryState(RetryPolicy(), rand=lambda: 0.0)
        bad = api_error_from_v1({"error_code": 336003, "error_msg": "bad"})
        assert state.next_delay(bad) is None
        assert state.total_delay == 0.0
