"""asyncio helpers for per-chunk and per-connection paths: waits that cost no system call and at
most one timer, and the race of a connection's tasks.

Why: on CPython 3.11 every ``asyncio.get_running_loop()`` makes a ``getpid()`` system call (the
running-loop cache checks the process id; 3.12 dropped the check), and ``asyncio.sleep(delay)``,
``asyncio.timeout()`` and ``asyncio.current_task()`` without a loop all call it. On the
virtual machines we run on a system call is expensive: a profile of ``wenxin serve`` relaying
150 streams found 21 % of the event-loop thread's samples inside ``getpid``, all from one
``asyncio.timeout()`` per upstream read. ``asyncio.timeout()`` also creates and cancels a
timer handle per read.

The helpers take the loop explicitly:

:func:`sleep_until`
    ``asyncio.sleep`` to an absolute ``loop.time()`` (the emulator's pacing).
:class:`ReadDeadline`
    a deadline for each of a stream's reads with ONE timer per stream, re-armed only when it
    fires early (the idea of a lazy watchdog): a read that completes in time costs two float
    assignments. When a read's deadline passes, the reading task is cancelled and the read
    raises :class:`TimeoutError` — the semantics of ``asyncio.timeout`` (the cancellation is
    withdrawn with ``Task.uncancel``, so an outer cancellation still propagates).
:func:`stop_task`
    cancel a background task (a tick, a writer, a listener) and wait until it has ended.
:func:`retrieve`
    a done callback for a task nobody awaits: its end is taken, so a failure is not reported
    as "never retrieved".
:func:`race`
    the task group of one connection (the emulator's pump against the disconnect listener, a
    WebSocket's reader against its stall watchdog): the first coroutine to finish cancels the
    others and waits for them, so leaving always leaves nothing running behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

__all__ = ["ReadDeadline", "race", "retrieve", "sleep_until", "stop_task"]

T = TypeVar("T")

TOLERANCE = 0.001
"""A timer that fires this close to its deadline counts as on time (uvloop's clock counts
whole milliseconds)."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Sleep until ``loop.time()`` reaches ``when``; yield once if it already has."""
    if when <= loop.time():
        await asyncio.sleep(0)  # no delay: a plain yield, no loop lookup
        return
    future = loop.create_future()
    handle = loop.call_at(when, _wake, future)
    try:
        await future
    finally:
        handle.cancel()


class ReadDeadline:
    """Per-read deadlines for one stream, with one lazily re-armed timer (see the module)."""

    __slots__ = ("_deadline", "_expired", "_handle", "_loop", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._deadline = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._expired = False

    async def wait(self, awaitable: Awaitable[T], timeout: float) -> T:  # noqa: ASYNC109
        """Await ``awaitable`` for at most ``timeout`` seconds.

        Raises:
            TimeoutError: the time ran out (the awaitable was cancelled).
        """
        loop = self._loop
        deadline = loop.time() + timeout
        self._deadline = deadline
        # the task lives only in self._task, never in a local of this frame: a cancellation
        # leaving through here keeps the frame in its traceback, and a frame that refers to
        # the task (which refers to the error) would make every cancelled stream a cycle
        self._task = asyncio.current_task(loop)  # with the loop given: no syscall
        if self._task is None:
            raise RuntimeError("ReadDeadline.wait must be awaited in a task of its loop")
        handle = self._handle
        if handle is None or handle.when() > deadline + TOLERANCE:
            if handle is not None:
                handle.cancel()
            self._handle = loop.call_at(deadline, self._fire)
        try:
            result = await awaitable
            if self._expired:  # the awaitable swallowed our cancellation: withdraw it anyway
                self._expired = False
                self._withdraw()
            return result
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if self._withdraw() == 0:
                    raise TimeoutError from None
            raise
        finally:
            self._task = None

    def _withdraw(self) -> int:
        task = self._task
        assert task is not None
        return task.uncancel()

    def _fire(self) -> None:
        self._handle = None
        task = self._task
        if task is None:
            return  # between reads: the next read arms a timer again
        if self._deadline - self._loop.time() > TOLERANCE:
            self._handle = self._loop.call_at(self._deadline, self._fire)  # a later read
            return
        self._expired = True
        task.cancel()

    def close(self) -> None:
        """Drop the timer (idempotent)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def race(*coros: Coroutine[Any, Any, Any]) -> int:
    """Run the coroutines as tasks until the first finishes; cancel and await the rest.

    Returns the index of the first to finish (the lowest of several finishing together) and
    re-raises its exception. If the caller is cancelled, every task is cancelled and the
    cancellation propagates. (The first finisher is awaited through done callbacks and one
    future, not ``asyncio.wait``, which costs a set, futures and callbacks per call.)
    """
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()

    def finished(_: asyncio.Task[Any]) -> None:
        if not first.done():
            first.set_result(None)

    tasks = [loop.create_task(c) for c in coros]
    for task in tasks:
        task.add_done_callback(finished)
    try:
        await first
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in tasks:  # retrieved, also when the caller is cancelled: the losers' errors
            if task.done() and not task.cancelled():  # while being cancelled are not news
                task.exception()
    winner = next(index for index, task in enumerate(tasks) if task not in pending)
    tasks[winner].result()  # re-raises what the winner raised
    return winner


def retrieve(task: asyncio.Task[Any]) -> None:
    """A done callback for a task nobody awaits (one let go, or fire-and-forget): take its
    end, so that a failure is not reported as "Task exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has ended; its cancellation is not raised
    here (an error it ended with is)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the caller is being cancelled (not a per-chunk path: the lookup is fine)
        # the task's own cancellation: what was asked for
