"""Per-key limits of a fleet in Redis: one atomic script per request, the same buckets.

Theory of operation
===================

:class:`SharedLimits` is the :class:`~._limits.Limits` of a fleet (``redis_url`` set). It
keeps the rules of the in-process :class:`~._limits.KeyLimiter` — concurrency first, then the
request bucket looked at, then the tokens, and only then anything taken, so a refused request
spends nothing — but the state lives in Redis and every decision is **one** ``EVALSHA`` of
:data:`ADMIT_SCRIPT`, sent at once, or with the other decisions made while one is in flight
in one pipeline (``_background_calls``: a burst of starts costs two round trips, not one
each; the script is loaded again after a ``NOSCRIPT``, e.g. when Redis restarted). O(1) per
request except for dropping expired leases, which is linear in what expired. Two keys per API
key, both hash-tagged ``{<key id>}`` (one Cluster slot): the hash ``limits:{id}`` and the
lease set ``lease:{id}`` (``_leases``).

- **Requests per minute**: a token bucket of capacity RPM refilling RPM/60 a second, starting
  full — exactly :class:`~._limits.RequestBucket` (fields ``rc``/``rl``/``ru``: capacity,
  level, updated). A changed RPM keeps what was spent.
- **Tokens per minute**: a token bucket of capacity TPM refilling TPM/60 a second (fields
  ``tc``/``tl``/``tu``). A request reserves its estimate: it passes when the bucket holds
  ``min(estimate, TPM)`` (an estimate above the limit waits for a full bucket, as the
  sliding window does for an amount above its limit) and the whole estimate is taken, so the
  level may go below zero. :meth:`SharedAdmission.settle` gives back (or takes more of) the
  difference to the real usage, with :data:`SETTLE_SCRIPT`. The in-process limiter counts TPM
  in a 60 s sliding window instead; both admit TPM at once from idle and TPM per minute over
  any long stretch, but after a burst the bucket lets tokens back in continuously (TPM/60 a
  second) where the window frees them when the burst ages out — a bucket needs O(1) state.
- **Concurrent streams**: a lease per stream (``_leases``): the script drops expired leases,
  counts, and adds one scored ``now + lease_ttl``; the process renews its leases every
  ``lease_ttl / 3``. Keys without a stream limit take no lease (nothing to count).
- The hash expires once both buckets would be full again (a missing hash *is* a full
  bucket), so idle keys cost no memory.

``Retry-After`` is computed from the script's answer: which limit refused (streams, requests,
tokens) and the seconds until enough has refilled.

**The upstream request goes out while the script decides** when the key had room to spare
(:meth:`SharedLimits.overlap`). The script's round trip is short in Redis, but on a busy event
loop it costs two or three loop iterations, and a burst of starts queues behind the pipeline in
flight: measured at 2,500–3,000 ERNIE-paced streams, half the starts waited more than 2.5 ms
for it and a tenth more than 25 ms, where the in-process limiter adds nothing
(``bench/PROFILE.md``). Every chunk of a stream inherits its start's delay. So an admission
answers with what it left — the request bucket's level, the token bucket's level, the streams
open — and while that answer is younger than :data:`ROOM_AGE` and every limit keeps
:data:`ROOM_MARGIN` of its size to spare after this request (counted down locally by each
overlapped start, so a burst cannot spend the room twice), the answer use case sends the
upstream request first and waits for the decision before a byte reaches the client
(``_answers``). Should the script refuse after all (another instance took the room), the
upstream request is cut and the client gets the same 429; the room is forgotten, so the key's
next starts wait for their decision again until one reports room. What that costs: per
instance, the overlapped starts in flight when a key runs out (one round trip's worth) — never
a client over its limit, whose starts all wait. Keys without a recent admission (quiet keys,
whose round trip is short anyway) wait as before.

**Time** is Redis's ``TIME`` (one clock for the fleet), or the injected ``clock`` (tests).

**Failure policy**: if Redis does not answer within ``redis_timeout``, the request is refused
503 ``shared_state_unavailable`` with ``Retry-After`` — never admitted under per-process limits,
which would multiply every limit by the number of instances. A key with no limits at all is
refused the same way while Redis is known to be down (the last call failed and a ``PING`` fails
too): its answer would have no log the other instances could resume or cancel. Settling and
releasing happen in the background after the answer; if Redis is down then, the reservation
stays as estimated and the lease expires within its TTL.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from .._clock import Clock
from ._leases import CLOCK_LUA, Leases, clock_arg
from ._limits import STREAMS_RETRY_AFTER, Admission, KeyLimits, Rejection, rate_limited
from ._redis import SharedStateError

__all__ = [
    "ADMIT_SCRIPT",
    "ROOM_AGE",
    "ROOM_MARGIN",
    "SETTLE_SCRIPT",
    "SHARED_STATE_RETRY_AFTER",
    "SharedAdmission",
    "SharedLimits",
    "unavailable",
]

SHARED_STATE_RETRY_AFTER = 1.0
"""``Retry-After`` (s) of a 503 ``shared_state_unavailable``."""

ROOM_AGE = 2.0
"""Seconds an admission's account of a key's room lets its next starts overlap their
decision (:meth:`SharedLimits.overlap`)."""

ROOM_MARGIN = 0.1
"""The share of each limit that must be left after a start for it to overlap its decision."""

ROOM_KEYS = 4096
"""Keys whose room is remembered (the most recently admitted; older ones wait again)."""


class _Room(NamedTuple):
    """What the last admission of a key left, as this process counts it down since."""

    at: float  # when the admission answered (the limits' monotonic clock)
    limits: KeyLimits  # the effective limits it was decided under
    requests: float  # the request bucket's level (0 when not limited)
    tokens: float  # the token bucket's level (0 when not limited)
    streams: int  # the streams open


_BUCKET_LUA = """
local EPS = 1e-9
-- the level of bucket p ('r' or 't') of capacity cap at `now`, refilled, resized
local function level_of(p, cap)
  local f = redis.call('HMGET', KEYS[1], p .. 'c', p .. 'l', p .. 'u')
  local old, level, updated = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  if not level or not old or not updated then return cap, now end
  if now > updated then
    level = math.min(old, level + (now - updated) * old / 60)
    updated = now
  end
  return math.min(level, cap), updated
end
-- seconds until bucket p would be full again
local function full_in(cap, level)
  if cap <= 0 then return 0 end
  return math.max(0, (cap - level) * 60 / cap)
end
"""

ADMIT_SCRIPT = (
    CLOCK_LUA
    + _BUCKET_LUA
    + """
-- KEYS[1]: the key's limits hash; KEYS[2]: its lease set
-- ARGV: now, rpm, tpm, max_streams (0: none), estimate, lease id, lease ttl (s)
-- → {0, '', streams, requests left, tokens left} admitted (left: '' when not limited);
--   {1, wait, streams} too many streams;
--   {2, wait, 0} requests per minute; {3, wait, 0} tokens per minute
local rpm, tpm, max_streams = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local estimate, lease, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local streams = 0
if max_streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  streams = redis.call('ZCARD', KEYS[2])
  if streams >= max_streams then return {1, '', streams} end
end
local rl, ru, tl, tu
if rpm > 0 then
  rl, ru = level_of('r', rpm)
  local missing = 1 - rl
  if missing > EPS then return {2, tostring(missing * 60 / rpm), 0} end
end
if tpm > 0 then
  tl, tu = level_of('t', tpm)
  local missing = math.min(estimate, tpm) - tl
  if missing > EPS then return {3, tostring(missing * 60 / tpm), 0} end
end
local expire = 0
if rpm > 0 then
  redis.call('HSET', KEYS[1], 'rc', rpm, 'rl', tostring(rl - 1), 'ru', tostring(ru))
  expire = math.max(expire, full_in(rpm, rl - 1))
end
if tpm > 0 then
  redis.call('HSET', KEYS[1], 'tc', tpm, 'tl', tostring(tl - estimate), 'tu', tostring(tu))
  expire = math.max(expire, full_in(tpm, tl - estimate))
end
if expire > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil(expire * 1000) + 1000) end
if max_streams > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[2], math.ceil(ttl * 1000) + 1000)
  streams = streams + 1
end
local rleft, tleft = '', ''
if rpm > 0 then rleft = tostring(rl - 1) end
if tpm > 0 then tleft = tostring(tl - estimate) end
return {0, '', streams, rleft, tleft}
"""
)
"""Admit one request atomically (see the module docstring)."""

SETTLE_SCRIPT = (
    CLOCK_LUA
    + _BUCKET_LUA
    + """
-- KEYS[1]: the key's limits hash; ARGV: now, tpm, tokens to give back (negative: take)
local tpm, back = tonumber(ARGV[2]), tonumber(ARGV[3])
local tl, tu = level_of('t', tpm)
tl = math.min(tpm, tl + back)
redis.call('HSET', KEYS[1], 'tc', tpm, 'tl', tostring(tl), 'tu', tostring(tu))
local pttl = redis.call('PTTL', KEYS[1])
redis.call('PEXPIRE', KEYS[1], math.max(pttl, math.ceil(full_in(tpm, tl) * 1000) + 1000))
return tostring(tl)
"""
)
"""Replace a request's token estimate by its real usage in the key's token bucket."""


class SharedAdmission(Admission):
    """An admission of :class:`SharedLimits`: its lease (if the key limits streams) and its
    token reservation live in Redis."""

    __slots__ = ("_lease", "_limits", "_tokens", "_tpm")

    def __init__(
        self,
        key_id: str,
        limits: SharedLimits,
        lease: tuple[str, str] | None,
        tpm: int | None,
        tokens: int,
    ) -> None:
        super().__init__(key_id)
        self._limits = limits
        self._lease = lease
        self._tpm = tpm
        self._tokens = tokens

    @property
    def reserved_tokens(self) -> int | None:
        """The tokens counted against the key's TPM; ``None`` without a token limit."""
        return None if self._tpm is None else self._tokens

    def settle(self, total_tokens: int, now: float) -> None:
        """Count ``total_tokens`` instead of what is reserved (in the background)."""
        if self._tpm is None:
            return
        total = max(0, total_tokens)
        back, self._tokens = self._tokens - total, total
        if back:
            self._limits.settle_tokens(self.key_id, self._tpm, back)

    def release(self) -> None:
        """Give the lease back (in the background). Idempotent."""
        if not self._released:
            self._released = True
            if self._lease is not None:
                self._limits.leases.drop(*self._lease)


class SharedLimits:
    """Per-key limits kept in Redis for the whole fleet (see the module docstring)."""

    def __init__(
        self,
        defaults: KeyLimits,
        leases: Leases,
        *,
        clock: Clock | None = None,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self._defaults = defaults
        self._monotonic = monotonic  # the age of an admission's room (this process's clock)
        self.leases = leases
        self.redis = leases.redis
        self._clock = clock
        self._admit: Any = None
        self._settle: Any = None
        self._room: dict[str, _Room] = {}  # key id → its last admission's room, oldest first

    @property
    def defaults(self) -> KeyLimits:
        """The server-wide limits."""
        return self._defaults

    def limits_key(self, key_id: str) -> str:
        """The hash of ``key_id``'s buckets."""
        return self.redis.key("limits", key_id)

    def overlap(self, key_id: str, limits: KeyLimits | None, estimate_tokens: int) -> bool:
        """Whether this start's upstream request may go out while :meth:`acquire` decides:
        the key's last admission here is younger than :data:`ROOM_AGE`, under the same
        limits, and after this request every limit keeps :data:`ROOM_MARGIN` of its size
        to spare. A yes takes this request's share off the room it was given."""
        room = self._room.get(key_id)
        if room is None or not self.redis.healthy:
            return False
        effective = self._defaults if limits is None else limits.over(self._defaults)
        if effective != room.limits or self._monotonic() - room.at > ROOM_AGE:
            return False
        estimate = max(0, estimate_tokens)
        rpm, tpm, most = effective.rpm, effective.tpm, effective.max_streams
        if (
            (rpm is not None and room.requests - 1 < max(1.0, rpm * ROOM_MARGIN))
            or (tpm is not None and room.tokens - estimate < tpm * ROOM_MARGIN)
            or (most is not None and room.streams + 1 > most * (1 - ROOM_MARGIN))
        ):
            return False
        self._room[key_id] = room._replace(
            requests=room.requests - 1, tokens=room.tokens - estimate, streams=room.streams + 1
        )
        return True

    def _remember(self, key_id: str, effective: KeyLimits, answer: list[Any]) -> None:
        """Keep what an admission left of ``key_id``'s limits (for :meth:`overlap`)."""
        rooms = self._room
        rooms.pop(key_id, None)
        rooms[key_id] = _Room(
            self._monotonic(),
            effective,
            float(answer[3] or 0),
            float(answer[4] or 0),
            int(answer[2]),
        )
        if len(rooms) > ROOM_KEYS:
            del rooms[next(iter(rooms))]

    async def acquire(
        self, key_id: str, limits: KeyLimits | None, estimate_tokens: int
    ) -> Admission | Rejection:
        """Admit or refuse, with one script call (503 when Redis does not answer)."""
        effective = self._defaults if limits is None else limits.over(self._defaults)
        if effective.rpm is None and effective.tpm is None and effective.max_streams is None:
            # Nothing to count, but an answer of a fleet still needs Redis (its log is what
            # resume and cancel on the other instances read): a Redis known to have failed is
            # asked once more before the request is refused, so the refusal ends by itself.
            if not self.redis.healthy:
                try:
                    await self.redis.call(self.redis.client.ping(), "PING")
                except SharedStateError:
                    return unavailable()
            return SharedAdmission(key_id, self, None, None, 0)
        if self._admit is None:
            self._admit = self.redis.client.register_script(ADMIT_SCRIPT)
        estimate = max(0, estimate_tokens)
        lease_key = self.leases.key(key_id)
        lease_id = self.leases.new_id()
        args = [
            clock_arg(self._clock),
            effective.rpm or 0,
            effective.tpm or 0,
            effective.max_streams or 0,
            estimate,
            lease_id,
            self.leases.ttl,
        ]
        try:  # at once, or with the starts made meanwhile (_background_calls)
            answer = await self.leases.later.ask(
                "admit", self._admit, [self.limits_key(key_id), lease_key], args
            )
        except SharedStateError:
            self._room.pop(key_id, None)
            return unavailable()
        verdict, wait, streams = int(answer[0]), answer[1], int(answer[2])
        if verdict == 0:
            self._remember(key_id, effective, answer)
        else:
            self._room.pop(key_id, None)
        if verdict == 1:
            return Rejection(
                "too_many_streams",
                f"this API key already has {streams} streams open "
                f"(limit {effective.max_streams}); wait for one to end",
                STREAMS_RETRY_AFTER,
            )
        if verdict in (2, 3):
            return rate_limited(effective, float(wait))
        lease = None
        if effective.max_streams is not None:
            lease = (lease_key, lease_id)
            self.leases.add(*lease)
        return SharedAdmission(key_id, self, lease, effective.tpm, estimate)

    def settle(self, admission: Admission, total_tokens: int) -> None:
        """Count the tokens the request actually used instead of its estimate."""
        admission.settle(total_tokens, 0.0)

    def release(self, admission: Admission) -> None:
        """The stream ended: free its lease. Idempotent."""
        admission.release()

    def settle_tokens(self, key_id: str, tpm: int, back: int) -> None:
        """Give ``back`` tokens to ``key_id``'s token bucket (negative: take), in the
        background."""
        if self._settle is None:
            self._settle = self.redis.client.register_script(SETTLE_SCRIPT)
        self.leases.later.script(
            "settle tokens",
            self._settle,
            [self.limits_key(key_id)],
            [clock_arg(self._clock), tpm, back],
        )


def unavailable() -> Rejection:
    """503 ``shared_state_unavailable``: no limit could be checked."""
    return Rejection(
        "shared_state_unavailable",
        "the server's shared state (Redis) is unreachable, so limits cannot be checked; "
        "retry shortly",
        SHARED_STATE_RETRY_AFTER,
        status=503,
    )
