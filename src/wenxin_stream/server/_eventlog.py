"""The per-answer event log in Redis: resume, cancel and "ended" on any instance of a fleet.

Theory of operation
===================

With ``redis_url`` set, every resumable answer a process produces is also written to a Redis
Stream of its own (the layout is in ``_eventlog_keys``), so that a client whose connection
broke can resume on *any* instance, and a cancel sent to any instance reaches the producer.
:class:`EventLog` is a process's side of it, three parts, each one task and at most one
connection of its own::

    producer (this process)                       Redis                       other instances
    ───────────────────────                       ─────                       ───────────────
    relay log ─► LogWriter ── a batch, ONE ──────► ans:{s}:log  ◄── XREAD BLOCK ── LogReader
    (in memory:  (_eventlog_writer)  pipeline      ans:{s}:meta      (one task, one   (_eventlog_
     local           for all answers                                   connection, all  reader)
     clients                                                           remote clients)
     read it)   ◄── cancel:{me} ── CancelChannel ◄── PUBLISH ───────── cancel route
                    (_eventlog_cancel: one dedicated pub/sub connection)

- **Local clients never touch Redis.** A client of the producing process reads the
  in-process log exactly as without Redis; the writer reads the same log in batches, so the
  per-chunk path only appends to a list (``bench/redis_eventlog_cost.py`` measures the
  rest).
- **Ids.** Redis entry ids are ``<seq>-1``: the SSE id ``<stream_id>:<seq>`` names one entry
  on every instance, a ``Last-Event-ID`` from any instance resumes exactly, and a write that
  is repeated (after a failed pipeline) is refused by Redis instead of duplicated.
- **Batches.** A new event pokes the writer; it sends everything pending as soon as its
  previous batch is back (batches at least ``interval``, 5 ms, apart), so the batches grow
  with the load, not the round trips. The ids of one answer are final wherever they are
  read; a remote reader given an id not yet in Redis simply waits for the next entries.
- **Lifetime.** The keys get an expiry once when created and once at the end (``window``,
  the resume window): after it, nothing of the answer is left in Redis. A resume during the
  window works on every instance, the producer included (it reads Redis once it has
  forgotten the answer, after ``resume_grace``).
- **Clients that moved, producers that died** (``_eventlog_upkeep``). A process reading an
  answer for its clients marks it as read there, once a second for all it reads; the
  producer's grace timer sees the mark and waits instead of applying ``on_disconnect``
  (:meth:`EventLog.remote_readers`). Each process keeps a liveness key (``_liveness``,
  renewed with its leases); a reader whose answer has gone silent checks the producer's, and
  if it is gone writes the answer's ``end`` (``server_crashed``) into the log, once, for
  every reader everywhere — unless the answer is under an answer lease
  (``_answer_leases``): then another instance takes it over (``_takeover``) instead.
- **Leases and fencing** (``_answer_leases``). The writer takes each answer's lease when it
  creates the log; its script refuses the events of an answer whose fencing token is no
  longer the writer's (the answer was taken over), and the writer then tells the answer it
  was lost (``Generation.fenced``). In a fleet the relay is **write-ahead**: a client of the
  producer receives an event only once it is in Redis, so no client ever holds an event the
  log lacks (one Redis round trip of extra latency, up to the 5 ms batch spacing under
  load).
- **Redis unavailable.** Local streams go on; their events are written when Redis is back
  (if within the window); remote resumes and remote cancels answer 503; a remote client being
  served is cut (no ``end``) and may resume.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable

from ._answer_leases import AnswerLeases
from ._eventlog_cancel import CancelChannel
from ._eventlog_keys import meta_key
from ._eventlog_reader import LogReader, RemoteStream, unavailable
from ._eventlog_upkeep import Upkeep, remote_reader_ttl
from ._eventlog_writer import FLUSH_INTERVAL, LogWriter
from ._http import not_found
from ._metrics import Metrics
from ._redis import SharedRedis, SharedStateError

__all__ = ["EventLog", "default_instance_id"]


def default_instance_id() -> str:
    """``<host>:<pid>:<random>``: unique in a fleet, readable in Redis."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class EventLog:
    """A process's access to the fleet's event logs (see the module docstring)."""

    def __init__(
        self,
        shared: SharedRedis,
        metrics: Metrics,
        *,
        instance: str,
        window: float,
        maxlen: int,
        interval: float = FLUSH_INTERVAL,
        grace: float = 0.0,
        lease_ttl: float = 10.0,
        leases: AnswerLeases | None = None,
    ) -> None:
        """``grace``: ``resume_grace`` (a followed answer is marked as read here for twice
        that); ``lease_ttl``: how long a process's liveness key lives."""
        self.shared = shared
        self.instance = instance
        self.writer = LogWriter(
            shared,
            metrics,
            instance=instance,
            window=window,
            maxlen=maxlen,
            interval=interval,
            leases=leases,
        )
        upkeep = Upkeep(shared, marker_ttl=2 * grace, lease_ttl=lease_ttl, window=window)
        self.reader = LogReader(shared, instance=instance, upkeep=upkeep)
        self.cancels = CancelChannel(shared, instance=instance)

    def start(self, on_cancel: Callable[[str], None]) -> None:
        """Start the writer and the cancel listener (``on_cancel(stream_id)`` stops an answer
        of this process)."""
        self.writer.start()
        self.cancels.start(on_cancel)

    async def aclose(self) -> None:
        """Write what is pending, stop every task (remote clients are cut)."""
        await self.cancels.aclose()
        await self.reader.aclose()
        await self.writer.aclose()

    async def resume(self, stream_id: str, owner: str, after: int | None) -> RemoteStream:
        """Read the answer ``stream_id`` from Redis after seq ``after`` (see
        :meth:`LogReader.open` for the errors)."""
        return await self.reader.open(stream_id, owner, after)

    async def remote_readers(self, stream_id: str) -> float:
        """Seconds the answer ``stream_id`` of this process stays marked as read by a client of
        another instance (``0``: it is not, or Redis cannot say)."""
        return await remote_reader_ttl(self.shared, stream_id)

    async def cancel(self, stream_id: str, owner: str) -> str:
        """Cancel an answer another process produces: ``"ended"`` if it already ended, else
        ``"cancelling"`` (the producer was told).

        Raises:
            HTTPError: 404 (unknown, expired, another owner's), 503 (Redis unavailable).
        """
        try:
            meta_owner, instance, ended = await self.shared.call(
                self.shared.client.hmget(
                    meta_key(self.shared, stream_id), ["owner", "instance", "ended"]
                ),
                "event log cancel",
            )
            if meta_owner is None or meta_owner.decode() != owner:
                raise not_found(f"no stream {stream_id!r} (unknown or expired)")
            if ended == b"1":
                return "ended"
            await self.cancels.send(instance.decode(), stream_id)
        except SharedStateError as exc:
            raise unavailable() from exc
        return "cancelling"
