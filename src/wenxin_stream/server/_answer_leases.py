"""Answer leases: which process produces an answer, with a fencing token, and who takes over.

Theory of operation
===================

In a fleet, every stored answer a process produces is under a **lease** in Redis, so that
when the process dies (``kill -9``), freezes (``SIGSTOP``) or loses the network, exactly one
other process takes the answer over (``_takeover``) and the old one can never write to it
again:

==================================  ==========================================================
``<prefix>ans:{s_…}:meta``          the answer's metadata (``_eventlog_keys``) gains
                                    ``instance`` = the lease's holder, ``token`` = the fencing
                                    token (1, then +1 at each takeover), ``request`` = what the
                                    answer asked (JSON, for a continuation), ``takeovers``
``<prefix>leases:{answers}``        a sorted set: one member per answer under lease (its stream
                                    id), scored with the time (Redis ``TIME``) it expires
==================================  ==========================================================

- **Taken** by the producer's event-log writer in the batch that creates the answer's log
  (``_eventlog_writer.BATCH_SCRIPT``: holder = the producer, token 1, expiry now + ``ttl``).
- **Renewed** every ``ttl / 3`` (about every second with the default 3 s) for every answer of
  the process in ONE script call (:data:`RENEW_SCRIPT`), riding the pipeline of the
  stream-slot leases (``_leases``: no task of its own). The script renews only leases whose
  holder and token are still this process's; the others are answered as *lost*.
- **Fenced**: every write of a producer to an answer's log goes through the writer's script,
  which refuses the events of an answer whose current token is not the writer's
  (``_eventlog_writer``): a producer that froze, lost its lease and woke up cannot add a
  byte, nor mark the answer ended. The store's final record is fenced the same way: the
  taker names itself the answer's producer (``Store.take_over_message``) and the old
  producer, told by its writer that it lost the answer, records nothing.
- **Claimed** (:data:`CLAIM_SCRIPT`, run by every process about every second): every answer
  whose lease has expired is given, atomically, to the caller — holder = it, token + 1, a
  new expiry — so of all the processes that look, exactly one gets each answer. Answers that
  ended or whose metadata expired are dropped from the set instead.
- **Released** when the answer ends (the writer's script removes it from the set), and
  handed over at once at a shutdown (:meth:`AnswerLeases.hand_over`: expiry 0, claimable by
  the next process that looks).

The set is one key for the whole fleet (not hash-tagged per answer): like the reader's one
``XREAD`` over many logs, it assumes one Redis, not a Cluster (docs/SCALING.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ._leases import CLOCK_LUA
from ._redis import SharedRedis

__all__ = [
    "CLAIM_SCRIPT",
    "DEFAULT_ANSWER_LEASE_TTL",
    "RENEW_SCRIPT",
    "AnswerLeases",
    "leases_key",
]

logger = logging.getLogger("wenxin_stream.server")

DEFAULT_ANSWER_LEASE_TTL = 3.0
"""Seconds an answer's lease lives unless renewed (``answer_lease_ttl``)."""

CLAIM_LIMIT = 64
"""Most answers one claim takes (the next round takes more)."""

RENEW_SCRIPT = (
    CLOCK_LUA
    + """
-- KEYS[1]: the lease set; ARGV: now, ttl, instance, then (stream id, meta key, token)…
local ttl = tonumber(ARGV[2])
local lost = {}
for i = 4, #ARGV, 3 do
  local held = redis.call('HMGET', ARGV[i + 1], 'instance', 'token', 'ended')
  if held[1] == ARGV[3] and held[2] == ARGV[i + 2] then
    if held[3] ~= '1' then
      redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
    end
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""
)
"""Push the expiry of this process's answers forward; answers the stream ids it no longer
holds (taken over, or expired and gone)."""

CLAIM_SCRIPT = (
    CLOCK_LUA
    + """
-- KEYS[1]: the lease set; ARGV: now, ttl, instance, limit, meta key prefix, meta key suffix
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, sid in ipairs(due) do
  local meta = ARGV[5] .. sid .. ARGV[6]
  local state = redis.call('HMGET', meta, 'token', 'ended')
  if not state[1] or state[2] == '1' then
    redis.call('ZREM', KEYS[1], sid)
  else
    local token = redis.call('HINCRBY', meta, 'token', 1)
    redis.call('HSET', meta, 'instance', ARGV[3])
    redis.call('HINCRBY', meta, 'takeovers', 1)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), sid)
    out[#out + 1] = sid
    out[#out + 1] = token
  end
end
return out
"""
)
"""Take every answer whose lease expired: holder = the caller, token + 1, a new expiry, in
one atomic step; answers (stream id, new token) pairs."""

HAND_OVER_SCRIPT = """
-- KEYS[1]: the lease set; ARGV: instance, then (stream id, meta key, token)…
local given = 0
for i = 2, #ARGV, 3 do
  local held = redis.call('HMGET', ARGV[i + 1], 'instance', 'token')
  if held[1] == ARGV[1] and held[2] == ARGV[i + 2] then
    given = given + redis.call('ZADD', KEYS[1], 'XX', 'CH', 0, ARGV[i])
  end
end
return given
"""
"""Let this process's answers expire now (a shutdown hands them over)."""


def leases_key(shared: SharedRedis) -> str:
    """The sorted set of every answer under lease in the fleet."""
    return shared.key("leases", "answers")


class AnswerLeases:
    """The answers this process holds, and the scripts that renew, claim and hand them over
    (see the module docstring). Renewed by ``Leases`` (one pipeline for all)."""

    def __init__(self, shared: SharedRedis, *, instance: str, ttl: float) -> None:
        if not ttl > 0:
            raise ValueError(f"answer lease ttl must be positive, got {ttl!r}")
        self.shared = shared
        self.instance = instance
        self.ttl = ttl
        self.key = leases_key(shared)
        self._held: dict[str, int] = {}  # stream id → token
        self._renew: Any = None
        self._claim: Any = None
        self._hand_over: Any = None
        self.lost: list[str] = []
        """Stream ids the last renewal found taken from this process (the caller drains it)."""

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, stream_id: str, token: int) -> None:
        """This process holds ``stream_id`` with ``token`` (renewed from now on)."""
        self._held[stream_id] = token

    def forget(self, stream_id: str) -> None:
        """The answer ended (or was lost): stop renewing it."""
        self._held.pop(stream_id, None)

    async def drop(self, stream_id: str) -> None:
        """Forget ``stream_id`` and take it out of the lease set: nobody can take it over
        (its log lost its start, or it ended meanwhile).

        Raises:
            SharedStateError: Redis failed (the lease lapses and is claimed again).
        """
        self._held.pop(stream_id, None)
        await self.shared.call(self.shared.client.zrem(self.key, stream_id), "drop answer lease")

    def held_ids(self) -> list[str]:
        """The stream ids held here."""
        return list(self._held)

    def token(self, stream_id: str) -> int | None:
        """The token this process holds ``stream_id`` with (``None``: not held)."""
        return self._held.get(stream_id)

    def _meta(self, stream_id: str) -> str:
        return self.shared.key("ans", stream_id, "meta")

    def _triples(self, held: Iterable[tuple[str, int]]) -> list[Any]:
        args: list[Any] = []
        for stream_id, token in held:
            args += (stream_id, self._meta(stream_id), token)
        return args

    async def queue_renewal(self, pipe: Any, now: str) -> bool:
        """Add the renewal of every held answer to ``pipe`` (``now``: the scripts' clock
        argument); whether anything was added (its result is for :meth:`renewed`)."""
        if not self._held:
            return False
        if self._renew is None:
            self._renew = self.shared.client.register_script(RENEW_SCRIPT)
        args = [now, self.ttl, self.instance, *self._triples(self._held.items())]
        await self._renew(keys=[self.key], args=args, client=pipe)
        return True

    def renewed(self, result: Any) -> list[str]:
        """The renewal's result: the answers lost (forgotten here, and added to
        :attr:`lost`)."""
        lost = [s.decode() if isinstance(s, bytes) else str(s) for s in result or ()]
        for stream_id in lost:
            self._held.pop(stream_id, None)
        self.lost += lost
        return lost

    async def claim(self, now: str = "", limit: int = CLAIM_LIMIT) -> list[tuple[str, int]]:
        """Take the answers whose lease expired: (stream id, token) pairs, now held here.

        Raises:
            SharedStateError: Redis failed (nothing was taken).
        """
        if self._claim is None:
            self._claim = self.shared.client.register_script(CLAIM_SCRIPT)
        prefix, _, suffix = self._meta("\x00").partition("\x00")
        args = [now, self.ttl, self.instance, limit, prefix, suffix]
        flat = await self.shared.call(self._claim(keys=[self.key], args=args), "claim answers")
        pairs = []
        for i in range(0, len(flat), 2):
            stream_id, token = flat[i].decode(), int(flat[i + 1])
            self._held[stream_id] = token
            pairs.append((stream_id, token))
        return pairs

    async def hand_over(self, stream_ids: Iterable[str]) -> int:
        """Let the answers ``stream_ids`` of this process be claimed at once (they are
        forgotten here); how many were handed over.

        Raises:
            SharedStateError: Redis failed (they expire within ``ttl`` anyway).
        """
        held = [(s, self._held.pop(s)) for s in stream_ids if s in self._held]
        if not held:
            return 0
        if self._hand_over is None:
            self._hand_over = self.shared.client.register_script(HAND_OVER_SCRIPT)
        args = [self.instance, *self._triples(held)]
        given: int = await self.shared.call(
            self._hand_over(keys=[self.key], args=args), "hand answers over"
        )
        return given
