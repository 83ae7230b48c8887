"""Ending, in the shared database, the answers of fleet members that died.

Theory of operation
===================

With several instances on one database (``redis_url`` set), every streaming answer names the
process producing it (``messages.producer``), and every live process keeps a liveness key in
Redis (:mod:`._liveness`). A process killed mid-answer (``kill -9``, a lost machine) leaves
its answers ``streaming`` with their last checkpoint; no start-up of *another* instance may
end them blindly, because the rows of live instances look the same.

So every instance runs one :class:`Sweeper`: every ``interval`` seconds (the lease TTL, the
time a dead process's liveness key takes to lapse) it asks the store which producers have
answers still ``streaming`` (one ``SELECT DISTINCT`` on the status index), asks Redis which
of them are alive (one pipelined ``EXISTS``), and ends the answers of those found gone in two
rounds running as ``partial`` / ``server_crashed``, their last checkpoint kept — as a
one-process server does at its next start-up. Two rounds, because one missing liveness key is
not yet a death: a Redis that restarted has none until each live process renews its own (within
a third of the TTL), and a sweep in that moment must not end the answers of the living. Its own
answers are never swept. Several instances may sweep the same dead producer together: the
update touches only rows still ``streaming``, so the second finds none.

Rows naming no producer come from a version before producers were named; a live older
instance may be streaming them during a rolling upgrade, so the sweep leaves them alone (the
start-up of this instance ends them, as before). A failed round (Redis or the store
unavailable) is logged once per failure streak and retried at the next tick: a sweep never
ends an answer on a guess.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .._aio import stop_task
from ._liveness import live_instances
from ._redis import SharedRedis, SharedStateError
from ._schema import StoreError
from ._store import Store

__all__ = ["Sweeper"]

logger = logging.getLogger("wenxin_stream.server")


class Sweeper:
    """One process's periodic sweep of dead producers' answers (see the module docstring).

    ``on_swept(n)`` is told how many answers a round ended (metrics).
    """

    def __init__(
        self,
        store: Store,
        redis: SharedRedis,
        instance_id: str,
        *,
        interval: float,
        on_swept: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.store = store
        self.redis = redis
        self.instance_id = instance_id
        self.interval = interval
        self.on_swept = on_swept
        self.swept = 0
        """Answers this process ended as crashed, in total."""
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._missing: set[str] = set()  # producers without a liveness key last round

    async def sweep(self) -> int:
        """One round: the answers of producers gone since the last round too become
        ``server_crashed``; how many.

        Raises:
            SharedStateError: Redis did not answer (nothing was changed).
            StoreError: the store did not answer.
        """
        producers = await self.store.streaming_producers()
        others = [p for p in producers if p is not None and p != self.instance_id]
        if not others:
            self._missing = set()
            return 0
        alive = await live_instances(self.redis, others)
        missing = {p for p in others if p not in alive}
        dead = sorted(missing & self._missing)
        self._missing = missing
        if not dead:
            return 0
        ended = await self.store.mark_streaming_as("server_crashed", dead)
        if ended:
            self.swept += ended
            self.on_swept(ended)
            logger.warning(
                "%d answers of %d stopped instance(s) (%s) ended as server_crashed, their last "
                "checkpoint kept",
                ended,
                len(dead),
                ", ".join(dead),
            )
        return ended

    def start(self) -> None:
        """Sweep every ``interval`` seconds until :meth:`aclose`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="wenxin-sweeper")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except (SharedStateError, StoreError) as exc:
                if not self._failing:
                    logger.warning("the sweep of stopped instances' answers failed: %s", exc)
                self._failing = True
            else:
                self._failing = False
