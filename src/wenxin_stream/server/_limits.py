"""Per-key limits of ``wenxin serve``: requests and tokens per minute, concurrent streams.

Theory of operation
===================

The server answers 429 and never queues: :meth:`KeyLimiter.admit` decides at once, returning
an :class:`Admission` (the request may run) or a :class:`Rejection` (``code``, ``message`` and
``retry_after`` seconds for the ``Retry-After`` header).

**Requests per minute** are a token bucket per key (:class:`RequestBucket`): it holds up to
``rpm`` requests and refills at ``rpm / 60`` per second, so a key that has been quiet may
spend its whole minute at once — exactly ``rpm`` requests pass back to back, the next is
refused with ``retry_after`` = the time until one request's worth has refilled
(``60 / rpm`` seconds from empty) — and over any long stretch no more than ``rpm`` per minute
(plus the one burst) gets through. This is what users of other gateways expect of "RPM"; the
SDK's client-side limiter keeps its stricter sliding windows (``ceil(r/6)`` per 10 s), which
are right for a client pacing itself under someone else's limit, not for a server's quota.

**Tokens per minute** reuse the client's sliding-window core,
:class:`wenxin_stream._ratelimit.RateLimiter` (TPM only), one per key, asked with
``max_wait=0``: a reservation that would have to wait is a rejection, and the wait it would
have needed is ``retry_after``. TPM counts total tokens per 60 s. A request reserves an
*estimate* of its tokens (prompt plus the answer budget); :meth:`KeyLimiter.settle` replaces
it by the ``usage`` the stream reported, so the next minute's budget reflects what was
really spent.

**Order.** The concurrency check comes first, then the request bucket is *looked at*, then
the tokens are reserved, and only then is a request taken from the bucket: a request refused
for any reason spends nothing. When both rates are exhausted, ``retry_after`` is the request
bucket's wait (the first limit found); the retry then learns the tokens' wait, if any.

**Concurrency** is a counter per key: ``admit`` takes a slot, :meth:`KeyLimiter.release`
gives it back when the stream ends (idempotent, so every exit path may call it).

**Limits** of a key are its own (:class:`KeyLimits` from its record) where set, the server
defaults where not; ``None`` everywhere means unlimited.

**State** per key is created on the first request and dropped once it is idle: no stream
open and no request for :data:`IDLE_SECONDS` (the longest window, and the time a request
bucket takes to refill completely, so nothing is forgotten that could still matter). A sweep
runs at most once per :data:`IDLE_SECONDS` and is linear in the keys seen in the last
window, so the cost is amortised O(1) per request and memory follows the active keys, not
every key ever seen.

**No locks**: the server runs one event loop and none of these methods awaits, so each call
is atomic with respect to every other request. Not thread-safe.

**One interface, two homes.** :class:`Limits` is what the answer use case holds: an awaitable
:meth:`~Limits.acquire`, then :meth:`~Limits.settle` and :meth:`~Limits.release` (never
awaited: they are the admission's own business). :class:`KeyLimiter` keeps everything in this
process (one ``wenxin serve``); ``_limits_redis.SharedLimits`` keeps the same buckets in
Redis for a fleet (``redis_url``), so N instances admit the limit, not N times it. Both hand out
an :class:`Admission`. Only the shared one takes a round trip to decide, so only it may let
the upstream request go out meanwhile (:meth:`~Limits.overlap`, ``_limits_redis``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from .._clock import Clock
from .._exceptions import ClientRateLimitTimeout
from .._ratelimit import RateLimiter, RateLimits, Reservation

__all__ = [
    "IDLE_SECONDS",
    "Admission",
    "KeyLimiter",
    "KeyLimits",
    "Limits",
    "LocalAdmission",
    "Rejection",
    "RequestBucket",
    "rate_limited",
]

IDLE_SECONDS = 60.0
"""A key with no open stream and no request for this long has its state dropped."""

_EPS = 1e-9  # a bucket refilled by float arithmetic may miss a whole request by a rounding

STREAMS_RETRY_AFTER = 1.0
"""``retry_after`` of a ``too_many_streams`` rejection (when a stream will end is unknown)."""


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Limits of one key: requests per minute, tokens per minute, concurrent streams.

    ``None`` means "not limited" in server defaults, and "use the server default" in a key's
    own limits (see :meth:`over`). Values must be positive whole numbers.
    """

    rpm: int | None = None
    tpm: int | None = None
    max_streams: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_streams"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")

    def over(self, defaults: KeyLimits) -> KeyLimits:
        """These limits where set, ``defaults`` where not."""
        return KeyLimits(
            rpm=defaults.rpm if self.rpm is None else self.rpm,
            tpm=defaults.tpm if self.tpm is None else self.tpm,
            max_streams=defaults.max_streams if self.max_streams is None else self.max_streams,
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request was refused: ``code`` is ``rate_limited``, ``too_many_streams`` or
    ``budget_exceeded`` (``_budgets``; ``status`` 429), or ``shared_state_unavailable`` (503:
    the fleet's Redis did not answer, so no limit could be checked); ``retry_after`` is in
    seconds."""

    code: Literal["rate_limited", "too_many_streams", "budget_exceeded", "shared_state_unavailable"]
    message: str
    retry_after: float
    status: int = 429

    @property
    def retry_after_header(self) -> str:
        """The ``Retry-After`` header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


class RequestBucket:
    """A token bucket of requests: holds up to ``capacity``, refills ``capacity / 60`` per
    second (``capacity`` is the RPM), starts full. Pure: every call takes ``now``."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0
        self.level = float(capacity)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one request may pass (0: now)."""
        self._refill(now)
        missing = 1.0 - self.level
        return 0.0 if missing <= _EPS else missing / self.rate

    def take(self, now: float) -> None:
        """Spend one request (call after :meth:`wait` said 0)."""
        self._refill(now)
        self.level -= 1.0

    def resize(self, capacity: int, now: float) -> None:
        """A new RPM: the new capacity and rate; what was spent stays spent."""
        self._refill(now)
        self.capacity = capacity
        self.rate = capacity / 60.0
        self.level = min(self.level, float(capacity))


class _KeyState:
    __slots__ = ("bucket", "last_admit", "limiter", "limits", "streams")

    def __init__(self, limits: KeyLimits, now: float) -> None:
        self.limits = limits
        self.bucket = None if limits.rpm is None else RequestBucket(limits.rpm, now)
        self.limiter = _token_limiter(limits)
        self.streams = 0
        self.last_admit = now

    def reconfigure(self, limits: KeyLimits, now: float) -> None:
        """New limits: the request bucket resized (what was spent stays spent), new token
        windows; the open streams still count."""
        if limits.rpm is None:
            self.bucket = None
        elif self.bucket is None:
            self.bucket = RequestBucket(limits.rpm, now)
        elif limits.rpm != self.limits.rpm:
            self.bucket.resize(limits.rpm, now)
        if limits.tpm != self.limits.tpm:
            self.limiter = _token_limiter(limits)
        self.limits = limits


def _token_limiter(limits: KeyLimits) -> RateLimiter | None:
    if limits.tpm is None:
        return None
    return RateLimiter(RateLimits(tpm=limits.tpm), max_wait=0.0)


class Admission:
    """An admitted request: it holds one concurrency slot of its key and, when the key has a
    token limit, the reservation of its estimated tokens. Hand it back to
    :meth:`Limits.settle` (actual usage) and :meth:`Limits.release` (stream ended).

    The base of the in-process :class:`LocalAdmission` and the fleet's shared one."""

    __slots__ = ("_released", "key_id")

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self._released = False

    @property
    def released(self) -> bool:
        """Whether the concurrency slot has been given back."""
        return self._released

    @property
    def reserved_tokens(self) -> int | None:
        """The tokens counted against the key's TPM (the estimate, then the settled usage);
        ``None`` when the key has no token limit."""
        raise NotImplementedError

    def settle(self, total_tokens: int, now: float) -> None:
        """Count ``total_tokens`` instead of the estimate (no effect without a token limit)."""
        raise NotImplementedError

    def release(self) -> None:
        """Give the concurrency slot back. Idempotent."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key_id={self.key_id!r}, tokens={self.reserved_tokens!r}, "
            f"released={self._released})"
        )


class Limits(Protocol):
    """Per-key admission, wherever its state lives (see the module docstring)."""

    @property
    def defaults(self) -> KeyLimits:
        """The server-wide limits."""
        ...

    def overlap(self, key_id: str, limits: KeyLimits | None, estimate_tokens: int) -> bool:
        """Whether the upstream request of this admission may go out before
        :meth:`acquire` has decided (the decision takes a round trip, and the key had room to
        spare when it was last decided); a refusal then cuts that request."""
        ...

    async def acquire(
        self, key_id: str, limits: KeyLimits | None, estimate_tokens: int
    ) -> Admission | Rejection:
        """Admit a request of ``key_id`` expected to use ``estimate_tokens`` tokens, or say
        why not (``limits``: the key's own, ``None`` for the defaults only)."""
        ...

    def settle(self, admission: Admission, total_tokens: int) -> None:
        """Count what the request really used instead of its estimate."""
        ...

    def release(self, admission: Admission) -> None:
        """The stream ended: free its concurrency slot. Idempotent."""
        ...


class LocalAdmission(Admission):
    """An admission of this process's :class:`KeyLimiter`."""

    __slots__ = ("_limiter", "_reservation", "_state")

    def __init__(
        self,
        key_id: str,
        state: _KeyState,
        limiter: RateLimiter | None,
        reservation: Reservation | None,
    ) -> None:
        super().__init__(key_id)
        self._state = state
        self._limiter = limiter  # the windows the reservation lives in
        self._reservation = reservation

    @property
    def reserved_tokens(self) -> int | None:
        """The tokens counted against the key's TPM (the estimate, then the settled usage);
        ``None`` when the key has no token limit."""
        return None if self._reservation is None else self._reservation.tokens

    def settle(self, total_tokens: int, now: float) -> None:
        """Count ``total_tokens`` instead of the estimate in the key's windows (no effect
        without a token limit)."""
        if self._reservation is not None and self._limiter is not None:
            self._limiter.settle(self._reservation, max(0, total_tokens), now=now)

    def release(self) -> None:
        """Give the concurrency slot back. Idempotent."""
        if not self._released:
            self._released = True
            self._state.streams -= 1


class KeyLimiter:
    """Admits or rejects requests per key, without waiting (see the module docstring).

    ``defaults`` apply where a key sets no limit of its own; ``clock`` must be monotonic.
    """

    def __init__(self, defaults: KeyLimits, *, clock: Clock = time.monotonic) -> None:
        self._defaults = defaults
        self._clock = clock
        self._states: dict[str, _KeyState] = {}
        self._next_sweep = clock() + IDLE_SECONDS

    @property
    def defaults(self) -> KeyLimits:
        """The server-wide limits."""
        return self._defaults

    def __len__(self) -> int:
        """How many keys have state (recently active or streaming)."""
        return len(self._states)

    def streams(self, key_id: str) -> int:
        """How many streams of ``key_id`` are open."""
        state = self._states.get(key_id)
        return 0 if state is None else state.streams

    def overlap(self, key_id: str, limits: KeyLimits | None, estimate_tokens: int) -> bool:
        """Never: :meth:`acquire` decides at once, so nothing is gained by not waiting."""
        return False

    async def acquire(
        self, key_id: str, limits: KeyLimits | None, estimate_tokens: int
    ) -> Admission | Rejection:
        """:meth:`admit`, as :class:`Limits` asks for it (nothing is awaited)."""
        return self.admit(key_id, limits, estimate_tokens)

    def admit(
        self, key_id: str, limits: KeyLimits | None, estimate_tokens: int
    ) -> LocalAdmission | Rejection:
        """Admit a request of ``key_id`` expected to use ``estimate_tokens`` tokens, or say
        why not. ``limits`` are the key's own (``None``: the defaults only)."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        effective = self._defaults if limits is None else limits.over(self._defaults)
        state = self._states.get(key_id)
        if state is None:
            state = self._states[key_id] = _KeyState(effective, now)
        elif state.limits != effective:
            state.reconfigure(effective, now)
        if effective.max_streams is not None and state.streams >= effective.max_streams:
            return Rejection(
                "too_many_streams",
                f"this API key already has {state.streams} streams open "
                f"(limit {effective.max_streams}); wait for one to end",
                STREAMS_RETRY_AFTER,
            )
        bucket = state.bucket
        if bucket is not None and (wait := bucket.wait(now)) > 0:
            return rate_limited(effective, wait)
        reservation = None
        if state.limiter is not None:
            try:
                reservation = state.limiter.reserve(max(0, estimate_tokens), now=now, max_wait=0.0)
            except ClientRateLimitTimeout as exc:
                return rate_limited(effective, exc.wait)
        if bucket is not None:
            bucket.take(now)
        state.streams += 1
        state.last_admit = now
        return LocalAdmission(key_id, state, state.limiter, reservation)

    def settle(self, admission: Admission, total_tokens: int) -> None:
        """Count the tokens the request actually used instead of its estimate (may be called
        again with a newer figure, before or after :meth:`release`)."""
        admission.settle(total_tokens, self._clock())

    def release(self, admission: Admission) -> None:
        """The stream ended: free its concurrency slot. Idempotent."""
        admission.release()

    def _sweep(self, now: float) -> None:
        """Drop the state of keys idle for :data:`IDLE_SECONDS` with no stream open."""
        idle = [
            key
            for key, state in self._states.items()
            if state.streams <= 0 and now - state.last_admit >= IDLE_SECONDS
        ]
        for key in idle:
            del self._states[key]
        self._next_sweep = now + IDLE_SECONDS


def rate_limited(limits: KeyLimits, wait: float) -> Rejection:
    """429 ``rate_limited``: a rate of ``limits`` is spent for ``wait`` more seconds."""
    return Rejection(
        "rate_limited",
        f"rate limit of this API key reached ({_describe(limits)}); retry in {wait:.1f}s",
        wait,
    )


def _describe(limits: KeyLimits) -> str:
    parts = []
    if limits.rpm is not None:
        parts.append(f"{limits.rpm} requests/min")
    if limits.tpm is not None:
        parts.append(f"{limits.tpm} tokens/min")
    return ", ".join(parts)
