"""A process's fire-and-forget Redis calls, sent together: one pipeline per moment.

Theory of operation
===================

When an answer ends, the shared state learns it by several calls nobody waits for: the
stream's slot lease removed (``_leases``), the key's token bucket settled with what the
answer really used (``_limits_redis``), the key's budgets charged (``_budgets``). Each used to
be a task and a round trip of its own; at a few dozen answers ending a second that was ~4 % of
the server's samples in the native route's profile (``bench/PROFILE.md``), redis-py's work
per command and ``asyncio.timeout`` per call rather than Redis.

:meth:`BackgroundCalls.command` and :meth:`BackgroundCalls.script` queue a call; the first one
queued starts a timer of ``delay`` (20 ms), and every call queued until it fires goes in ONE
pipeline (``transaction=False``), in one task. The calls are independent: a failed one is
logged and does not stop the others; a failed pipeline (Redis down, slow: bounded by
``SharedRedis.call``) is logged, and its calls are lost as the single calls were before
(a lease then expires within its TTL by itself; a settlement leaves the estimate counted).
Scripts are sent as ``EVALSHA`` of their hash; Redis's
``NOSCRIPT`` (it restarted) makes the batch load them and send those calls once more.

:meth:`BackgroundCalls.flush` sends what is queued at once and waits for every batch in
flight: tests, and a process closing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ._redis import SharedRedis, SharedStateError, is_noscript

__all__ = ["DELAY", "BackgroundCalls"]

logger = logging.getLogger("wenxin_stream.server")

DELAY = 0.02
"""Seconds the first queued call waits for others to share its pipeline."""


class BackgroundCalls:
    """The calls of this process that nobody waits for (see the module docstring)."""

    def __init__(self, redis: SharedRedis, *, delay: float = DELAY) -> None:
        self.redis = redis
        self.delay = delay
        self.batches = 0
        """Pipelines sent (for tests and diagnostics)."""
        self._queued: list[tuple[str, Any, tuple[Any, ...]]] = []  # (what, script, args)
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def command(self, what: str, *args: Any) -> None:
        """Queue the command ``args`` (``"ZREM", key, member``); ``what`` names it in logs."""
        self._queue((what, None, args))

    def script(self, what: str, script: Any, keys: list[str], args: list[Any]) -> None:
        """Queue a call of ``script`` (``register_script``'s object) on ``keys`` and ``args``."""
        self._queue((what, script, (len(keys), *keys, *args)))

    def _queue(self, call: tuple[str, Any, tuple[Any, ...]]) -> None:
        self._queued.append(call)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._send)

    def _send(self) -> None:
        self._timer = None
        queued, self._queued = self._queued, []
        if queued:
            task = asyncio.ensure_future(self._batch(queued))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Send what is queued now, and wait for every batch in flight."""
        if self._timer is not None:
            self._timer.cancel()
            self._send()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _batch(self, queued: list[tuple[str, Any, tuple[Any, ...]]]) -> None:
        results = await self._pipeline(queued)
        if results is None:
            return
        again = [call for call, result in zip(queued, results, strict=True) if is_noscript(result)]
        if again:  # Redis lost its scripts (a restart): load them, send those calls once more
            try:
                for script in {id(s): s for _, s, _ in again}.values():
                    await self.redis.call(
                        self.redis.client.script_load(script.script), "SCRIPT LOAD"
                    )
            except SharedStateError as exc:
                logger.warning("shared state: %s", exc)
                return
            results = await self._pipeline(again)
            if results is None:
                return
            queued = again
        for (what, _, _), result in zip(queued, results, strict=True):
            if isinstance(result, Exception):
                logger.warning("shared state: %s: %s: %s", what, type(result).__name__, result)

    async def _pipeline(self, queued: list[tuple[str, Any, tuple[Any, ...]]]) -> list[Any] | None:
        """Send ``queued`` in one pipeline: the results, or ``None`` when it failed (logged)."""
        pipe = self.redis.client.pipeline(transaction=False)
        for _, script, args in queued:
            if script is None:
                pipe.execute_command(*args)
            else:
                pipe.evalsha(script.sha, *args)
        self.batches += 1
        try:
            results: list[Any] = await self.redis.call(
                pipe.execute(raise_on_error=False), "background calls"
            )
        except SharedStateError as exc:
            names = ", ".join(sorted({what for what, _, _ in queued}))
            logger.warning("shared state: %s (lost: %s)", exc, names)
            return None
        return results
