"""Client-side rate limits (requests per second or minute, tokens per minute), adapted to the
server's ``X-Ratelimit-*`` headers; callers wait, boundedly, instead of failing.

Theory of operation
-------------------
**Sliding-window logs, scheduled ahead.** Each limit is a window, "at most ``limit`` units in
any ``period`` seconds", kept as a log of ``(time, amount)`` entries. Unlike qianfan's fixed
buckets, a sliding log holds the limit for *every* interval, not just aligned ones. Windows:
QPS ``q`` is ``q`` requests per 1 s (below 1: one per ``1/q`` s; fractions above 1 round down);
RPM ``r`` is ``r`` per 60 s **and** ``ceil(r/6)`` per 10 s (a burst may spend a sixth of the
minute at once, the rest is paced); TPM counts total tokens per 60 s, and v2's input and output
budgets have a window each.

:meth:`RateLimiter.reserve` places a caller at the earliest instant ``T`` at which its units fit
every window, never before the previous caller's ``T`` (so the queue is strictly FIFO and no
caller starves), records its entries at ``T`` and returns a :class:`Reservation`; the caller
sleeps until ``T``. If ``T`` is more than ``max_wait`` away, :class:`ClientRateLimitTimeout` is
raised at once and nothing is recorded. Whatever moves the goalposts (a header lowering a
limit, a 429 pause, a settle that found more tokens than estimated) re-places every waiting
reservation in arrival order; a waiter that wakes to find its ``T`` moved sleeps again, or
raises if ``T`` now lies past its deadline. A cancelled waiter (``CancelledError``,
``KeyboardInterrupt``) gives its reservation back. Sleeps are not interrupted, so a waiter
moved earlier still wakes at its old time: late, never early.

**Tokens.** A reservation holds an estimate (``_token_estimate.estimate_tokens``); ``settle``
replaces it by the ``usage`` the server reported, ``release`` gives the tokens back (the request
never ran). Either way the request itself stays counted.

**Server headers.** ``X-Ratelimit-Limit-{Requests,Tokens,Input-Tokens,Output-Tokens}`` (per
minute) lower the configured limit (the latest header counts, so a raised quota takes effect up
to the configured value) or, with none configured, become the limit. ``Remaining-…: 0`` blocks
that budget until our oldest entry in its window ages out (the server's window frees "within
0-60 s"), or for a sixth of the period without local history. ``on_rate_limited`` (a 429, v1
336501/336502) pauses every caller for ``Retry-After`` (else ``default_pause``) seconds and, given
a ``scope`` (:func:`rate_limit_scope`), blocks the budget that ran out.

This module is the pure core: :class:`RateLimiter` takes ``now`` in every call, never waits and
is not thread-safe (the gateway's per-key limits use it as is). The waiting shells add a lock,
a clock and a sleep: :class:`~wenxin_stream._ratelimit_async.AsyncRateLimiter` and its twin
:class:`~wenxin_stream._ratelimit_sync.SyncRateLimiter`, generated from it by
``scripts/unasync.py``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ._exceptions import APIError, ClientRateLimitTimeout

__all__ = [
    "RateLimitScope",
    "RateLimiter",
    "RateLimits",
    "Reservation",
    "rate_limit_scope",
]

RateLimitScope = Literal["requests", "tokens", "input_tokens", "output_tokens"]
"""Which budget ran out: requests, all tokens, or v2's input or output tokens."""

_MINUTE = 60.0
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Rate limits; ``None`` means unlimited. ``qps``: requests per second; ``rpm``: requests
    per minute; ``tpm``: total tokens per minute; ``input_tpm`` / ``output_tpm``: v2's
    separate per-minute budgets. A limiter takes ``qps`` or ``rpm``, not both; its
    :attr:`RateLimiter.limits` (what is in force) may show both once a server header set an
    RPM."""

    qps: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    input_tpm: int | None = None
    output_tpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("qps", "rpm", "tpm", "input_tpm", "output_tpm"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
            if name != "qps" and value != int(value):
                raise ValueError(f"{name} must be a whole number, got {value!r}")


@dataclass(eq=False, slots=True)
class _Entry:
    time: float
    amount: float
    live: bool = True  # still in its window's log


class _Window:
    """A sliding-window log: at most ``limit`` units in any ``period`` seconds."""

    __slots__ = ("blocked_until", "entries", "limit", "period", "used")

    def __init__(self, period: float) -> None:
        self.period = period
        self.limit: float | None = None
        self.entries: deque[_Entry] = deque()
        self.used = 0.0
        self.blocked_until = -math.inf

    def prune(self, now: float) -> None:
        while self.entries and self.entries[0].time + self.period <= now:
            self._drop(self.entries.popleft())

    def _drop(self, entry: _Entry) -> None:
        entry.live = False
        self.used -= entry.amount

    def remove(self, entry: _Entry) -> None:
        if entry.live:
            self.entries.remove(entry)
            self._drop(entry)

    def earliest(self, amount: float, t: float) -> float:
        """The earliest time ``>= t`` at which ``amount`` more units fit (all entries lie at or
        before that time, as placement is monotonic). Amounts above the limit wait for an
        empty window."""
        if self.blocked_until > t:
            t = self.blocked_until
        limit = self.limit
        if limit is None:
            return t
        need = self.used + (amount if amount < limit else limit) - limit
        if need <= _EPS:
            return t  # it fits now (most calls: no entry is read)
        freed = 0.0
        for entry in self.entries:
            if need <= _EPS + freed:
                break
            freed += entry.amount
            t = max(t, entry.time + self.period)
        return t

    def block(self, now: float) -> None:
        """The server says this budget is spent: block until our oldest entry ages out."""
        if self.entries and self.entries[0].time + self.period > now:
            until = self.entries[0].time + self.period
        else:
            until = now + self.period / 6
        self.blocked_until = max(self.blocked_until, min(until, now + self.period))


@dataclass(eq=False, slots=True)
class Reservation:
    """A caller's place under the rate limits. ``tokens`` is the estimate (then the settled
    count), ``input_tokens`` its prompt part, ``start_at`` when the request may start (on the
    limiter's clock) and ``state`` one of ``waiting``, ``granted``, ``settled``, ``released``,
    ``cancelled``."""

    tokens: int
    input_tokens: int
    start_at: float = 0.0
    deadline: float = math.inf
    max_wait: float = math.inf
    state: Literal["waiting", "granted", "settled", "released", "cancelled"] = "waiting"
    _entries: list[tuple[RateLimitScope, _Window, _Entry]] = field(default_factory=list, repr=False)


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


class RateLimiter:
    """The pure core: decides when each caller may start, from the ``now`` it is given.

    Not thread-safe and does not wait: the shells ``SyncRateLimiter`` and ``AsyncRateLimiter``
    add both. ``limits`` are the configured limits (none: only what server
    headers say); ``max_wait`` bounds each caller's wait; ``default_pause`` is the pause after
    a 429 that came without ``Retry-After``.
    """

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        max_wait: float = 30.0,
        default_pause: float = 1.0,
    ) -> None:
        configured = limits or RateLimits()
        if configured.qps is not None and configured.rpm is not None:
            raise ValueError("set qps or rpm, not both")
        for name, value in (("max_wait", max_wait), ("default_pause", default_pause)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.max_wait = max_wait
        self.default_pause = default_pause
        self._configured = configured
        self._server: dict[str, int] = {}
        self._seen: dict[str, str] = {}
        """The text of each limit header last read (a repeated one is not parsed again)."""
        q = self._configured.qps
        self._second = _Window(1.0 if q is None or q >= 1 else 1.0 / q)
        self._second.limit = None if q is None else max(1, math.floor(q))
        self._minute = _Window(_MINUTE)
        self._burst = _Window(_MINUTE / 6)
        self._tokens = _Window(_MINUTE)
        self._input = _Window(_MINUTE)
        self._output = _Window(_MINUTE)
        self._scopes: tuple[tuple[RateLimitScope, _Window, int], ...] = (
            ("requests", self._second, 0),
            ("requests", self._minute, 0),
            ("requests", self._burst, 0),
            ("tokens", self._tokens, 1),
            ("input_tokens", self._input, 2),
            ("output_tokens", self._output, 3),
        )
        """Every window, its scope and which amount it counts (:meth:`_windows`: a request,
        its tokens, its prompt's, its answer's)."""
        self._budgets: dict[RateLimitScope, _Window] = {
            "requests": self._minute,
            "tokens": self._tokens,
            "input_tokens": self._input,
            "output_tokens": self._output,
        }
        self._paused_until = -math.inf
        self._waiting: deque[Reservation] = deque()
        self._apply_limits()

    @property
    def limits(self) -> RateLimits:
        """The limits in force now."""
        rpm, tpm, input_tpm, output_tpm = self._in_force()
        return RateLimits(
            qps=self._configured.qps,
            rpm=rpm,
            tpm=tpm,
            input_tpm=input_tpm,
            output_tpm=output_tpm,
        )

    def _in_force(self) -> tuple[int | None, int | None, int | None, int | None]:
        """RPM, TPM, input TPM and output TPM in force: the lower of the configured limit and
        the server's (without building, and validating, a `RateLimits`)."""
        c, s = self._configured, self._server
        return (
            _int(_min(c.rpm, s.get("requests"))),
            _int(_min(c.tpm, s.get("tokens"))),
            _int(_min(c.input_tpm, s.get("input_tokens"))),
            _int(_min(c.output_tpm, s.get("output_tokens"))),
        )

    def _apply_limits(self) -> None:
        rpm, self._tokens.limit, self._input.limit, self._output.limit = self._in_force()
        self._minute.limit = rpm
        self._burst.limit = None if rpm is None else math.ceil(rpm / 6)

    def _windows(
        self, tokens: float, input_tokens: float, now: float
    ) -> list[tuple[RateLimitScope, _Window, float]]:
        """The windows a request of ``tokens`` (``input_tokens`` of them the prompt) counts
        in — those with a limit, or blocked — each with its amount."""
        amounts = (1, tokens, input_tokens, tokens - input_tokens)
        return [
            (kind, window, amounts[part])
            for kind, window, part in self._scopes
            if window.limit is not None or window.blocked_until > now
        ]

    def _prune(self, now: float) -> None:
        for _, window, _ in self._scopes:
            window.prune(now)

    @staticmethod
    def _fit(wanted: list[tuple[RateLimitScope, _Window, float]], t: float) -> float:
        """The earliest time ``>= t`` at which the amounts ``wanted`` fit every window."""
        while True:
            later = t
            for _, window, amount in wanted:
                at = window.earliest(amount, t)
                if at > later:
                    later = at
            if later <= t:
                return t
            t = later

    def _place(self, res: Reservation, t: float) -> None:
        wanted = self._windows(res.tokens, res.input_tokens, t)
        t = self._fit(wanted, t)
        res.start_at = t
        for kind, window, amount in wanted:
            if window.limit is None:
                continue  # only blocked: nothing to count
            entry = _Entry(t, amount)
            window.entries.append(entry)
            window.used += amount
            res._entries.append((kind, window, entry))

    def _unplace(self, res: Reservation) -> None:
        for _, window, entry in res._entries:
            window.remove(entry)
        res._entries.clear()

    def _reschedule(self, now: float) -> None:
        """Re-place every waiting reservation, in arrival order, under the current rules."""
        if not self._waiting:
            return  # nobody to move (the windows are pruned where they are read)
        self._prune(now)
        for res in self._waiting:
            self._unplace(res)
        t = max(now, self._paused_until)
        for res in self._waiting:
            self._place(res, t)
            t = res.start_at

    def reserve(
        self,
        tokens: int = 0,
        *,
        now: float,
        input_tokens: int | None = None,
        max_wait: float | None = None,
    ) -> Reservation:
        """Place a caller that will use about ``tokens`` tokens (``input_tokens`` of them the
        prompt; default: all). Raises :class:`ClientRateLimitTimeout` if it would have to wait
        longer than ``max_wait`` (default: the limiter's)."""
        if isinstance(tokens, bool) or tokens < 0:
            raise ValueError("tokens must be an int >= 0")
        bound = self.max_wait if max_wait is None else max_wait
        prompt = tokens if input_tokens is None else max(0, min(input_tokens, tokens))
        res = Reservation(tokens=tokens, input_tokens=prompt)
        self._prune(now)
        floor = max(now, self._paused_until)
        if self._waiting:
            floor = max(floor, self._waiting[-1].start_at)
        self._place(res, floor)
        wait = res.start_at - now
        if wait > bound + _EPS:
            self._unplace(res)
            raise ClientRateLimitTimeout(wait, bound)
        res.deadline, res.max_wait = now + bound, bound
        if wait <= 0:
            res.state = "granted"
        else:
            self._waiting.append(res)
        return res

    def delay(self, tokens: int = 0, *, now: float) -> float:
        """Seconds a caller asking now for about ``tokens`` tokens would wait (``0``: none);
        nothing is recorded. What a gateway asks before it accepts work it would otherwise
        have to hold."""
        self._prune(now)
        floor = max(now, self._paused_until)
        if self._waiting:
            floor = max(floor, self._waiting[-1].start_at)
        amount = max(0, tokens)
        return max(0.0, self._fit(self._windows(amount, amount, floor), floor) - now)

    def poll(self, res: Reservation, now: float) -> float:
        """Seconds ``res`` must still wait; ``0`` grants it. Raises (and cancels ``res``) when
        re-placing pushed its start past its deadline."""
        if res.state != "waiting":
            if res.state == "cancelled":
                raise ValueError("the reservation was cancelled")
            return 0.0
        if res.start_at <= now:
            res.state = "granted"
            self._waiting.remove(res)
            return 0.0
        if res.start_at > res.deadline + _EPS:
            wait = res.start_at - now
            self.cancel(res, now=now)
            raise ClientRateLimitTimeout(wait, res.max_wait)
        return res.start_at - now

    def cancel(self, res: Reservation, *, now: float) -> None:
        """Give back a reservation that has not been granted (its caller gave up waiting);
        later callers move up. Idempotent; no effect on granted reservations."""
        if res.state != "waiting":
            return
        res.state = "cancelled"
        self._waiting.remove(res)
        self._unplace(res)
        self._reschedule(now)

    def settle(
        self,
        res: Reservation,
        total_tokens: int,
        *,
        now: float,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Replace the estimate of a granted reservation by the tokens actually used (the
        server's ``usage``; for a stream that broke, what is known). ``input_tokens`` /
        ``output_tokens`` default to the reserved prompt part and the rest."""
        if res.state == "waiting":
            raise ValueError("settle() needs a granted reservation")
        if res.state == "cancelled":
            return
        total = max(0, total_tokens)
        prompt = min(res.input_tokens, total) if input_tokens is None else max(0, input_tokens)
        answer = total - prompt if output_tokens is None else output_tokens
        actual = {"tokens": total, "input_tokens": prompt, "output_tokens": max(0, answer)}
        for kind, window, entry in res._entries:
            if kind in actual:
                new = actual[kind]
                if entry.live:
                    window.used += new - entry.amount
                entry.amount = new
        res.tokens, res.input_tokens = total, min(prompt, total)
        res.state = "settled"
        self._reschedule(now)

    def release(self, res: Reservation, *, now: float) -> None:
        """Give back the tokens of a request that did not run (a waiting one is cancelled);
        the request itself stays counted."""
        if res.state == "waiting":
            self.cancel(res, now=now)
        elif res.state in ("granted", "settled"):
            self.settle(res, 0, now=now, input_tokens=0, output_tokens=0)
            res.state = "released"

    def update_from_headers(self, headers: Mapping[str, str], *, now: float) -> None:
        """Adapt to a response's ``X-Ratelimit-*`` headers (see the module docstring)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        server, seen = self._server, self._seen
        changed = False
        for scope, (limit_name, remaining_name) in _HEADERS.items():
            raw = lowered.get(limit_name)
            if raw is not None and raw != seen.get(scope):  # (most responses repeat it)
                seen[scope] = raw
                limit = _header_int(raw)
                if limit is not None and limit > 0 and server.get(scope) != limit:
                    server[scope] = limit
                    changed = True
            raw = lowered.get(remaining_name)
            if raw is not None and not _at_least_one(raw) and _header_int(raw) == 0:
                self._budgets[scope].block(now)
                changed = True
        if not changed:
            return  # the same limits as the last response's: no waiter moves
        self._apply_limits()
        self._reschedule(now)

    def on_rate_limited(
        self, retry_after: float | None = None, *, now: float, scope: RateLimitScope | None = None
    ) -> None:
        """The server refused a request for its rate (HTTP 429, v1 4/18/336501-336507): pause
        every caller for ``retry_after`` seconds (when unknown: ``default_pause``, unless a
        ``scope`` is given), and block the budget named by ``scope`` (see
        :func:`rate_limit_scope`)."""
        if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
            self._paused_until = max(self._paused_until, now + retry_after)
        elif scope is None:
            self._paused_until = max(self._paused_until, now + self.default_pause)
        blocked = {
            "requests": (self._minute,),
            "tokens": (self._tokens, self._input, self._output),
            "input_tokens": (self._input,),
            "output_tokens": (self._output,),
        }
        for window in blocked.get(scope or "", ()):
            window.block(now)
        self._reschedule(now)


_HEADERS: dict[RateLimitScope, tuple[str, str]] = {
    "requests": ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"),
    "tokens": ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"),
    "input_tokens": ("x-ratelimit-limit-input-tokens", "x-ratelimit-remaining-input-tokens"),
    "output_tokens": ("x-ratelimit-limit-output-tokens", "x-ratelimit-remaining-output-tokens"),
}
"""Each budget's two headers (``limit`` and ``remaining``), lower-cased."""


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _at_least_one(value: str) -> bool:
    """Whether ``value`` is plainly a whole number of at least 1 (ASCII digits, no leading
    zero): a remaining budget that is not spent, known without parsing it."""
    return value.isascii() and value.isdigit() and value[0] != "0"


def _header_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number >= 0 else None


_SCOPE_BY_V1: dict[int, RateLimitScope] = {
    336501: "requests",
    336507: "requests",
    336502: "tokens",
    336503: "input_tokens",
    336504: "output_tokens",
}
_SCOPE_BY_V2: tuple[tuple[str, RateLimitScope], ...] = (
    ("input_tpm", "input_tokens"),
    ("output_tpm", "output_tokens"),
    ("tpm", "tokens"),
    ("rpm", "requests"),
)


def rate_limit_scope(error: BaseException) -> RateLimitScope | None:
    """Which budget a rate-limit error says ran out (for :meth:`RateLimiter.on_rate_limited`):
    v1 336501/336507 and v2 ``*rpm*`` codes are ``"requests"``, 336502 and ``*tpm*`` codes
    ``"tokens"``, 336503/336504 and ``input_tpm``/``output_tpm`` codes the v2 halves; other
    errors (QPS, cluster limits, plain 429) give ``None``."""
    code = error.code if isinstance(error, APIError) else None
    if isinstance(code, int):
        return _SCOPE_BY_V1.get(code)
    if isinstance(code, str):
        lowered = code.lower()
        return next((scope for part, scope in _SCOPE_BY_V2 if part in lowered), None)
    return None
