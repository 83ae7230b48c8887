"""The report of a shutdown that takes too long (``server/_stuck_tasks.py``): where each task
of the loop waits, coroutine by coroutine."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from wenxin_stream.server import _stuck_tasks
from wenxin_stream.server._stuck_tasks import await_chain, watch_shutdown


async def _inner(never: asyncio.Future[None]) -> None:
    await never


async def _outer(never: asyncio.Future[None]) -> None:
    await _inner(never)


async def test_the_chain_names_each_coroutine_down_to_the_future() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_outer(never), name="stuck step")
    await asyncio.sleep(0)  # suspended in _inner, on the future
    chain = await_chain(task)
    name, _, steps = chain.partition(": ")
    assert name == "stuck step"
    outer, inner, bottom = steps.split(" -> ")
    assert outer.startswith("_outer (test_stuck_tasks.py:")
    assert inner.startswith("_inner (test_stuck_tasks.py:")
    assert bottom == "Future"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_shutdown_still_running_after_the_grace_is_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_stuck_tasks, "REPORT_AFTER", 0.2)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_outer(never), name="store close")
    with caplog.at_level(logging.WARNING, logger="wenxin_stream.server"):
        timer = watch_shutdown(0.3)
        await asyncio.sleep(0.05)
        assert not caplog.records  # not before the grace and the margin (0.5 s)
        await asyncio.sleep(0.8)
    timer.cancel()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = caplog.records
    message = record.getMessage()
    assert re.match(r"the shutdown has taken 0\.\d s; its \d+ tasks wait at:\n", message)
    assert "store close: _outer (test_stuck_tasks.py:" in message
    assert "-> _inner (test_stuck_tasks.py:" in message
