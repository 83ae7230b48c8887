"""The waiting rate limiter: the pure core of ``_ratelimit`` behind a lock, a clock and a sleep.

The sync and async limiters are twins: the sync one is generated from the async one by
``scripts/unasync.py``, and they differ only in how :meth:`~AsyncRateLimiter.acquire` sleeps.
A waiter sleeps until the start its reservation was given, then asks again (re-placing may
have moved it); a waiter that is interrupted (``CancelledError``, ``KeyboardInterrupt``) gives
its reservation back, so later callers move up. The lock guards only the core's state and is
never held while sleeping, so one limiter is safe across threads (sync) or across the tasks of
a loop (async), and FIFO-fair in both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from ._clock import AsyncSleep, Clock
from ._ratelimit import RateLimiter, RateLimits, RateLimitScope, Reservation
from ._synchronization import async_sleep

__all__ = ["AsyncRateLimiter"]


class AsyncRateLimiter:
    """A rate limiter whose :meth:`acquire` waits (boundedly) for a slot, FIFO-fair.

    ``limits`` and ``max_wait`` as for :class:`~wenxin_stream._ratelimit.RateLimiter`;
    ``clock`` must be monotonic; ``sleep`` waits that many seconds (inject a fake clock's sleep
    in tests, so nothing waits for real).
    """

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        max_wait: float = 30.0,
        clock: Clock = time.monotonic,
        sleep: AsyncSleep = async_sleep,
    ) -> None:
        self._core = RateLimiter(limits, max_wait=max_wait)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    @property
    def limits(self) -> RateLimits:
        """The limits in force now."""
        with self._lock:
            return self._core.limits

    async def acquire(
        self, estimate: int = 0, *, input_tokens: int | None = None, max_wait: float | None = None
    ) -> Reservation:
        """Wait for a slot for a request of about ``estimate`` tokens (``input_tokens`` of them
        the prompt); raise :class:`~wenxin_stream.ClientRateLimitTimeout` if that would take
        longer than ``max_wait`` (default: the limiter's)."""
        with self._lock:
            res = self._core.reserve(
                estimate, now=self._clock(), input_tokens=input_tokens, max_wait=max_wait
            )
        try:
            while (wait := self._poll(res)) > 0:
                await self._sleep(wait)
        except BaseException:
            with self._lock:
                self._core.cancel(res, now=self._clock())
            raise
        return res

    def delay(self, estimate: int = 0) -> float:
        """Seconds a request of about ``estimate`` tokens would wait if it asked now (``0``:
        none); nothing is reserved (see :meth:`RateLimiter.delay`)."""
        with self._lock:
            return self._core.delay(estimate, now=self._clock())

    def _poll(self, res: Reservation) -> float:
        with self._lock:
            return self._core.poll(res, self._clock())

    def settle(
        self,
        reservation: Reservation,
        total_tokens: int,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Record the tokens a request actually used (see :meth:`RateLimiter.settle`)."""
        with self._lock:
            now = self._clock()
            self._core.settle(
                reservation, total_tokens, now=now, input_tokens=input_tokens,
                output_tokens=output_tokens,
            )  # fmt: skip

    def release(self, reservation: Reservation) -> None:
        """Give back the tokens of a request that did not run (see :meth:`RateLimiter.release`)."""
        with self._lock:
            self._core.release(reservation, now=self._clock())

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        """Adapt to a response's ``X-Ratelimit-*`` headers."""
        with self._lock:
            self._core.update_from_headers(headers, now=self._clock())

    def on_rate_limited(
        self, retry_after: float | None = None, *, scope: RateLimitScope | None = None
    ) -> None:
        """Pause every caller after a rate-limit error (see :meth:`RateLimiter.on_rate_limited`)."""
        with self._lock:
            self._core.on_rate_limited(retry_after, now=self._clock(), scope=scope)
