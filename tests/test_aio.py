"""The per-chunk asyncio helpers: ``sleep_until`` and ``ReadDeadline`` (one lazy timer per stream).

Run on pytest-asyncio's default asyncio loop, whose clock is ``time.monotonic`` (no whole-
millisecond rounding as with uvloop); comparisons still allow :data:`SLACK` for the loop's clock
resolution."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from wenxin_stream._aio import ReadDeadline, sleep_until

SLACK = 0.002
"""How early a timer may fire (loop clock resolution, ``TOLERANCE``) without being early."""


class Timers:
    """Records the timers armed through ``loop.call_at`` (and reported loop errors)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.armed: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.TimerHandle]] = []
        self.errors: list[dict[str, Any]] = []

    def handles(self, name: str) -> list[asyncio.TimerHandle]:
        """Handles of the timers whose callback is called ``name``."""
        return [h for cb, _, h in self.armed if getattr(cb, "__name__", "") == name]


@pytest.fixture
async def timers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Timers]:
    loop = asyncio.get_running_loop()
    record = Timers(loop)
    original = loop.call_at

    def call_at(when: float, callback: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        handle = original(when, callback, *args, **kw)
        record.armed.append((callback, args, handle))
        return handle

    monkeypatch.setattr(loop, "call_at", call_at)
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: record.errors.append(context))
    yield record
    loop.set_exception_handler(previous)


def _never(loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    return loop.create_future()


# -- sleep_until -------------------------------------------------------------------------------


async def test_sleep_until_returns_no_earlier_than_the_deadline() -> None:
    loop = asyncio.get_running_loop()
    for delay in (0.03, 0.01):
        start = loop.time()
        when = start + delay
        await sleep_until(loop, when)
        now = loop.time()
        assert now >= when - SLACK
        assert now - start < delay + 0.25  # and it does return


async def test_sleep_until_a_past_time_yields_once_without_sleeping(timers: Timers) -> None:
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    loop.call_soon(ran.append, "other")
    start = time.perf_counter()
    await sleep_until(loop, loop.time() - 1.0)
    assert ran == ["other"]  # it let the loop run a step
    assert time.perf_counter() - start < 0.05
    await sleep_until(loop, loop.time())  # exactly now counts as past
    assert timers.handles("_wake") == []  # no timer armed for either


async def test_cancelled_sleep_leaves_no_timer(timers: Timers) -> None:
    loop = asyncio.get_running_loop()
    when = loop.time() + 0.05
    task = asyncio.create_task(sleep_until(loop, when))
    await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [(_, args, handle)] = [a for a in timers.armed if a[0].__name__ == "_wake"]
    assert handle.cancelled()  # the timer went with the sleep
    assert args[0].cancelled()  # and so did the future it would have woken
    await asyncio.sleep(when - loop.time() + 0.02)  # run past the old deadline
    assert timers.errors == []


async def test_sleep_until_wakes_a_later_sleep_on_time(timers: Timers) -> None:
    loop = asyncio.get_running_loop()
    when = loop.time() + 0.02
    await sleep_until(loop, when)
    [handle] = timers.handles("_wake")
    assert handle.when() == when  # the absolute deadline itself, not a recomputed delay
    assert timers.errors == []


# -- ReadDeadline ------------------------------------------------------------------------------


async def test_wait_returns_the_value_in_time() -> None:
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    future = loop.create_future()
    loop.call_later(0.01, future.set_result, b"chunk")
    assert await deadline.wait(future, 1.0) == b"chunk"

    async def read() -> str:
        await asyncio.sleep(0)
        return "字"

    assert await deadline.wait(read(), 1.0) == "字"
    deadline.close()


async def test_wait_raises_timeout_error_and_cancels_the_read() -> None:
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    future = _never(loop)
    start = loop.time()
    with pytest.raises(TimeoutError):
        await deadline.wait(future, 0.05)
    elapsed = loop.time() - start
    assert 0.05 - SLACK <= elapsed < 1.0
    assert future.cancelled()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the cancellation was withdrawn
    await asyncio.sleep(0.01)  # and the task goes on uncancelled

    seen: list[str] = []

    async def read() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    with pytest.raises(TimeoutError):
        await deadline.wait(read(), 0.02)
    assert seen == ["cancelled"]
    assert task.cancelling() == 0
    deadline.close()


async def test_the_deadline_is_per_read_not_per_stream() -> None:
    """Each read completes within the timeout, together they take longer: the one timer, armed
    by the first read, fires during a later read and must re-arm instead of expiring it."""
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    timeout = 0.25  # ten times a read: a busy CI machine does not make one read expire
    start = loop.time()
    for n in range(24):
        assert await deadline.wait(asyncio.sleep(0.025, n), timeout) == n
    assert loop.time() - start > 2 * timeout  # the premise: several timeouts in total
    # the re-armed timer still expires a read that takes too long, on time
    read_start = loop.time()
    with pytest.raises(TimeoutError):
        await deadline.wait(_never(loop), timeout)
    assert loop.time() - read_start >= timeout - SLACK
    deadline.close()


async def test_a_timer_firing_between_reads_is_rearmed_by_the_next_read() -> None:
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    assert await deadline.wait(asyncio.sleep(0, "a"), 0.03) == "a"
    await asyncio.sleep(0.05)  # the timer fires with no read in progress
    start = loop.time()
    with pytest.raises(TimeoutError):
        await deadline.wait(_never(loop), 0.03)
    assert 0.03 - SLACK <= loop.time() - start < 1.0
    deadline.close()


async def test_a_shorter_timeout_after_a_longer_one_is_honoured() -> None:
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    assert await deadline.wait(asyncio.sleep(0, 1), 1.0) == 1  # arms a timer 1 s out
    start = loop.time()
    with pytest.raises(TimeoutError):
        await deadline.wait(_never(loop), 0.03)
    assert 0.03 - SLACK <= loop.time() - start < 0.3  # re-armed earlier, not 1 s
    deadline.close()


async def test_an_outer_cancellation_propagates_as_cancelled_error() -> None:
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    future = _never(loop)
    task = asyncio.create_task(deadline.wait(future, 1.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert future.cancelled()
    deadline.close()


async def test_an_outer_cancellation_right_after_expiry_still_propagates() -> None:
    """The timer has cancelled the reader (deadline passed) and, before the reader runs, its
    owner cancels it too: the owner's cancellation wins, as with ``asyncio.timeout``."""
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    task = asyncio.create_task(deadline.wait(_never(loop), 0.02))
    # Spin with plain yields: each loop iteration runs this task before due timers, so the
    # reader (woken by the timer's cancel) has not run when this task sees the expiry.
    for _ in range(100_000):
        await asyncio.sleep(0)
        if task.cancelling():
            break
    assert task.cancelling() == 1  # expired: cancelled by the deadline
    assert not task.done()
    task.cancel()  # the owner's cancellation, before the reader ran
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    deadline.close()


async def test_consecutive_timeouts_keep_the_cancel_count_balanced() -> None:
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    task = asyncio.current_task()
    assert task is not None
    for _ in range(3):
        with pytest.raises(TimeoutError):
            await deadline.wait(_never(loop), 0.01)
        assert task.cancelling() == 0
        assert await deadline.wait(asyncio.sleep(0, "ok"), 0.01) == "ok"
    async with asyncio.timeout(0.01):  # asyncio's own timeout still works in this task
        await asyncio.sleep(0)
    deadline.close()


async def test_a_read_that_swallows_the_expiry_leaves_no_cancellation_behind() -> None:
    """``asyncio.timeout`` uncancels on exit whenever it expired, even when the body swallowed
    the cancellation; the module promises its semantics."""
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    task = asyncio.current_task()
    assert task is not None

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "partial"
        return "never"

    result = await deadline.wait(stubborn(), 0.01)
    assert result == "partial"
    assert task.cancelling() == 0
    with pytest.raises(TimeoutError):  # the next expiry is a timeout again
        await deadline.wait(_never(loop), 0.01)


async def test_close_is_idempotent_and_drops_the_timer(timers: Timers) -> None:
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline(loop)
    deadline.close()  # before any read: nothing to drop
    assert await deadline.wait(asyncio.sleep(0, "x"), 0.03) == "x"
    [handle] = timers.handles("_fire")
    assert not handle.cancelled()
    deadline.close()
    assert handle.cancelled()
    deadline.close()
    await asyncio.sleep(0.05)  # past the old deadline: nothing fires, nothing fails
    assert timers.errors == []
    assert timers.handles("_fire") == [handle]  # and nothing was re-armed
    # a stream closed and read again (not expected, but harmless) arms a fresh timer
    with pytest.raises(TimeoutError):
        await deadline.wait(_never(loop), 0.01)
    deadline.close()


def test_wait_outside_a_task_is_refused() -> None:
    loop = asyncio.new_event_loop()
    try:
        deadline = ReadDeadline(loop)
        coro = deadline.wait(loop.create_future(), 1.0)
        with pytest.raises(RuntimeError, match="in a task"):
            coro.send(None)
        deadline.close()
        assert loop._scheduled == []  # type: ignore[attr-defined]  # no timer was armed
    finally:
        loop.close()


async def test_stop_task_cancels_waits_and_keeps_errors_and_outer_cancellation() -> None:
    from wenxin_stream._aio import stop_task

    ran: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ran.append("cleaned up")

    task = asyncio.ensure_future(forever())
    await asyncio.sleep(0)
    await stop_task(task)  # its own cancellation is not raised
    assert task.cancelled()
    assert ran == ["cleaned up"]
    await stop_task(None)

    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("broke while stopping") from None

    failing = asyncio.ensure_future(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="broke while stopping"):
        await stop_task(failing)

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(60)  # takes its time to end

    slow = asyncio.ensure_future(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.ensure_future(stop_task(slow))
    await asyncio.sleep(0.01)
    stopper.cancel()  # the caller itself is cancelled while it waits
    with pytest.raises(asyncio.CancelledError):
        await stopper
    slow.cancel()
