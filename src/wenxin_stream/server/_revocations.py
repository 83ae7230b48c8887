"""Key revocation seen by every instance of a fleet at once: a Redis pub/sub notice.

Theory of operation
===================

A key revoked in the shared database stops working on an instance when that instance's
:class:`~._keys.KeyCache` entry expires (its TTL, 5 s by default). To make it immediate, a notice
with the key's id goes out on the channel ``<prefix>keys:revoked``:

- :func:`announce_revocation` (synchronous, a plain ``PUBLISH``) is for whoever revokes —
  ``wenxin keys revoke`` with ``redis_url`` configured;
- an instance whose cache finds a key it held as valid gone from the store publishes the
  notice too (:attr:`KeyCache.on_revoked`), so a revocation made by any other path is spread
  by the first instance to notice it.

Every instance runs one :class:`Revocations` listener on a **dedicated** connection (a
subscription blocks its connection; it must never hold one of the pool's). A notice drops the
key's cached entries (:meth:`KeyCache.forget_key`): the next HTTP request with that key, and
the next ask on an open WebSocket of it (the socket's own re-check before each ask), asks the
store, finds the key revoked, and is refused (401; the socket closes with 1008). If the
subscription breaks, the listener reconnects after :data:`RECONNECT_DELAY`; notices sent
meanwhile are lost, and the cache's TTL still bounds how long a revoked key works.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ._keys import KeyCache
from ._redis import KEY_PREFIX, SharedRedis

__all__ = ["RECONNECT_DELAY", "Revocations", "announce_revocation", "channel"]

logger = logging.getLogger("wenxin_stream.server")

RECONNECT_DELAY = 1.0
"""Seconds before a broken subscription is opened again."""


def channel(prefix: str = KEY_PREFIX) -> str:
    """The channel of revocation notices."""
    return f"{prefix}keys:revoked"


def announce_revocation(redis_url: str, key_id: str, *, timeout: float = 1.0) -> int:
    """Tell every instance that ``key_id`` was revoked (for ``wenxin keys revoke``); how many
    listeners got it."""
    import redis

    with redis.Redis.from_url(
        redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
    ) as client:
        return int(client.publish(channel(), key_id))


class Revocations:
    """One process's listener for revocation notices, and its way to send one."""

    def __init__(self, redis: SharedRedis, keys: KeyCache) -> None:
        self.redis = redis
        self.keys = keys
        self.channel = channel(redis.prefix)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.received = 0
        """Notices received (for tests and diagnostics)."""
        keys.on_revoked = self.announce

    async def start(self) -> None:
        """Subscribe (waits until the subscription is in place, at most the Redis timeout)."""
        self._task = asyncio.ensure_future(self._listen())
        try:
            await asyncio.wait_for(self._subscribed.wait(), self.redis.timeout)
        except TimeoutError:
            logger.warning("shared state: revocation notices are not subscribed yet")

    def announce(self, key_id: str) -> None:
        """Publish a notice for ``key_id`` (in the background; a failure is logged)."""
        task = asyncio.ensure_future(self._publish(key_id))
        task.add_done_callback(_retrieve)

    async def _publish(self, key_id: str) -> None:
        await self.redis.call(self.redis.client.publish(self.channel, key_id), "PUBLISH")

    async def _listen(self) -> None:
        while True:
            client: Any = None
            try:
                client = await self.redis.dedicated()
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        key_id = message["data"].decode("utf-8", "replace")
                        self.received += 1
                        self.keys.forget_key(key_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken connection: resubscribe
                logger.warning(
                    "shared state: revocation notices interrupted (%s)", type(exc).__name__
                )
            finally:
                if client is not None:
                    await client.aclose()
            await asyncio.sleep(RECONNECT_DELAY)

    async def aclose(self) -> None:
        """Stop listening (the dedicated connection is closed with ``SharedRedis``)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("shared state: %s", exc)
