"""The retry policy: whether to try a failed request again, and after how long.

Theory of operation
-------------------
:class:`RetryPolicy` is a pure function of (attempts made, the error, a random number): it does
no I/O, reads no clock and draws no randomness itself, so the sync and async clients share it
and tests fix every input. The clients own the loop::

    state = RetryState(policy)
    while True:
        try:
            return attempt()
        except WenxinError as exc:
            wait = state.next_delay(exc, delivered=<did any text reach the caller?>)
            if wait is None:
                raise
            sleep(wait)                      # time.sleep or asyncio.sleep: the only difference

What is retried (one rule, :func:`~wenxin_stream._exceptions.is_retryable`): API errors of kind
``"retryable"`` (overload, rate limits, internal errors), connection errors and timeouts, and
streams that ended early. Everything else is final.

Backoff: before attempt ``n + 1`` the wait is ``min(initial_delay * multiplier ** (n - 1),
max_delay) + jitter * rand``: exponential growth capped at ``max_delay``, *then* up to
``jitter`` seconds of uniform jitter added (qianfan's additive jitter, but the cap applies
before the jitter, so clients that all reached the cap still spread out instead of retrying in
lockstep; the longest wait is ``max_delay + jitter``). A server ``Retry-After`` is honoured as
a floor (``max(backoff, retry_after)``); one longer than ``max_retry_after`` means "not soon",
so the error is raised instead of blocking the caller for minutes.

Two rules live in the client, not here, and are stated so nobody adds them twice:

- **Retry only while nothing has reached the caller.** Replaying a stream after text was shown
  duplicates it (LESSONS 4). :meth:`RetryState.next_delay` refuses when ``delivered`` is true or
  the error carries ``partial_text``; the client must pass what it knows.
- **Token errors are not retried by this policy.** Codes 100/110/111 and v2
  ``invalid_iam_token`` are of kind ``"token"``, which ``is_retryable`` rejects. The client
  handles them on a separate path: invalidate the stale token (``TokenManager.invalidate``),
  fetch a new one, and replay *once*; that replay is not a retry and does not count against
  ``max_attempts``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from ._exceptions import is_retryable

__all__ = ["RetryPolicy", "RetryState"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a failed request (pure; see the module docstring).

    Attributes:
        max_attempts: Total attempts including the first; ``1`` means no retries.
        initial_delay: Backoff before the second attempt, in seconds (before jitter).
        multiplier: Growth factor of the backoff per attempt (at least 1).
        max_delay: Cap of the exponential part of the backoff, in seconds.
        jitter: Seconds of uniform jitter added on top of the capped backoff.
        max_retry_after: A server ``Retry-After`` longer than this many seconds means: do not
            retry (raise the error).
    """

    max_attempts: int = 3
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 20.0
    jitter: float = 0.5
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError("max_attempts must be an int")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (1 means no retries)")
        for name in ("initial_delay", "max_delay", "jitter", "max_retry_after"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not math.isfinite(self.multiplier) or self.multiplier < 1:
            raise ValueError(f"multiplier must be a finite number >= 1, got {self.multiplier!r}")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries (one attempt)."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int, rand: float) -> float:
        """The backoff after ``attempt`` attempts, ignoring the error: the capped exponential
        part plus ``jitter * rand`` (``rand`` in ``[0, 1)``)."""
        if attempt < 1:
            raise ValueError("attempt counts the attempts already made: it starts at 1")
        if not 0.0 <= rand < 1.0:
            raise ValueError(f"rand must be in [0, 1), got {rand!r}")
        try:
            exponential = self.initial_delay * self.multiplier ** (attempt - 1)
        except OverflowError:
            exponential = math.inf
        return min(exponential, self.max_delay) + self.jitter * rand

    def delay(self, attempt: int, error: BaseException, rand: float) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up.

        ``attempt`` is the number of attempts already made (1 after the first failure) and
        ``rand`` a uniform random number in ``[0, 1)``. ``None`` when the attempts are used up,
        when ``error`` is not retryable (see :func:`~wenxin_stream._exceptions.is_retryable`;
        token errors included, see the module docstring), or when the server's
        ``Retry-After`` exceeds :attr:`max_retry_after`. A shorter ``Retry-After`` is honoured
        as a floor: ``max(backoff, retry_after)``.
        """
        wait = self.backoff(attempt, rand)  # validates its arguments first
        if attempt >= self.max_attempts or not is_retryable(error):
            return None
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and math.isfinite(retry_after):
            if retry_after > self.max_retry_after:
                return None
            wait = max(wait, float(retry_after))
        return wait


class RetryState:
    """The attempts of one logical request under a :class:`RetryPolicy`.

    Draws the jitter from ``rand`` (``random.random`` unless injected) and adds the rule that
    only the client can know: nothing is retried once text has reached the caller. Not shared
    between requests; not thread-safe (one request runs in one thread or task).
    """

    __slots__ = ("_rand", "attempts", "policy", "total_delay")

    def __init__(self, policy: RetryPolicy, *, rand: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self._rand: Callable[[], float] = rand if rand is not None else random.random
        self.attempts = 0
        """Attempts that have failed so far."""
        self.total_delay = 0.0
        """Seconds of backoff handed out so far."""

    def __repr__(self) -> str:
        return f"RetryState(attempts={self.attempts}, total_delay={self.total_delay:g})"

    def next_delay(self, error: BaseException, *, delivered: bool = False) -> float | None:
        """Record a failed attempt; return the seconds to wait before the next one, or ``None``
        to raise ``error``.

        ``delivered`` says that part of the answer already reached the caller; an error whose
        ``partial_text`` is not empty counts as delivered too. Either way the answer is final:
        a replay would repeat text the caller has seen.
        """
        self.attempts += 1
        partial: object = getattr(error, "partial_text", "")
        if delivered or partial:
            return None
        wait = self.policy.delay(self.attempts, error, self._rand())
        if wait is not None:
            self.total_delay += wait
        return wait
