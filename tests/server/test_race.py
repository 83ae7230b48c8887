"""``race`` (``wenxin_stream._aio``): the connection's task group whose first finisher cancels
(and awaits) the rest (the emulator's streams, a WebSocket's reader) — a cancellation from
outside still propagates, and nothing is left running or unretrieved."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Coroutine
from typing import Any

import pytest

from wenxin_stream._aio import race


class Runner:
    """Coroutines that record what happened to them."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}

    def _enter(self, name: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks[name] = task

    async def forever(self, name: str) -> None:
        self._enter(name)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.outcomes[name] = "cancelled"
            raise

    async def after(self, name: str, delay: float, value: Any = None) -> Any:
        self._enter(name)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.outcomes[name] = "cancelled"
            raise
        self.outcomes[name] = "finished"
        return value

    async def fails_on_cancel(self, name: str) -> None:
        self._enter(name)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.outcomes[name] = "raised"
            raise RuntimeError(f"{name} broke while being cancelled") from None

    async def fails_after(self, name: str, delay: float, message: str) -> None:
        await self.after(name, delay)
        raise ValueError(message)

    async def slow_to_die(self, name: str, delay: float) -> None:
        self._enter(name)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(delay)
            self.outcomes[name] = "cancelled late"
            raise

    async def swallows(self, name: str, delay: float) -> None:
        """Ends normally when cancelled, after ``delay`` (a coroutine that eats its
        cancellation)."""
        self._enter(name)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            with contextlib.suppress(asyncio.CancelledError):  # a second one too
                await asyncio.sleep(delay)
            self.outcomes[name] = "swallowed"


async def _collected() -> None:
    """Collect garbage once the handle that woke this task (its arguments may be the tasks
    being checked) has finished running."""
    await asyncio.sleep(0)
    gc.collect()


async def _cancelled_after(caller: Coroutine[Any, Any, Any], delay: float) -> None:
    """Run ``caller`` as a task and cancel it after ``delay``: it must end cancelled."""
    task = asyncio.create_task(caller)
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_returns_the_index_of_the_first_finisher_and_awaits_the_rest() -> None:
    r = Runner()
    index = await race(r.after("slow", 0.2), r.after("quick", 0.01), r.forever("idle"))
    assert index == 1
    # by the time race returns, the losers have been cancelled AND have run their handlers
    assert r.outcomes == {"quick": "finished", "slow": "cancelled", "idle": "cancelled"}
    assert all(task.done() for task in r.tasks.values())
    assert r.tasks["slow"].cancelled()
    assert r.tasks["idle"].cancelled()


async def test_the_winners_exception_is_re_raised() -> None:
    r = Runner()

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("upstream gone")

    with pytest.raises(ValueError, match="upstream gone"):
        await race(r.forever("a"), fails(), r.after("b", 0.2))
    assert r.outcomes == {"a": "cancelled", "b": "cancelled"}
    assert all(task.done() for task in r.tasks.values())


async def test_of_several_finishing_together_the_lowest_index_wins(
    loop_errors: list[dict[str, Any]],
) -> None:
    """Index 1 finishes first within the loop iteration, index 0 right after it: 0 wins (and
    1's error, not the winner's, is retrieved quietly)."""
    loop = asyncio.get_running_loop()
    gate0: asyncio.Future[None] = loop.create_future()
    gate1: asyncio.Future[None] = loop.create_future()
    order: list[int] = []

    async def zero() -> str:
        await gate0
        order.append(0)
        return "zero"

    async def one() -> None:
        await gate1
        order.append(1)
        raise ValueError("one finished first")

    def open_both() -> None:  # one callback: both tasks wake in the same iteration, 1 first
        gate1.set_result(None)
        gate0.set_result(None)

    loop.call_later(0.01, open_both)
    assert await race(zero(), one()) == 0
    assert order == [1, 0]  # the premise: 1 did finish first
    await _collected()
    assert loop_errors == []


async def test_cancelling_the_caller_cancels_every_task() -> None:
    r = Runner()
    caller = asyncio.create_task(race(r.forever("a"), r.forever("b"), r.after("c", 5.0)))
    await asyncio.sleep(0.01)
    assert len(r.tasks) == 3
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert r.outcomes == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert all(task.cancelled() for task in r.tasks.values())


async def test_a_loser_failing_while_cancelled_stays_quiet(
    loop_errors: list[dict[str, Any]],
) -> None:
    r = Runner()
    assert await race(r.fails_on_cancel("loser"), r.after("winner", 0.01, "w")) == 1
    assert r.outcomes == {"loser": "raised", "winner": "finished"}
    loser = r.tasks["loser"]
    assert loser.done()
    assert not loser.cancelled()  # it did fail (not asking which error: that would retrieve it)
    del loser
    r.tasks.clear()
    await _collected()
    assert loop_errors == []  # and nothing reported it


async def test_a_loser_failing_unretrieved_would_be_reported(
    loop_errors: list[dict[str, Any]],
) -> None:
    """The check above can see a leak: the same failure in a task nobody retrieves is
    reported through the loop's exception handler once collected."""
    r = Runner()
    task = asyncio.create_task(r.fails_on_cancel("orphan"))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait([task])
    del task
    r.tasks.clear()
    await _collected()
    assert [e["message"] for e in loop_errors] == ["Task exception was never retrieved"]
    loop_errors.clear()


async def test_a_loser_failing_while_the_caller_is_cancelled_stays_quiet(
    loop_errors: list[dict[str, Any]],
) -> None:
    r = Runner()
    await _cancelled_after(race(r.forever("a"), r.fails_on_cancel("b")), 0.01)
    assert r.outcomes == {"a": "cancelled", "b": "raised"}
    r.tasks.clear()
    await _collected()
    assert loop_errors == []
