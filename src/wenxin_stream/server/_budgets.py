"""Per-key budgets of ``wenxin serve``: tokens or CNY per Beijing day and/or month.

Theory of operation
===================

A key may carry up to four budgets (:class:`Budgets`, set with ``wenxin keys create`` /
``update``): total tokens per day, per month, nano-CNY per day, per month (``_usage``:
periods are Beijing's, Baidu's billing day). They are enforced **before** the upstream is
called, like TPM: :meth:`BudgetLimiter.reserve` counts the request's *estimate* (its
estimated prompt plus its answer allowance — ``max_tokens`` when given — and that at the
model's price) against every budget of the key, and refuses at once when any budget would be
exceeded; when the answer ends, :meth:`BudgetHold.settle` replaces the estimate by what the
answer's upstream requests really used (the sum of its usage records). A refusal is
**429** ``budget_exceeded`` (type ``insufficient_quota``, ``x-should-retry: false``: waiting
seconds will not help) naming the budget, with ``Retry-After`` = the seconds until that
period resets (Beijing midnight, or the 1st of next month).

**Why 429 and not 402.** 402 Payment Required is reserved and clients have no behaviour for
it; OpenAI answers a spent quota 429 ``insufficient_quota``, which every OpenAI SDK and proxy
already understands, and ``Retry-After`` tells when to come back. We keep the one convention
(ERNIE's own quota errors map to the same type: ``docs/ERRORS.md``).

**Exact under concurrency.** A counter per (key, period) holds what is spent *plus* what is
reserved by requests in flight; admission checks and reserves in one step with no await in
between (in-process), or in one Lua script (fleet). So N racing requests can never all pass a
budget only k fit in. The bound: the spend of a period can exceed its budget by no more than
the estimate errors of the requests admitted while it was nearly spent — Σ max(0, actual −
estimate) over them; a request whose estimate bounds its real usage (``max_tokens`` given,
and the prompt estimate errs high by design) cannot overspend at all. A request whose
estimate alone exceeds what is left is refused, even if it might have used less.

**Where the count starts.** The first request of a key in a period (per process, or per
fleet when the counter is in Redis) loads what the key already spent in that period from the
store (``usage_records``), so a restart forgets nothing. A request is counted in the period
in which it was admitted.

**In Redis** (:class:`SharedBudgets`, with ``redis_url``): a hash per key and period
(``budget:{<key id>}:day:<YYYY-MM-DD>`` and ``…:month:<YYYY-MM>``, fields ``t`` tokens and
``c`` nano-CNY, expiring a day after the period ends). :data:`RESERVE_SCRIPT` checks and
reserves every budget in one ``EVALSHA``; a missing hash makes it answer "need the base", the
caller reads the store and calls again with it, and the script creates the hash only if it is
still missing (another instance may have done so meanwhile: its figure wins).
:data:`SETTLE_SCRIPT` adds the difference after the answer, in the background. Redis gone →
503 ``shared_state_unavailable``, as for the other shared limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ._leases import Leases
from ._limits import Rejection
from ._limits_redis import unavailable
from ._redis import SharedStateError
from ._usage import Period, cny_from_nano, period_of, period_start, retry_after

__all__ = [
    "MAX_BUDGET",
    "RESERVE_SCRIPT",
    "SETTLE_SCRIPT",
    "BudgetHold",
    "BudgetLimiter",
    "Budgeter",
    "Budgets",
    "SharedBudgets",
    "SpentSince",
    "budget_exceeded",
]

MAX_BUDGET = 2**62
"""The largest budget (tokens or nano-CNY; the columns are ``BIGINT``)."""

SpentSince = Callable[[str, str], Awaitable[tuple[int, int]]]
"""``(key_id, first Beijing day) → (tokens, nano-CNY)`` spent since then: the store's."""

_NAMES: dict[tuple[str, Period], str] = {
    ("tokens", "day"): "daily token budget",
    ("tokens", "month"): "monthly token budget",
    ("nano", "day"): "daily CNY budget",
    ("nano", "month"): "monthly CNY budget",
}


@dataclass(frozen=True, slots=True)
class Budgets:
    """A key's budgets: total tokens and nano-CNY per Beijing day and month (``None``: no
    such budget)."""

    tokens_day: int | None = None
    tokens_month: int | None = None
    nano_day: int | None = None
    nano_month: int | None = None

    def __post_init__(self) -> None:
        for name in ("tokens_day", "tokens_month", "nano_day", "nano_month"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_BUDGET
            ):
                raise ValueError(f"budget {name} must be a whole number from 1 to {MAX_BUDGET}")

    @property
    def any(self) -> bool:
        """Whether any budget is set."""
        values = (self.tokens_day, self.tokens_month, self.nano_day, self.nano_month)
        return any(v is not None for v in values)

    def periods(self) -> list[Period]:
        """The periods that have a budget."""
        found: list[Period] = []
        if self.tokens_day is not None or self.nano_day is not None:
            found.append("day")
        if self.tokens_month is not None or self.nano_month is not None:
            found.append("month")
        return found

    def limit(self, metric: str, period: Period) -> int | None:
        """The budget of ``metric`` (``tokens`` or ``nano``) per ``period``."""
        value: int | None = getattr(self, f"{metric}_{period}")
        return value

    def describe(self) -> str:
        """The budgets in words (``""``: none)."""
        parts = []
        for (metric, period), name in _NAMES.items():
            value = self.limit(metric, period)
            if value is not None:
                shown = f"{value:,} tokens" if metric == "tokens" else f"{cny_from_nano(value)} CNY"
                parts.append(f"{name} {shown}")
        return ", ".join(parts)


def budget_exceeded(
    metric: str, period: Period, limit: int, used: int, estimate: int, reset_at: float, now: float
) -> Rejection:
    """429 ``budget_exceeded``: ``metric``'s budget per ``period`` cannot take the request."""
    name = _NAMES[(metric, period)]

    def shown(v: int) -> str:
        return f"{v:,} tokens" if metric == "tokens" else f"{cny_from_nano(v)} CNY"

    left = max(0, limit - used)
    resets = time.strftime("%Y-%m-%d %H:%M", time.gmtime(reset_at + 8 * 3600))
    return Rejection(
        "budget_exceeded",
        f"the {name} of this API key ({shown(limit)}) cannot take this request: "
        f"{shown(left)} left, the request may use up to {shown(estimate)}; "
        f"it resets at {resets} Beijing time",
        retry_after(reset_at, now),
    )


class BudgetHold:
    """A request's reservation against its key's budgets; :meth:`settle` it once with what
    the request really used (idempotent: a second call does nothing)."""

    __slots__ = ("_counters", "_settle", "estimate", "settled")

    def __init__(
        self,
        estimate: tuple[int, int],
        counters: list[list[int]] | None = None,
        settle: Callable[[int, int], None] | None = None,
    ) -> None:
        self.estimate = estimate
        """The (tokens, nano-CNY) reserved."""
        self._counters = counters or []
        self._settle = settle
        self.settled = False

    def settle(self, tokens: int, nano: int) -> None:
        """Count ``tokens`` and ``nano`` instead of the estimate."""
        if self.settled:
            return
        self.settled = True
        dt, dc = tokens - self.estimate[0], nano - self.estimate[1]
        for counter in self._counters:
            counter[0] += dt
            counter[1] += dc
        if self._settle is not None and (dt or dc):
            self._settle(dt, dc)

    def release(self) -> None:
        """The request never reached the upstream: give the whole estimate back."""
        self.settle(0, 0)


NO_HOLD_ESTIMATE = (0, 0)


class Budgeter(Protocol):
    """Budget admission, wherever its counters live."""

    async def reserve(
        self, key_id: str, budgets: Budgets, tokens: int, nano: int
    ) -> BudgetHold | Rejection:
        """Reserve an estimate against ``key_id``'s budgets, or refuse."""
        ...


class BudgetLimiter:
    """The budgets of one process (see the module docstring); ``clock`` is POSIX time."""

    def __init__(self, spent_since: SpentSince, *, clock: Callable[[], float] = time.time) -> None:
        self._spent_since = spent_since
        self._clock = clock
        self._counters: dict[tuple[str, str], list[int]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[list[int]]] = {}
        self._labels: tuple[str, str] = ("", "")

    def __len__(self) -> int:
        """How many (key, period) counters are held."""
        return len(self._counters)

    async def _counter(self, key_id: str, period: Period, now: float) -> list[int]:
        label, _ = period_of(period, now)
        slot = (key_id, label)
        counter = self._counters.get(slot)
        if counter is not None:
            return counter
        pending = self._loading.get(slot)
        if pending is None:  # one store read per (key, period), however many requests wait
            pending = self._loading[slot] = asyncio.get_running_loop().create_future()
            try:
                tokens, nano = await self._spent_since(key_id, period_start(period, now))
            except BaseException as exc:
                del self._loading[slot]
                pending.set_exception(exc)
                pending.exception()  # retrieved: the waiters (if any) raise it themselves
                raise
            del self._loading[slot]
            counter = self._counters.setdefault(slot, [tokens, nano])
            pending.set_result(counter)
            return counter
        return await asyncio.shield(pending)

    def _sweep(self, now: float) -> None:
        labels = (period_of("day", now)[0], period_of("month", now)[0])
        if labels != self._labels:  # a period ended: its counters are history
            self._labels = labels
            for slot in [s for s in self._counters if s[1] not in labels]:
                del self._counters[slot]

    async def reserve(
        self, key_id: str, budgets: Budgets, tokens: int, nano: int
    ) -> BudgetHold | Rejection:
        """Reserve (``tokens``, ``nano``) against every budget of ``key_id``, or refuse
        naming the first budget it would exceed. Raises what the store raises on loading."""
        if not budgets.any:
            return BudgetHold(NO_HOLD_ESTIMATE)
        now = self._clock()
        self._sweep(now)
        periods = budgets.periods()
        counters = [await self._counter(key_id, period, now) for period in periods]
        # no await from here on: the check and the reservation are one step
        estimate = {"tokens": max(0, tokens), "nano": max(0, nano)}
        for period, counter in zip(periods, counters, strict=True):
            for index, metric in enumerate(("tokens", "nano")):
                limit = budgets.limit(metric, period)
                if limit is not None and counter[index] + estimate[metric] > limit:
                    _, reset_at = period_of(period, now)
                    return budget_exceeded(
                        metric, period, limit, counter[index], estimate[metric], reset_at, now
                    )
        for counter in counters:
            counter[0] += estimate["tokens"]
            counter[1] += estimate["nano"]
        return BudgetHold((estimate["tokens"], estimate["nano"]), counters)


_RESERVE_LUA = """
-- KEYS: the key's hash per budgeted period (1 or 2); ARGV[1]: est tokens, ARGV[2]: est nano,
-- then per key i: limit tokens, limit nano (0: none), expiry (ms), base tokens, base nano
-- ('' = no base known: answer {-1, i} when the hash is missing)
-- → {0} reserved; {-1, i} need the base of KEYS[i]; {i, m, used} KEYS[i]'s metric m is spent
local et, ec = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 5
  if redis.call('EXISTS', KEYS[i]) == 0 then
    if ARGV[a + 4] == '' then return {-1, i} end
    redis.call('HSET', KEYS[i], 't', ARGV[a + 4], 'c', ARGV[a + 5])
    redis.call('PEXPIRE', KEYS[i], ARGV[a + 3])
  end
  local f = redis.call('HMGET', KEYS[i], 't', 'c')
  local t, c = tonumber(f[1]) or 0, tonumber(f[2]) or 0
  local lt, lc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if lt > 0 and t + et > lt then return {i, 1, tostring(t)} end
  if lc > 0 and c + ec > lc then return {i, 2, tostring(c)} end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 't', et)
  redis.call('HINCRBY', KEYS[i], 'c', ec)
end
return {0}
"""

RESERVE_SCRIPT = _RESERVE_LUA
"""Check and reserve a request's estimate against every budget of a key, atomically."""

SETTLE_SCRIPT = """
-- KEYS: the hashes the request was reserved in; ARGV: tokens delta, nano delta
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 't', ARGV[1])
    redis.call('HINCRBY', KEYS[i], 'c', ARGV[2])
  end
end
return 0
"""
"""Replace a reservation by the real usage (an expired period is left alone)."""

_EXPIRE_AFTER = 86_400.0
"""A period's hash lives this long after the period ends (late settlements still land)."""


class SharedBudgets:
    """The budgets of a fleet, in Redis (see the module docstring); ``clock`` is POSIX time."""

    def __init__(
        self, leases: Leases, spent_since: SpentSince, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.leases = leases
        self.redis = leases.redis
        self._spent_since = spent_since
        self._clock = clock
        self._reserve: Any = None
        self._settle: Any = None

    def budget_key(self, key_id: str, period: Period, label: str) -> str:
        """The hash of ``key_id``'s counters in the period ``label``."""
        return self.redis.key("budget", key_id, period, label)

    async def reserve(
        self, key_id: str, budgets: Budgets, tokens: int, nano: int
    ) -> BudgetHold | Rejection:
        """Reserve or refuse with one script call (two when the period's hash is new);
        503 when Redis does not answer."""
        if not budgets.any:
            return BudgetHold(NO_HOLD_ESTIMATE)
        if self._reserve is None:
            self._reserve = self.redis.client.register_script(RESERVE_SCRIPT)
        now = self._clock()
        periods = budgets.periods()
        tokens, nano = max(0, tokens), max(0, nano)
        keys, resets = [], []
        for period in periods:
            label, reset_at = period_of(period, now)
            keys.append(self.budget_key(key_id, period, label))
            resets.append(reset_at)
        bases: list[tuple[int, int]] | None = None
        for _ in range(2):
            args: list[Any] = [tokens, nano]
            for i, period in enumerate(periods):
                expire_ms = int((resets[i] - now + _EXPIRE_AFTER) * 1000)
                base: tuple[Any, Any] = ("", "") if bases is None else bases[i]
                args += [
                    budgets.limit("tokens", period) or 0,
                    budgets.limit("nano", period) or 0,
                    expire_ms,
                    *base,
                ]
            try:
                answer = await self.leases.later.ask("budget", self._reserve, keys, args)
            except SharedStateError:
                return unavailable()
            verdict = int(answer[0])
            if verdict == 0:
                return BudgetHold((tokens, nano), settle=self._settler(keys))
            if verdict > 0:
                period = periods[verdict - 1]
                metric = "tokens" if int(answer[1]) == 1 else "nano"
                limit = budgets.limit(metric, period) or 0
                estimate = tokens if metric == "tokens" else nano
                return budget_exceeded(
                    metric, period, limit, int(answer[2]), estimate, resets[verdict - 1], now
                )
            bases = [
                await self._spent_since(key_id, period_start(period, now)) for period in periods
            ]
        return unavailable()  # the hash vanished twice in a row: Redis is not keeping state

    def _settler(self, keys: list[str]) -> Callable[[int, int], None]:
        def settle(tokens: int, nano: int) -> None:
            if self._settle is None:
                self._settle = self.redis.client.register_script(SETTLE_SCRIPT)
            self.leases.later.script("settle budget", self._settle, keys, [tokens, nano])

        return settle
