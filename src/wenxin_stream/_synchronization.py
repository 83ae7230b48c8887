"""The few places where waiting differs between threads and tasks, as primitive pairs.

Theory of operation
-------------------
The async shells (``_async_client``, ``_tokens_async``, ``_ratelimit_async``,
``_conversation_async``, ``_transport_mock_async``) are the source of their sync twins:
``scripts/unasync.py`` rewrites each into its twin by renaming (``async def`` → ``def``,
``await x`` → ``x``, ``AsyncFlight`` → ``Flight``, ``async_sleep`` → ``sync_sleep`` …). That
is only correct if the two worlds differ in *names*, never in code, so every genuine
difference lives here, as a pair with the same interface (the idea of httpcore's
``_synchronization``):

- ``async_sleep`` / ``sync_sleep``: ``asyncio.sleep`` / ``time.sleep``, the default sleep of
  the shells (which take an injected one);
- ``AsyncFlight`` / ``Flight``: a result one caller produces and others wait for — one future
  awaited through ``asyncio.shield`` / a ``threading.Event`` and the outcome, read once it is
  set.

A *flight* is a result that one caller produces and any number of others wait for (the
single-flight token fetch). The producer calls :meth:`Flight.finish` exactly once, with a value
(``None`` meaning "abandoned: try again yourself") or an exception; every waiter's
:meth:`Flight.wait` then returns that value or raises that exception. A waiter that is cancelled
(a task) does not disturb the flight: the future is shielded.

Locks are not paired: the shells hold a ``threading.Lock`` only around state changes that never
wait, which is correct in both worlds, and cheap (held for microseconds, never across a wait).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Final, Generic, TypeVar

from ._clock import AsyncSleep, Sleep
from ._exceptions import detached

__all__ = ["AsyncFlight", "Flight", "async_sleep", "sync_sleep"]

T = TypeVar("T")

async_sleep: Final[AsyncSleep] = asyncio.sleep
"""The default sleep of the async shells."""

sync_sleep: Final[Sleep] = time.sleep
"""The default sleep of the sync shells."""


class AsyncFlight(Generic[T]):
    """A result one task produces and other tasks of the same event loop await."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> T | None:
        """The value :meth:`finish` gave, or raise its exception (a copy for each waiter).
        Cancelling the waiting task leaves the flight untouched."""
        future = self._future
        await asyncio.wait((future,))  # (a cancelled wait does not cancel the future)
        error = future.exception()
        if error is not None:  # the kept one, raised, would make a cycle (see Flight.finish)
            raise detached(error)
        return future.result()

    def finish(self, value: T | None, error: BaseException | None = None) -> None:
        """End the flight with ``error`` if given, else with ``value`` (call once). The error
        is kept without its traceback: the producer's frames hold the flight (a cycle)."""
        if error is not None:
            self._future.set_exception(detached(error))
            self._future.exception()  # retrieved: no "never retrieved" warning without waiters
        else:
            self._future.set_result(value)


class Flight(Generic[T]):
    """A result one thread produces and other threads wait for."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def wait(self) -> T | None:
        """The value :meth:`finish` gave, or raise its exception (blocks until finished)."""
        self._done.wait()
        if self._error is not None:  # a copy for each waiter (each thread its own traceback)
            raise detached(self._error)
        return self._value

    def finish(self, value: T | None, error: BaseException | None = None) -> None:
        """End the flight with ``error`` if given, else with ``value`` (call once). The error
        is kept without its traceback: the producer's frames hold the flight (a cycle)."""
        self._value, self._error = value, None if error is None else detached(error)
        self._done.set()
