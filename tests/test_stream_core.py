"""StreamCore's decisions as plain data: what a failed attempt leads to (the rate-limit pause,
the token to forget, the delay), what an exchange settles at, all on a fake clock."""

from __future__ import annotations

from wenxin_stream._clock import FakeClock
from wenxin_stream._credentials import NoAuth, V1OAuth
from wenxin_stream._events import EndReason, TextDelta, Usage, UsageEvent
from wenxin_stream._exceptions import (
    APIConnectionError,
    ClientRateLimitTimeout,
    RateLimitError,
    api_error_from_v1,
    api_error_from_v2,
)
from wenxin_stream._retry import RetryPolicy
from wenxin_stream._stream_core import ChatCall, Decision, RateLimitPause, StreamCore
from wenxin_stream._timeouts import Timeout
from wenxin_stream._token_estimate import estimate_prompt_tokens, estimate_text_tokens
from wenxin_stream._tokens import AccessToken

MESSAGES = ({"role": "user", "content": "你好"},)
POLICY = RetryPolicy(max_attempts=3, initial_delay=1.0, multiplier=2.0, jitter=0.0)
TOKEN = AccessToken("t-1", expires_at=2e9, obtained_at=1e9)


def _core(
    api: str = "v1",
    *,
    auth: object = None,
    timeout: Timeout | None = None,
    clock: FakeClock | None = None,
    params: dict[str, object] | None = None,
) -> StreamCore:
    call = ChatCall(
        api="v1" if api == "v1" else "v2",
        model="ernie-lite-8k",
        messages=MESSAGES,
        params=params or {},
    )
    return StreamCore(
        call,
        base_url="http://x",
        auth=auth if auth is not None else NoAuth(),  # type: ignore[arg-type]
        retry=POLICY,
        timeout=timeout or Timeout(),
        clock=clock or FakeClock(),
    )


def _deliver(core: StreamCore, text: str) -> None:
    core._take(TextDelta(text))


def test_a_retryable_error_before_any_text_is_retried_after_the_backoff() -> None:
    core = _core()
    error = APIConnectionError("reset")
    assert core.on_failure(error, 0.0) == Decision("retry", 1.0)
    assert core.on_failure(error, 0.0) == Decision("retry", 2.0)
    last = core.on_failure(error, 0.0)  # the attempts are used up
    assert last.action == "raise"
    assert last.error is error
    assert error.end_reason is EndReason.UPSTREAM_ERROR


def test_a_rate_limit_error_names_the_pause_and_the_budget() -> None:
    core = _core()
    error = api_error_from_v1(
        {"error_code": 336502, "error_msg": "tpm"}, headers={"Retry-After": "3"}
    )
    assert isinstance(error, RateLimitError)
    decision = core.on_failure(error, 0.0)
    assert decision.pause == RateLimitPause(3.0, "tokens")
    assert (decision.action, decision.delay) == ("retry", 3.0)  # Retry-After is the floor
    v2 = api_error_from_v2(429, {"error": {"code": "rpm_rate_limit_exceeded", "message": "x"}})
    assert _core("v2").on_failure(v2, 0.0).pause == RateLimitPause(None, "requests")


def test_the_pause_is_applied_even_when_the_error_is_raised() -> None:
    core = _core()
    _deliver(core, "半")  # text reached the caller: no retry
    error = api_error_from_v1({"error_code": 336501, "error_msg": "rpm"})
    decision = core.on_failure(error, 0.0)
    assert decision.action == "raise"
    assert decision.pause == RateLimitPause(None, "requests")
    assert decision.error is error
    assert error.partial_text == "半"


def test_an_expired_token_is_forgotten_once_and_replayed_at_once() -> None:
    core = _core(auth=V1OAuth("ak", "sk", "http://x"))
    expired = api_error_from_v1({"error_code": 110, "error_msg": "Access token invalid"})
    first = core.on_failure(expired, 0.0, TOKEN)
    assert first == Decision("refresh", 0.0, invalidate=TOKEN)
    second = core.on_failure(expired, 0.0, TOKEN)  # refreshed once already: token errors are
    assert second.action == "raise"  # not retryable as such
    assert second.invalidate is None


def test_a_token_error_without_a_token_source_is_raised() -> None:
    core = _core()  # NoAuth: nothing to refresh
    expired = api_error_from_v1({"error_code": 111, "error_msg": "Access token expired"})
    assert core.on_failure(expired, 0.0, None).action == "raise"


def test_no_retry_starts_past_the_deadline() -> None:
    clock = FakeClock()
    core = _core(timeout=Timeout(deadline=5.0), clock=clock)
    core.http_request(None, 0.0)
    assert core.on_failure(APIConnectionError("reset"), 0.0).action == "retry"  # 1 s < 5 s
    clock.advance(3.5)
    assert core.on_failure(APIConnectionError("reset"), 0.0).action == "raise"  # 3.5 + 2 ≥ 5


def test_settlement_releases_when_nothing_was_generated() -> None:
    core = _core()
    core.fail(ClientRateLimitTimeout(3.0, 1.0))
    assert core.settlement() is None


def test_settlement_is_the_reported_usage_or_the_estimate() -> None:
    core = _core()
    _deliver(core, "长城很长。")
    estimate = estimate_prompt_tokens(MESSAGES) + estimate_text_tokens("长城很长。")
    assert core.settlement() == core.tokens_used() == estimate
    core._take(UsageEvent(Usage(3, 4, 7)))
    assert core.settlement() == 7


def test_the_reservation_estimate_uses_the_answer_limit() -> None:
    assert _core(params={"max_output_tokens": 100}).token_estimate() == 2 + 100
    assert _core("v2", params={"max_tokens": 50}).token_estimate() == 2 + 50
    assert _core("v2", params={"max_completion_tokens": 40}).token_estimate() == 2 + 40
    assert _core().token_estimate() == 2 + 512


def test_timings_run_on_the_injected_clock() -> None:
    clock = FakeClock()
    core = _core(clock=clock)
    core.http_request(None, 0.0)
    clock.advance(0.25)
    _deliver(core, "你")
    clock.advance(1.0)
    assert core.time_to_first_token == 0.25
    assert core.elapsed == 1.25
    # no body byte yet: the first-token budget, less the 1.25 s that passed on the clock
    assert core.read_timeout() == (Timeout().first_token - 1.25, "first_token")


def test_each_upstream_request_that_generated_something_is_accounted_once() -> None:
    """The per-request ledger (``attempt_usages``): a failed attempt that generated nothing
    costs nothing; a retry after it, a cut answer and its continuation are requests of their
    own — the reported usage where there is one, else the estimate, each exactly once."""
    call = ChatCall(api="v2", model="ernie-lite-8k", messages=MESSAGES, params={})
    core = StreamCore(
        call, base_url="http://x", auth=NoAuth(), retry=POLICY, timeout=Timeout(),
        continue_mode=True, clock=FakeClock(),
    )  # fmt: skip
    core.http_request(None, 0.0)
    assert core.on_failure(APIConnectionError("reset"), 0.0).action == "retry"  # nothing yet
    core.http_request(None, 0.0)
    _deliver(core, "长城是")  # then the stream breaks: no usage reported
    assert core.on_failure(APIConnectionError("cut"), 0.0).action == "continue"
    core.http_request(None, 0.0)
    _deliver(core, "中国的古代防御工程。")
    usage = Usage(prompt_tokens=21, completion_tokens=9, total_tokens=30)
    core._take(UsageEvent(usage))
    core.cancel()  # the end (as the shell's close does); closing twice changes nothing
    core.cancel()
    ledger = core.attempt_usages
    assert [(a.attempt, a.kind) for a in ledger] == [(2, "retry"), (3, "continuation")]
    cut, continued = ledger
    assert cut.usage is None
    prompt = estimate_prompt_tokens(MESSAGES)
    assert cut.estimate == Usage(
        prompt, estimate_text_tokens("长城是"), prompt + estimate_text_tokens("长城是")
    )
    assert continued.usage is usage  # its own report, not the cut request's estimate
    assert continued.estimate is None  # reported: nothing estimated
    assert (cut.counted, continued.counted) == (cut.estimate, usage)


def test_a_usage_reported_by_an_earlier_request_is_not_counted_again() -> None:
    core = _core("v2")
    core.http_request(None, 0.0)
    core._take(UsageEvent(Usage(5, 0, 5)))  # a usage-only chunk, then the stream breaks
    assert core.on_failure(APIConnectionError("cut"), 0.0).action == "raise"  # delivered
    (only,) = core.attempt_usages
    assert (only.attempt, only.usage) == (1, Usage(5, 0, 5))
