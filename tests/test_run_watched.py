"""``run_watched`` (``wenxin_stream._aio``): a connection's relay loop in the request's own
task, its watcher in a task beside it; the first to finish ends the other, a cancellation
from outside still propagates, and nothing is left running or unretrieved."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from wenxin_stream._aio import run_watched


class Recorder:
    """Coroutines that record what happened to them, and in which task they ran."""

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

    async def after(self, name: str, delay: float, error: str | None = None) -> str:
        self._enter(name)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.outcomes[name] = "cancelled"
            raise
        self.outcomes[name] = "finished"
        if error is not None:
            raise ValueError(error)
        return name

    async def fails_on_cancel(self, name: str) -> None:
        self._enter(name)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.outcomes[name] = "raised"
            raise RuntimeError(f"{name} broke while being cancelled") from None

    async def slow_to_die(self, name: str, delay: float) -> None:
        self._enter(name)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(delay)
            self.outcomes[name] = "cancelled late"
            raise

    async def swallows(self, name: str, delay: float) -> None:
        """Ends normally when cancelled, after ``delay`` (a watcher that eats its
        cancellation)."""
        self._enter(name)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            with contextlib.suppress(asyncio.CancelledError):  # a second one too
                await asyncio.sleep(delay)
            self.outcomes[name] = "swallowed"


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the loop's exception handler (e.g. "Task exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    await asyncio.sleep(0)
    gc.collect()
    loop.set_exception_handler(previous)


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


async def test_main_finishing_first_returns_true_and_ran_in_the_callers_task() -> None:
    r = Recorder()
    caller = asyncio.current_task()
    assert await run_watched(r.after("main", 0.01), r.forever("watcher")) is True
    assert r.outcomes == {"main": "finished", "watcher": "cancelled"}
    assert r.tasks["main"] is caller  # no task of its own: the point of it
    assert r.tasks["watcher"] is not caller
    assert r.tasks["watcher"].cancelled()  # and awaited: done by the time it returns


async def test_main_failing_is_re_raised_and_the_watcher_is_stopped() -> None:
    r = Recorder()
    with pytest.raises(ValueError, match="upstream gone"):
        await run_watched(r.after("main", 0.01, error="upstream gone"), r.forever("watcher"))
    assert r.outcomes == {"main": "finished", "watcher": "cancelled"}
    assert r.tasks["watcher"].done()


async def test_the_watcher_finishing_first_cancels_main_and_withdraws_that() -> None:
    r = Recorder()
    caller = asyncio.current_task()
    assert caller is not None
    assert await run_watched(r.forever("main"), r.after("watcher", 0.01)) is False
    assert r.outcomes == {"main": "cancelled", "watcher": "finished"}
    assert caller.cancelling() == 0
    await asyncio.sleep(0.005)  # the caller goes on: no cancellation is left to hit it
    assert await run_watched(r.after("again", 0.001), r.forever("w2")) is True


async def test_the_watchers_error_is_re_raised() -> None:
    r = Recorder()
    with pytest.raises(ValueError, match="receive broke"):
        await run_watched(r.forever("main"), r.after("watcher", 0.01, error="receive broke"))
    assert r.outcomes["main"] == "cancelled"


async def test_main_failing_while_the_watcher_cuts_it_stays_quiet(
    loop_errors: list[dict[str, Any]],
) -> None:
    r = Recorder()
    assert await run_watched(r.fails_on_cancel("main"), r.after("watcher", 0.01)) is False
    assert r.outcomes == {"main": "raised", "watcher": "finished"}
    assert loop_errors == []


async def test_a_watcher_failing_while_stopped_stays_quiet(
    loop_errors: list[dict[str, Any]],
) -> None:
    r = Recorder()
    assert await run_watched(r.after("main", 0.01), r.fails_on_cancel("watcher")) is True
    assert r.outcomes == {"main": "finished", "watcher": "raised"}
    r.tasks.clear()
    await asyncio.sleep(0)
    gc.collect()
    assert loop_errors == []


async def test_cancelling_the_caller_cancels_both_and_propagates() -> None:
    r = Recorder()
    caller = asyncio.create_task(run_watched(r.forever("main"), r.forever("watcher")))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert r.outcomes == {"main": "cancelled", "watcher": "cancelled"}
    assert r.tasks["watcher"].cancelled()


async def test_a_cancellation_arriving_with_the_watchers_end_still_propagates() -> None:
    """The watcher ends and the caller is cancelled from outside in the same iteration: the
    outside cancellation is not mistaken for the watcher's own and swallowed."""
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    r = Recorder()

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


async def test_cancelling_the_caller_while_it_waits_for_the_watcher_propagates() -> None:
    r = Recorder()
    caller = asyncio.create_task(run_watched(r.after("main", 0.01), r.slow_to_die("w", 0.05)))
    await asyncio.sleep(0.03)  # main is over; the watcher takes its time to end
    assert r.outcomes == {"main": "finished"}
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()


async def test_a_watcher_that_eats_its_cancellation_does_not_eat_the_callers() -> None:
    """The caller is cancelled while it waits for a watcher that ends normally when
    cancelled: the caller's cancellation still propagates."""
    r = Recorder()
    assert await run_watched(r.after("main", 0.001), r.swallows("quiet", 0.001)) is True
    assert r.outcomes == {"main": "finished", "quiet": "swallowed"}
    caller = asyncio.create_task(run_watched(r.after("main2", 0.01), r.swallows("w", 0.05)))
    await asyncio.sleep(0.03)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert r.outcomes["w"] == "swallowed"


async def test_outside_a_task_it_refuses() -> None:
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
async def test_an_error_leaving_it_makes_no_reference_cycle(no_collector: None, who: str) -> None:
    """A failed connection's task, its error and this frame are freed by reference counts
    alone (the server's cyclic collector runs only when quiet)."""
    r = Recorder()

    async def connection() -> None:
        if who == "main":
            await run_watched(r.after("main", 0.001, error="x"), r.forever("watcher"))
        else:
            await run_watched(r.forever("main"), r.after("watcher", 0.001, error="x"))

    task = asyncio.create_task(connection())
    with pytest.raises(ValueError, match="x"):
        await task
    ref = weakref.ref(task)
    r.tasks.clear()
    del task
    await asyncio.sleep(0)
    assert ref() is None
