"""What a remote reader does besides reading: it marks the answers it follows as read
elsewhere, and ends those whose producer died.

Theory of operation
===================

The reader task of a process (``_eventlog_reader``) follows answers that other processes
produce. Once per round — at most every :data:`INTERVAL` second, between two ``XREAD`` s, never
per entry — it calls :meth:`Upkeep.run` with every answer it follows:

1. **"Read elsewhere" markers.** One pipeline sets ``ans:{s}:remote`` (``_eventlog_keys``)
   with an expiry of :attr:`Upkeep.marker_ttl` (twice ``resume_grace``) for every followed
   answer. The producer's grace timer, when it fires for an answer none of its own clients
   reads (``_relay``), asks for the marker's remaining life (:func:`remote_reader_ttl`) and
   waits that long again instead of applying ``on_disconnect``; once the last remote client
   has left, nobody refreshes the marker, it lapses, and the policy applies at the next
   firing — within ``2 × resume_grace`` of that client leaving. A key rather than a message
   on the producer's pub/sub channel: the key is state that expires by itself, so nothing is
   lost while the producer's subscription reconnects, several instances reading one answer
   need no coordination, and the producer asks only when a timer fires (rare), where a
   message would have to be sent and remembered every round for every followed answer.
2. **Dead producers.** Answers whose log has been silent for more than half of
   ``lease_ttl`` have their producers checked with :func:`_liveness.live_instances` (one
   pipeline of ``EXISTS``). For an answer whose producer's liveness key is gone, one script
   (:data:`CRASH_END_SCRIPT`) appends an ``end`` with the reason ``server_crashed`` (a 503
   ``server_crashed`` error in it, as every cut carries) and marks the metadata ``ended``,
   ``crashed`` — only if ``ended`` is unset, so of all the instances that notice, exactly one
   writes it. Its seq is one past the log's last entry, or past the highest seq a client of
   this instance holds if that is further (the producer writes behind what its own clients
   see by up to one batch), so no client that resumed with such an id waits forever. Every
   reader on every instance then reads the same ``end`` from the log, and a later resume
   anywhere gets it too. A producer that was not dead after all (it lost Redis for
   ``lease_ttl``) cannot add to the log afterwards: Redis refuses the ids it would write.

Cost: one pipeline a second per process that follows anything (one ``SET PX`` per followed
answer), plus one ``EXISTS`` per silent producer; nothing per event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from ._errors import cut_error
from ._eventlog_keys import log_key, meta_key, remote_key
from ._liveness import live_instances
from ._redis import SharedRedis, SharedStateError

__all__ = ["CRASH_END_SCRIPT", "INTERVAL", "Followed", "Upkeep", "crash_end", "remote_reader_ttl"]

logger = logging.getLogger("wenxin_stream.server")

INTERVAL = 1.0
"""Most seconds between two rounds (less when the marker lives less than three of them)."""

CRASH_END_SCRIPT = """
if redis.call('HGET', KEYS[2], 'ended') == '1' or redis.call('EXISTS', KEYS[2]) == 0 then
  return false
end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = tonumber(ARGV[2])
if #top > 0 then
  seq = math.max(seq, tonumber(string.match(top[1][1], '^(%d+)')) + 1)
end
redis.call('XADD', KEYS[1], seq .. '-1', 'k', 'end', 'd', ARGV[3])
redis.call('HSET', KEYS[2], 'ended', '1', 'last', seq, 'crashed', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return seq
"""
"""End an answer whose producer died, once: ``KEYS`` its log and metadata, ``ARGV`` the resume
window (ms), the least seq the end may have, the end's data. Answers the end's seq, or
``nil`` when the answer had ended already (or is gone)."""


def crash_end() -> bytes:
    """The data of the ``end`` written for an answer whose producer died."""
    data = {
        "end_reason": "server_crashed",
        "finish_reason": None,
        "usage": None,
        "error": cut_error("server_crashed").event(),
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Followed:
    """One answer a process follows, as the upkeep sees it."""

    stream_id: str
    producer: str
    """The producing process's instance id (from the answer's metadata)."""
    held: int
    """The highest seq a client of this process holds."""
    silent: bool
    """Whether its log has said nothing for more than half of ``lease_ttl``."""


class Upkeep:
    """The markers and crash ends of one process's remote reads (see the module docstring)."""

    def __init__(
        self, shared: SharedRedis, *, marker_ttl: float, lease_ttl: float, window: float
    ) -> None:
        self.shared = shared
        self.marker_ttl = marker_ttl
        self.silence = lease_ttl / 2
        """Seconds of silence after which an answer's producer is checked."""
        self.window = window
        self.interval = min(INTERVAL, marker_ttl / 3) if marker_ttl > 0 else INTERVAL
        self.rounds = 0
        """Rounds run."""
        self.crashed = 0
        """Crash ends written by this process."""
        self._sha: str | None = None

    async def run(self, followed: Iterable[Followed]) -> list[str]:
        """One round: refresh the markers of ``followed``, end the answers whose producer
        died; the stream ids ended.

        Raises:
            SharedStateError: Redis failed (the next round tries again).
        """
        shared = self.shared
        answers = list(followed)
        self.rounds += 1
        if self.marker_ttl > 0 and answers:
            pipe = shared.client.pipeline(transaction=False)
            ttl = max(1, int(self.marker_ttl * 1000))
            for answer in answers:
                pipe.set(remote_key(shared, answer.stream_id), b"1", px=ttl)
            await shared.call(pipe.execute(), "remote read markers")
        silent = [answer for answer in answers if answer.silent]
        if not silent:
            return []
        alive = await live_instances(shared, (answer.producer for answer in silent))
        orphans = [answer for answer in silent if answer.producer not in alive]
        return await self._end(orphans) if orphans else []

    async def _end(self, orphans: list[Followed]) -> list[str]:
        shared = self.shared
        if self._sha is None:
            self._sha = await shared.call(
                shared.client.script_load(CRASH_END_SCRIPT), "SCRIPT LOAD"
            )
        window, data = int(self.window * 1000), crash_end()
        pipe = shared.client.pipeline(transaction=False)
        for answer in orphans:
            keys = (log_key(shared, answer.stream_id), meta_key(shared, answer.stream_id))
            pipe.evalsha(self._sha, 2, *keys, window, answer.held + 1, data)
        results = await shared.call(pipe.execute(raise_on_error=False), "crash ends")
        ended = []
        for answer, result in zip(orphans, results, strict=True):
            if isinstance(result, Exception):
                if type(result).__name__ == "NoScriptError" or "NOSCRIPT" in str(result):
                    self._sha = None  # Redis restarted: loaded again next round
                raise SharedStateError(f"crash end: {type(result).__name__}")
            if result is not None:
                self.crashed += 1
                ended.append(answer.stream_id)
                logger.warning(
                    "the producer %s of %s is gone: its answer ended as server_crashed",
                    answer.producer,
                    answer.stream_id,
                )
        return ended


async def remote_reader_ttl(shared: SharedRedis, stream_id: str) -> float:
    """Seconds the answer stays marked as read by another instance's client (``0``: it is
    not). Redis failing counts as not: no remote client can be served then."""
    try:
        ms: int = await shared.call(
            shared.client.pttl(remote_key(shared, stream_id)), "remote read marker"
        )
    except SharedStateError as exc:
        logger.warning("shared state: %s", exc)
        return 0.0
    return ms / 1000 if ms > 0 else 0.0
