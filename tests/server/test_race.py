"""``race`` (``wenxin_stream._aio``): the connection's task group whose first finisher cancels
(and awaits) the rest (the emulator's streams, a WebSocket's reader); and ``run_watched``, the
same for two with the main coroutine in the caller's own task (the server's SSE and OpenAI
streams: the relay loop in the request's task, its watcher beside it) — a cancellation from
outside still propagates, and nothing is left running, unretrieved or in a reference cycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import pytest

from wenxin_stream._aio import race, run_watched


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


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the loop's exception handler (e.g. "Task exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    gc.collect()
    loop.set_exception_handler(previous)


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


# --- run_watched ---------------------------------------------------------------------


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off (as in the server between its quiet collections): what is
    freed now is freed by reference counts alone."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if was:
        gc.enable()


async def test_watched_main_finishing_first_returns_true_and_ran_in_the_callers_task() -> None:
    r = Runner()
    caller = asyncio.current_task()
    assert await run_watched(r.after("main", 0.01), r.forever("watcher")) is True
    assert r.outcomes == {"main": "finished", "watcher": "cancelled"}
    assert r.tasks["main"] is caller  # no task of its own: the point of it
    assert r.tasks["watcher"] is not caller
    assert r.tasks["watcher"].cancelled()  # and awaited: done by the time it returns


async def test_watched_main_failing_is_re_raised_and_the_watcher_is_stopped() -> None:
    r = Runner()
    with pytest.raises(ValueError, match="upstream gone"):
        await run_watched(r.fails_after("main", 0.01, "upstream gone"), r.forever("watcher"))
    assert r.outcomes == {"main": "finished", "watcher": "cancelled"}
    assert r.tasks["watcher"].done()


async def test_watched_the_watcher_finishing_first_cancels_main_and_withdraws_that() -> None:
    r = Runner()
    caller = asyncio.current_task()
    assert caller is not None
    assert await run_watched(r.forever("main"), r.after("watcher", 0.01)) is False
    assert r.outcomes == {"main": "cancelled", "watcher": "finished"}
    assert caller.cancelling() == 0
    await asyncio.sleep(0.005)  # the caller goes on: no cancellation is left to hit it
    assert await run_watched(r.after("again", 0.001), r.forever("w2")) is True


async def test_watched_the_watchers_error_is_re_raised() -> None:
    r = Runner()
    with pytest.raises(ValueError, match="receive broke"):
        await run_watched(r.forever("main"), r.fails_after("watcher", 0.01, "receive broke"))
    assert r.outcomes["main"] == "cancelled"


async def test_watched_main_failing_while_the_watcher_cuts_it_stays_quiet(
    loop_errors: list[dict[str, Any]],
) -> None:
    r = Runner()
    assert await run_watched(r.fails_on_cancel("main"), r.after("watcher", 0.01)) is False
    assert r.outcomes == {"main": "raised", "watcher": "finished"}
    assert loop_errors == []


async def test_watched_a_watcher_failing_while_stopped_stays_quiet(
    loop_errors: list[dict[str, Any]],
) -> None:
    r = Runner()
    assert await run_watched(r.after("main", 0.01), r.fails_on_cancel("watcher")) is True
    assert r.outcomes == {"main": "finished", "watcher": "raised"}
    r.tasks.clear()
    await asyncio.sleep(0)
    gc.collect()
    assert loop_errors == []


async def test_watched_cancelling_the_caller_cancels_both_and_propagates() -> None:
    r = Runner()
    await _cancelled_after(run_watched(r.forever("main"), r.forever("watcher")), 0.01)
    assert r.outcomes == {"main": "cancelled", "watcher": "cancelled"}
    assert r.tasks["watcher"].cancelled()


async def test_watched_a_cancellation_arriving_with_the_watchers_end_still_propagates() -> None:
    """The watcher ends and the caller is cancelled from outside in the same iteration: the
    outside cancellation is not mistaken for the watcher's own and swallowed."""
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    r = Runner()

    async def watcher() -> None:
        await gate

    caller = asyncio.create_task(run_watched(r.forever("main"), watcher()))
    await asyncio.sleep(0.01)

    def both() -> None:
        gate.set_result(None)
        caller.cancel()

    loop.call_soon(both)
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert r.outcomes == {"main": "cancelled"}


async def test_watched_cancelling_the_caller_while_it_waits_for_the_watcher_propagates() -> None:
    r = Runner()
    caller = asyncio.create_task(run_watched(r.after("main", 0.01), r.slow_to_die("w", 0.05)))
    await asyncio.sleep(0.03)  # main is over; the watcher takes its time to end
    assert r.outcomes == {"main": "finished"}
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()


async def test_watched_a_watcher_that_eats_its_cancellation_does_not_eat_the_callers() -> None:
    """The caller is cancelled while it waits for a watcher that ends normally when
    cancelled: the caller's cancellation still propagates."""
    r = Runner()
    assert await run_watched(r.after("main", 0.001), r.swallows("quiet", 0.001)) is True
    assert r.outcomes == {"main": "finished", "quiet": "swallowed"}
    caller = asyncio.create_task(run_watched(r.after("main2", 0.01), r.swallows("w", 0.05)))
    await asyncio.sleep(0.03)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert r.outcomes["w"] == "swallowed"


async def test_watched_outside_a_task_it_refuses() -> None:
    async def noop() -> None:
        pass

    loop = asyncio.get_running_loop()
    refused: asyncio.Future[str] = loop.create_future()
    main, watcher = noop(), noop()
    runner = run_watched(main, watcher)

    def drive() -> None:  # a callback of the loop: no current task
        try:
            runner.send(None)
        except RuntimeError as exc:
            refused.set_result(str(exc))

    loop.call_soon(drive)
    assert "in a task of its loop" in await refused
    main.close()
    watcher.close()


@pytest.mark.parametrize("who", ["main", "watcher"])
async def test_watched_an_error_leaving_it_makes_no_reference_cycle(
    no_collector: None, who: str
) -> None:
    """A failed connection's task, its error and this frame are freed by reference counts
    alone (the server's cyclic collector runs only when quiet)."""
    r = Runner()

    async def connection() -> None:
        if who == "main":
            await run_watched(r.fails_after("main", 0.001, "x"), r.forever("watcher"))
        else:
            await run_watched(r.forever("main"), r.fails_after("watcher", 0.001, "x"))

    task = asyncio.create_task(connection())
    with pytest.raises(ValueError, match="x"):
        await task
    ref = weakref.ref(task)
    r.tasks.clear()
    del task
    await asyncio.sleep(0)
    assert ref() is None
