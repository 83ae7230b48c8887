"""The upstream's OAuth token of a fleet, in Redis: one refresh for every instance.

Theory of operation
===================

ERNIE v1 credentials (API key + secret) are exchanged for an access token at Baidu's OAuth
endpoint. Each instance's SDK client holds the token in its ``AsyncTokenManager`` (one fetch per
process however many streams need it); :class:`SharedToken` is that manager's
``AsyncTokenShare``, so one fetch serves the **fleet**:

1. The token is cached in Redis under ``token:{<credential>}`` (the credential is the SDK's
   cache key: a SHA-256 of the API key and base URL, never the secret) with a TTL that ends
   when the token expires. It is a secret: it is stored only there, never logged, never put
   in a message.
2. A manager that needs a token calls :meth:`SharedToken.obtain` with the token it is
   replacing (``stale``: due for refresh, or refused with 110/111). A cached token that is
   not ``stale`` and not due is used as is — so when one instance has refreshed after a
   110/111, every other instance that meets the same 110/111 picks up the new token instead of
   refreshing again.
3. Otherwise one instance takes the lock ``token:{<credential>}:lock`` (``SET NX PX`` with a
   random value, expiring after ``lock_timeout``), looks once more, fetches, caches, and
   releases the lock with a compare-and-delete script (only its own value is deleted: a lock
   that expired and was taken by another instance is left alone). The others poll the cache
   every :data:`POLL_INTERVAL` until the new token appears.
4. If the lock's holder is stuck beyond ``lock_timeout`` the lock expires and a waiter takes
   it; if Redis does not answer at all, the instance fetches on its own (logged): a token is
   not a limit, so doing without the fleet costs one OAuth call per instance, never a wrong
   answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._tokens import AccessToken, refresh_due
from ._redis import SharedRedis, SharedStateError

__all__ = ["POLL_INTERVAL", "RELEASE_SCRIPT", "SharedToken"]

logger = logging.getLogger("wenxin_stream.server")

POLL_INTERVAL = 0.05
"""Seconds between looks at the cache while another instance refreshes."""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Delete a lock only if it still holds our value."""


class SharedToken:
    """One credential's token shared through Redis (see the module docstring)."""

    def __init__(
        self,
        redis: SharedRedis,
        credential: str,
        *,
        lock_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.key = redis.key("token", credential)
        self.lock_key = redis.key("token", credential, "lock")
        self.lock_timeout = lock_timeout
        self._clock = clock
        self._release: Any = None
        self.fetches = 0
        """Tokens this process fetched itself (for tests and diagnostics)."""

    async def obtain(
        self, fetch: Callable[[], Awaitable[AccessToken]], stale: AccessToken | None
    ) -> AccessToken:
        """The fleet's token if usable and not ``stale``, else one refresh for the fleet."""
        deadline = time.monotonic() + self.lock_timeout
        try:
            while True:
                cached = await self._usable(stale)
                if cached is not None:
                    return cached
                mine = secrets.token_hex(16)
                locked = await self.redis.call(
                    self.redis.client.set(
                        self.lock_key, mine, nx=True, px=int(self.lock_timeout * 1000)
                    ),
                    "SET token lock",
                )
                if locked:
                    return await self._refresh(fetch, stale, mine)
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(POLL_INTERVAL)
        except SharedStateError as exc:
            logger.warning("shared state: fetching the upstream token alone: %s", exc)
        self.fetches += 1
        return await fetch()

    async def _refresh(
        self, fetch: Callable[[], Awaitable[AccessToken]], stale: AccessToken | None, mine: str
    ) -> AccessToken:
        try:
            cached = await self._usable(stale)  # refreshed while we asked for the lock
            if cached is not None:
                return cached
            self.fetches += 1
            token = await fetch()
            ttl_ms = int((token.expires_at - self._clock()) * 1000)
            if ttl_ms > 0:
                record = json.dumps(
                    {
                        "value": token.value,
                        "expires_at": token.expires_at,
                        "obtained_at": token.obtained_at,
                    }
                )
                await self.redis.call(
                    self.redis.client.set(self.key, record, px=ttl_ms), "SET token"
                )
            return token
        finally:
            if self._release is None:
                self._release = self.redis.client.register_script(RELEASE_SCRIPT)
            try:
                await self.redis.call(
                    self._release(keys=[self.lock_key], args=[mine]), "release token lock"
                )
            except SharedStateError as exc:  # it expires after lock_timeout anyway
                logger.warning("shared state: %s", exc)

    async def _usable(self, stale: AccessToken | None) -> AccessToken | None:
        raw = await self.redis.call(self.redis.client.get(self.key), "GET token")
        token = _parse(raw)
        if token is None or (stale is not None and token.value == stale.value):
            return None
        return None if refresh_due(token, self._clock()) else token


def _parse(raw: bytes | None) -> AccessToken | None:
    """The cached token, or ``None`` (missing or malformed: refreshed over)."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return AccessToken(
            str(data["value"]), float(data["expires_at"]), float(data["obtained_at"])
        )
    except (ValueError, KeyError, TypeError):
        return None
