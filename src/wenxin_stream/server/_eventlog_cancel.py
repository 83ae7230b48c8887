"""Cancels across the fleet: each process listens on a pub/sub channel of its own.

Theory of operation
===================

A cancel may reach any instance; the answer runs in one process (the producer named in the
answer's metadata, ``_eventlog_keys``). Every process subscribes, on ONE dedicated connection
(a subscribed connection can do nothing else), to ``<prefix>cancel:{<instance>}``; an
instance asked to cancel an answer it does not hold checks the owner in the metadata and
``PUBLISH``-es the stream id on the producer's channel (:meth:`CancelChannel.send`), and the
producer cancels the generation as if the request had come to it. Pub/sub delivers to whoever
is subscribed at that moment and keeps nothing, which is what a cancel needs: a producer that
is gone has nothing left to cancel (``PUBLISH`` then answers 0 receivers).

The listener reconnects by itself (after ``RETRY`` seconds, then again until it succeeds)
when Redis restarts or the connection breaks; a cancel published meanwhile is lost, and the
client may cancel again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .._aio import stop_task
from ._redis import SharedRedis

__all__ = ["CancelChannel"]

logger = logging.getLogger("wenxin_stream.server")

RETRY = 1.0
"""Seconds between attempts to subscribe again after the connection broke."""


class CancelChannel:
    """This process's cancel channel (see the module docstring)."""

    def __init__(self, shared: SharedRedis, *, instance: str) -> None:
        self.shared = shared
        self.channel = self.channel_of(instance)
        self.received = 0
        """Cancels received."""
        self.subscribed = asyncio.Event()
        """Set while the channel is subscribed."""
        self._task: asyncio.Task[None] | None = None

    def channel_of(self, instance: str) -> str:
        """The cancel channel of the process ``instance``."""
        return self.shared.key("cancel", instance)

    async def send(self, instance: str, stream_id: str) -> int:
        """Ask the process ``instance`` to cancel ``stream_id``; how many listeners heard it.

        Raises:
            SharedStateError: Redis failed.
        """
        client = self.shared.client
        heard: int = await self.shared.call(
            client.publish(self.channel_of(instance), stream_id), "PUBLISH cancel"
        )
        return heard

    def start(self, on_cancel: Callable[[str], None]) -> None:
        """Listen on the running loop; ``on_cancel(stream_id)`` for each cancel received."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(on_cancel), name="cancel channel")

    async def aclose(self) -> None:
        """Stop listening."""
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self, on_cancel: Callable[[str], None]) -> None:
        from redis.exceptions import RedisError

        connection = await self.shared.dedicated()
        failing = False
        while True:
            pubsub: Any = connection.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                if failing:
                    logger.warning("the cancel channel is subscribed again")
                failing = False
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        self.received += 1
                        on_cancel(bytes(message["data"]).decode("ascii", "replace"))
            except (RedisError, OSError) as exc:
                if not failing:
                    logger.error("the cancel channel broke: %s", type(exc).__name__)
                failing = True
            finally:
                self.subscribed.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RETRY)
