"""The shared Redis of a fleet: one process's connections, its key names, its failures.

Theory of operation
===================

Several workers and instances of ``wenxin serve`` share state through one Redis (``redis_url``):
per-key limits, concurrent-stream leases, the per-answer event logs, cancel signals and the
upstream's OAuth token. :class:`SharedRedis` is a process's access to it, built at start-up:

- **Commands** go through one ``redis.asyncio`` client over a ``BlockingConnectionPool`` of
  ``redis_max_connections`` (redis-py's plain pool raises "Too many connections" when it runs
  dry; a blocking pool makes a caller wait, at most ``redis_timeout``, for a connection to come
  back). hiredis parses replies when it is installed (it is a dependency of the server extra).
- **Blocking reads** (``XREAD BLOCK``) and **pub/sub** never use the pool: a blocking read holds
  its connection for the whole block, and three projects starved their pools that way (see
  ``shared/SCALE-OUT.md`` §2.4). :meth:`dedicated` opens a connection of its own, for the one
  reader task per process that multiplexes every remote reader.
- **Every call is bounded**: socket and connect timeouts of ``redis_timeout``, and
  :meth:`call` wraps a command in ``asyncio.timeout`` as well, translating any redis-py error
  into :class:`SharedStateError` (whose message never contains the URL's password). Callers
  decide what a failure means for them (refuse with 503, degrade, retry later).
- **Key names** are ``<prefix><kind>:{<id>}…`` (:meth:`key`): the part in braces is a Redis
  Cluster hash tag, so everything that belongs to one answer or one API key lands in one slot
  and can be touched by one Lua script or one pipeline even on a cluster.

:attr:`SharedRedis.healthy` is the outcome of the last call (for ``/readyz``): a failed call
marks it unhealthy until one succeeds. :attr:`SharedRedis.observe`, when set, is told each
call's name and duration (``_redis_metrics``: ``wenxin_redis_call_seconds``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from ._config import mask_url_password

__all__ = ["KEY_PREFIX", "SharedRedis", "SharedStateError", "is_noscript"]

KEY_PREFIX = "wenxin:"
"""The prefix of every key this project writes (one Redis may serve other programs too)."""

_T = TypeVar("_T")


class SharedStateError(Exception):
    """Redis could not be reached, refused a command, or did not answer in time. The message
    names what failed, never a password."""


class SharedRedis:
    """One process's connections to the fleet's Redis (see the module docstring).

    Nothing connects before :meth:`open`; :meth:`close` closes the pool and every dedicated
    connection this object opened.
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 64,
        timeout: float = 1.0,
        prefix: str = KEY_PREFIX,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.prefix = prefix
        self.max_connections = max_connections
        self.healthy = False
        """Whether the last call succeeded (``False`` before :meth:`open`)."""
        self.last_error: str | None = None
        """What the last failed call said (no password in it)."""
        self._client: Any = None
        self._dedicated: list[Any] = []
        self.observe: Callable[[str, float], None] | None = None
        """Told every :meth:`call`'s name and seconds, failed ones too (``_redis_metrics``)."""

    def __repr__(self) -> str:
        return f"SharedRedis({mask_url_password(self.url)!r}, healthy={self.healthy})"

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Build the pool and check that Redis answers.

        Raises:
            SharedStateError: Redis cannot be reached or refuses us.
        """
        from redis.asyncio import BlockingConnectionPool, Redis

        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
        )
        self._client = Redis(connection_pool=pool)
        await self.call(self._client.ping(), "PING")

    async def close(self) -> None:
        """Close every connection (idempotent)."""
        dedicated, self._dedicated = self._dedicated, []
        for connection in dedicated:
            await connection.aclose()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
            await client.connection_pool.disconnect()
        self.healthy = False

    @property
    def client(self) -> Any:
        """The pooled ``redis.asyncio.Redis`` client (for pipelines and scripts)."""
        if self._client is None:
            raise SharedStateError("Redis is not open")
        return self._client

    async def dedicated(self) -> Any:
        """A client with a connection of its own (one-connection pool, no read timeout): for a
        blocking read or a pub/sub subscription, never for ordinary commands."""
        from redis.asyncio import Redis

        connection = Redis.from_url(
            self.url, socket_connect_timeout=self.timeout, max_connections=1
        )
        self._dedicated.append(connection)
        return connection

    # -- calls ------------------------------------------------------------------------------

    def key(self, kind: str, ident: str, *rest: str) -> str:
        """The name of a key: ``<prefix><kind>:{<ident>}[:<rest>…]`` (``ident`` is the Redis
        Cluster hash tag: the keys of one answer or one API key share a slot)."""
        tail = "".join(":" + part for part in rest)
        return f"{self.prefix}{kind}:{{{ident}}}{tail}"

    async def call(self, awaitable: Awaitable[_T], what: str) -> _T:
        """Await one Redis call within ``timeout``; any failure becomes
        :class:`SharedStateError` naming ``what``, and updates :attr:`healthy`."""
        from redis.exceptions import RedisError

        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                result = await awaitable
        except TimeoutError:
            self._failed(f"{what}: Redis did not answer within {self.timeout:g} s")
        except (RedisError, OSError) as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # the call failed because its task is being cancelled (redis-py drops the
                # connection it was reading): the cancellation, not a Redis failure — else a
                # periodic loop that catches SharedStateError sleeps on and its stop waits
                raise asyncio.CancelledError from exc
            self._failed(f"{what}: {type(exc).__name__}: {mask_url_password(str(exc))}")
        finally:
            if self.observe is not None:
                self.observe(what, time.perf_counter() - began)
        self.healthy = True
        return result

    def _failed(self, message: str) -> NoReturn:
        self.healthy = False
        self.last_error = message
        raise SharedStateError(message) from None


def is_noscript(result: object) -> bool:
    """Whether ``result`` (an item of a pipeline run with ``raise_on_error=False``) is Redis's
    ``NOSCRIPT``: the script cache is empty — Redis restarted, or ``SCRIPT FLUSH`` — and the
    script must be loaded again. (redis-py parses the reply into ``NoScriptError`` and drops the
    ``NOSCRIPT`` prefix from its message, so the text alone does not tell.)"""
    from redis.exceptions import NoScriptError

    return isinstance(result, NoScriptError)
