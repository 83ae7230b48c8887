"""A process's small Redis calls, sent together: one pipeline per moment.

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

**Calls somebody waits for** — the admission script of every request (``_limits_redis``), a
budget's reservation (``_budgets``) — go the same way with :meth:`BackgroundCalls.ask`, but
without the timer, and batched the way the event log's writer is: an ask made while no ask
is in flight is sent at once, in its caller's own task (no hop through another task: a busy
event loop makes every hop cost a loop iteration, milliseconds at a burst); the asks made
while one is in flight wait for it and then leave together in one pipeline. A burst of starts
(the admission pacer lets a slice of them in at once) then costs two round trips, not one
each (the background calls keep their timer: sent with each ask they would batch less).
redis-py's work per call — the pool's condition, ``asyncio.timeout``, a write and a read —
is most of an admission's client CPU: in waves of 50 it went from 142–166 µs to 65–73 µs
an admission (``bench/redis_limits_cost.py --concurrency 50``). Each call is still its own
atomic script, so nothing about a limit changes. A pipeline that fails raises
:class:`~._redis.SharedStateError` in every caller of it; an error reply raises it in that
call's caller only. A caller that is cancelled leaves its call in the pipeline (it may run:
the same as a single call cancelled after it was sent).

:meth:`BackgroundCalls.flush` sends what is queued at once and waits for every batch in
flight: tests, and a process closing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from typing import Any

from ._redis import SharedRedis, SharedStateError, is_noscript

__all__ = ["DELAY", "BackgroundCalls"]

logger = logging.getLogger("wenxin_stream.server")

_Call = tuple[str, Any, tuple[Any, ...], "asyncio.Future[Any] | None"]
"""A queued call: what it is (for logs), its script (``None``: a plain command), its
arguments, and the future of the caller waiting for it (``None``: nobody waits)."""

DELAY = 0.02
"""Seconds the first queued call waits for others to share its pipeline."""


class BackgroundCalls:
    """The calls of this process that nobody waits for (see the module docstring)."""

    def __init__(self, redis: SharedRedis, *, delay: float = DELAY) -> None:
        self.redis = redis
        self.delay = delay
        self.batches = 0
        """Pipelines sent (for tests and diagnostics)."""
        self._queued: list[_Call] = []  # nobody waits: sent when the timer fires
        self._asked: list[_Call] = []  # callers wait: sent when the asks in flight are back
        self._asking = False  # a pipeline of asks is in flight
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def command(self, what: str, *args: Any) -> None:
        """Queue the command ``args`` (``"ZREM", key, member``); ``what`` names it in logs."""
        self._queue((what, None, args, None))

    def script(self, what: str, script: Any, keys: list[str], args: list[Any]) -> None:
        """Queue a call of ``script`` (``register_script``'s object) on ``keys`` and ``args``."""
        self._queue((what, script, (len(keys), *keys, *args), None))

    async def ask(self, what: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Call ``script`` on ``keys`` and ``args``; its reply. Sent at once when no ask is in
        flight (in the caller's own task: no hop through another), else in the pipeline that
        leaves with every ask made meanwhile as soon as the one in flight is back.

        Raises:
            SharedStateError: the pipeline failed, or Redis answered this call with an error.
        """
        call: _Call = (what, script, (len(keys), *keys, *args), None)
        if self._asking:  # join the next pipeline
            reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._asked.append((*call[:3], reply))
            return await reply
        self._asking = True
        try:
            result = (await self._run([call]))[0]
        finally:
            self._next_asks()
        if isinstance(result, Exception):
            raise SharedStateError(f"{what}: {type(result).__name__}: {result}")
        return result

    def _next_asks(self) -> None:
        """The pipeline of asks in flight is back: send the asks made meanwhile, if any."""
        asked, self._asked = self._asked, []
        self._asking = bool(asked)
        if asked:
            self._start(self._batch(asked)).add_done_callback(
                functools.partial(self._asks_done, asked)
            )

    def _asks_done(self, asked: list[_Call], task: asyncio.Task[None]) -> None:
        """A pipeline of asks is over: any caller it left without a reply (the task was
        cancelled, or failed unexpectedly) gets an error, then the next asks go."""
        why = "cancelled" if task.cancelled() else repr(task.exception())
        if not task.cancelled() and task.exception() is not None:
            logger.error("shared state calls failed: %s", why)
        for _, _, _, reply in asked:
            if reply is not None and not reply.done():
                reply.set_exception(SharedStateError(f"shared state calls: {why}"))
        self._next_asks()

    def _queue(self, call: _Call) -> None:
        self._queued.append(call)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._send)

    def _send(self) -> None:
        self._timer = None
        queued, self._queued = self._queued, []
        if queued:
            self._start(self._batch(queued))

    def _start(self, batch: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(batch)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def flush(self) -> None:
        """Send what is queued now, and wait for every batch in flight."""
        if self._timer is not None:
            self._timer.cancel()
            self._send()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _batch(self, queued: list[_Call]) -> None:
        """Send ``queued``; log the failures of the calls nobody waits for, and hand the
        others their reply or error."""
        try:
            results = await self._run(queued)
        except SharedStateError as exc:
            lost = sorted({what for what, _, _, reply in queued if reply is None})
            if lost:
                logger.warning("shared state: %s (lost: %s)", exc, ", ".join(lost))
            for _, _, _, reply in queued:
                if reply is not None and not reply.done():
                    reply.set_exception(SharedStateError(str(exc)))
            return
        for (what, _, _, reply), result in zip(queued, results, strict=True):
            failed = isinstance(result, Exception)
            if reply is None:
                if failed:
                    logger.warning("shared state: %s: %s: %s", what, type(result).__name__, result)
            elif reply.done():  # its caller left (cancelled)
                continue
            elif failed:
                reply.set_exception(SharedStateError(f"{what}: {type(result).__name__}: {result}"))
            else:
                reply.set_result(result)

    async def _run(self, queued: list[_Call]) -> list[Any]:
        """Send ``queued`` in one pipeline, and once more the scripts' calls Redis had lost
        the scripts of (``NOSCRIPT``: it restarted); one result (or error reply) per call.

        Raises:
            SharedStateError: the pipeline as a whole failed (Redis down or slow).
        """
        results = await self._pipeline(queued)
        again = [i for i, result in enumerate(results) if is_noscript(result)]
        if again:
            calls = [queued[i] for i in again]
            for script in {id(c[1]): c[1] for c in calls}.values():
                await self.redis.call(self.redis.client.script_load(script.script), "SCRIPT LOAD")
            for i, result in zip(again, await self._pipeline(calls), strict=True):
                results[i] = result
        return results

    async def _pipeline(self, queued: list[_Call]) -> list[Any]:
        """Send ``queued`` in one pipeline: one result (or error) per call.

        Raises:
            SharedStateError: the pipeline as a whole failed (Redis down or slow).
        """
        pipe = self.redis.client.pipeline(transaction=False)
        for _, script, args, _ in queued:
            if script is None:
                pipe.execute_command(*args)
            else:
                pipe.evalsha(script.sha, *args)
        self.batches += 1
        results: list[Any] = await self.redis.call(
            pipe.execute(raise_on_error=False), "shared state calls"
        )
        return results
