"""Concurrent-stream slots of a fleet as leases in Redis, renewed while their streams run.

Theory of operation
===================

A key's open streams are a sorted set in Redis (``<prefix>lease:{<key id>}``): one member per
stream, a *lease id* (``<instance id>:<n>``), scored with the time it expires. Whoever counts
the streams of a key first drops the members whose time has passed (``_limits_redis`` does it
inside its admission script: drop expired, count, add — one atomic step), so a lease that
nobody renews frees its slot by itself. That is what makes a ``kill -9`` harmless: the dead
process's leases stop being renewed and are gone within ``lease_ttl`` seconds.

:class:`Leases` is one process's book of the leases it holds. Its **renewal task** wakes every
``ttl / 3`` seconds and pushes every lease's expiry forward in **one pipeline** — one script
call per key (``RENEW``: ``ZADD XX`` for each of its leases, then the set's own expiry), not
one task or one round trip per stream. ``XX`` only updates a member that still exists: a lease
that expired while Redis was unreachable (and was dropped by somebody's count) is not
brought back, so the count never exceeds what a fresh admission could have granted; that
stream just runs on outside the count. A renewal that fails is logged and tried again at the
next tick — three ticks fit in one TTL, so one lost tick loses nothing.

The same pipeline renews the process's **liveness key** (``_liveness``: ``instance:{<id>}``,
expiry ``ttl``), whether or not any lease is held, and the task's first round runs at once,
so the key exists from start-up on; :meth:`Leases.aclose` deletes it. No task of its own: a
process that stops renewing its leases is the process that is gone.

With a fleet's answer leases (``_answer_leases``: :meth:`Leases.carry`), the same pipeline
renews them too, and the task then wakes every third of the shorter of the two TTLs. Answers
the renewal finds taken from this process, and every answer it holds once no renewal has
succeeded for the answer lease's TTL (another process may have taken them by then), are
reported to ``on_lost``: the process stops writing them (it is fenced anyway).

The time is Redis's own (``TIME`` inside the scripts) unless a ``clock`` is given (tests pass a
fake one, so a lease's life can be played out at once); every instance of a fleet then shares
one clock and nobody's skew can shorten or stretch a lease.

:meth:`Leases.drop` forgets a lease locally at once (the renewal stops) and removes it from
Redis in the background, with the other calls of that moment nobody waits for
(``_background_calls``); if that fails, the lease expires within the TTL anyway.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from .._clock import Clock
from ._background_calls import BackgroundCalls
from ._liveness import instance_key
from ._redis import SharedRedis, SharedStateError


class Carried(Protocol):
    """Leases renewed in the same pipeline (``_answer_leases.AnswerLeases``)."""

    ttl: float

    async def queue_renewal(self, pipe: Any, now: str) -> bool: ...
    def renewed(self, result: Any) -> list[str]: ...
    def held_ids(self) -> list[str]: ...


__all__ = ["DEFAULT_LEASE_TTL", "RENEW_SCRIPT", "Leases", "clock_arg"]

logger = logging.getLogger("wenxin_stream.server")

DEFAULT_LEASE_TTL = 10.0
"""Seconds a lease lives unless renewed (``lease_ttl``)."""

CLOCK_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""
"""The prelude of every script: ``now`` is ``ARGV[1]``, or Redis's ``TIME`` when it is empty."""

RENEW_SCRIPT = (
    CLOCK_LUA
    + """
-- KEYS[1]: a key's lease set; ARGV: now, ttl (s), lease ids…
local ttl = tonumber(ARGV[2])
local renewed = 0
for i = 3, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[i])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 1000)
end
return renewed
"""
)
"""Push the expiry of the given leases of one key forward (existing members only)."""


def clock_arg(clock: Clock | None) -> str:
    """``ARGV[1]`` of the scripts: the injected clock's time, or empty for Redis ``TIME``."""
    return "" if clock is None else repr(clock())


class Leases:
    """The leases this process holds, and the task that renews them (see the module
    docstring). ``instance_id`` makes lease ids unique in the fleet."""

    def __init__(
        self,
        redis: SharedRedis,
        *,
        instance_id: str,
        ttl: float = DEFAULT_LEASE_TTL,
        clock: Clock | None = None,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"lease ttl must be positive, got {ttl!r}")
        self.redis = redis
        self.ttl = ttl
        self.clock = clock
        self._instance = instance_id
        self.liveness_key = instance_key(redis, instance_id)
        """This process's liveness key (``_liveness``), renewed with the leases."""
        self._ids = itertools.count(1)
        self._held: dict[str, set[str]] = {}  # lease set → lease ids held here
        self._renew: Any = None
        self._task: asyncio.Task[None] | None = None
        self.later = BackgroundCalls(redis)
        """The calls nobody waits for (lease removals, settlements), sent together."""
        self.renewals = 0
        """Renewal rounds done (for tests and diagnostics)."""
        self.answers: Carried | None = None
        self._on_lost: Callable[[list[str]], None] = lambda lost: None
        self._renewed_at = time.monotonic()

    def carry(self, answers: Carried, on_lost: Callable[[list[str]], None]) -> None:
        """Renew ``answers`` with the stream-slot leases; ``on_lost(stream_ids)`` is told of
        the answers this process no longer holds."""
        self.answers = answers
        self._on_lost = on_lost

    @property
    def period(self) -> float:
        """Seconds between two renewals."""
        ttl = self.ttl if self.answers is None else min(self.ttl, self.answers.ttl)
        return ttl / 3

    def key(self, key_id: str) -> str:
        """The lease set of the API key ``key_id``."""
        return self.redis.key("lease", key_id)

    def new_id(self) -> str:
        """A lease id unique in the fleet."""
        return f"{self._instance}:{next(self._ids)}"

    def held(self) -> int:
        """How many leases this process holds."""
        return sum(len(ids) for ids in self._held.values())

    def add(self, lease_key: str, lease_id: str) -> None:
        """Record a lease the admission script granted (the renewal task takes it on)."""
        self._held.setdefault(lease_key, set()).add(lease_id)

    def drop(self, lease_key: str, lease_id: str) -> None:
        """The stream ended: stop renewing its lease and remove it from Redis (in the
        background; a failure leaves it to expire within the TTL)."""
        ids = self._held.get(lease_key)
        if ids is None or lease_id not in ids:
            return
        ids.discard(lease_id)
        if not ids:
            del self._held[lease_key]
        self.later.command("ZREM lease", "ZREM", lease_key, lease_id)

    async def flush(self) -> None:
        """Send the calls queued for later (releases, settlements) and wait for them."""
        await self.later.flush()

    # -- renewal ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the renewal task (now, then every ``ttl / 3`` seconds)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    async def renew(self) -> int:
        """Renew every lease held here and the liveness key now, in one pipeline; the number
        of leases renewed.

        Raises:
            SharedStateError: Redis did not answer.
        """
        if self._renew is None:
            self._renew = self.redis.client.register_script(RENEW_SCRIPT)
        now = clock_arg(self.clock)
        pipe = self.redis.client.pipeline(transaction=False)
        pipe.set(self.liveness_key, b"1", px=math.ceil(self.ttl * 1000))
        for lease_key, ids in self._held.items():
            await self._renew(keys=[lease_key], args=[now, self.ttl, *ids], client=pipe)
        answers = self.answers
        carried = answers is not None and await answers.queue_renewal(pipe, now)
        results = await self.redis.call(pipe.execute(), "renew leases")
        self.renewals += 1
        self._renewed_at = time.monotonic()
        if carried and answers is not None:
            lost = answers.renewed(results.pop())
            if lost:
                self._on_lost(lost)
        return sum(int(n) for n in results[1:])

    def _fence_self(self) -> None:
        """No renewal succeeded for the answer lease's TTL: every answer held is lost."""
        answers = self.answers
        if answers is None or time.monotonic() - self._renewed_at < answers.ttl:
            return
        lost = answers.renewed(answers.held_ids())
        if lost:
            logger.warning(
                "shared state: answer leases not renewed for %.1f s: %d answers left to "
                "another instance",
                answers.ttl,
                len(lost),
            )
            self._on_lost(lost)

    async def _loop(self) -> None:
        while True:
            try:
                await self.renew()
            except SharedStateError as exc:
                logger.warning("shared state: leases not renewed: %s", exc)
                self._fence_self()
            await asyncio.sleep(self.period)

    async def aclose(self) -> None:
        """Stop renewing and let the background removals finish (bounded by the Redis
        timeout each)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            # stopping gracefully: this process is gone for the others at once
            self.later.command("DEL liveness", "DEL", self.liveness_key)
        await self.flush()
