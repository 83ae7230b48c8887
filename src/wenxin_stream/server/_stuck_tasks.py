"""Where the event loop's tasks wait: a report for a shutdown that takes too long.

A drain is bounded: ``shutdown_grace`` for the answers (from the last one taken, in the window
for requests already on their way: ``DRAIN_IDLE``), a few seconds for the rest; a supervisor
kills a process still alive ``STOP_MARGIN`` seconds after that (``_workers``). A process that
hangs in its shutdown is idle in its event loop, where a thread dump (``py-spy dump``) shows
nothing but the loop's ``epoll`` wait: the stuck part is a coroutine waiting for something that
will not come. So ``wenxin serve`` arms :func:`watch_shutdown` when its shutdown begins: if the
process is still there :data:`REPORT_AFTER` seconds after that bound, it logs every task of the
loop with the chain of awaits it is suspended in — each coroutine's name, file and line, down
to the future or other object at the bottom — which is what one needs to tell which step never
ended.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

__all__ = ["REPORT_AFTER", "await_chain", "watch_shutdown"]

logger = logging.getLogger("wenxin_stream.server")

REPORT_AFTER = 4.0
"""Seconds after the drain's bound that a shutdown still running is reported (before a
supervisor's kill, ``_workers.STOP_MARGIN`` = 5 s after it)."""

_DEPTH = 40
"""Most awaits of one chain reported."""


def await_chain(task: asyncio.Task[Any]) -> str:
    """``task``'s name and where it waits: each coroutine of its await chain as ``name
    (file:line)``, then what the innermost one awaits when that is not a coroutine."""
    parts: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(parts) < _DEPTH:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        frame = frame or getattr(awaited, "gi_frame", None)
        if frame is None:  # a future (or task: awaited through a `FutureIter`), a C awaitable
            name = type(awaited).__name__
            parts.append("Future" if name == "FutureIter" else name)
            break
        code = frame.f_code
        parts.append(f"{code.co_qualname} ({Path(code.co_filename).name}:{frame.f_lineno})")
        awaited = (
            getattr(awaited, "cr_await", None)
            or getattr(awaited, "ag_await", None)
            or getattr(awaited, "gi_yieldfrom", None)
        )
    return f"{task.get_name()}: " + " -> ".join(parts)


def _report(began: float, loop: asyncio.AbstractEventLoop) -> None:
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    logger.warning(
        "the shutdown has taken %.1f s; its %d tasks wait at:\n  %s",
        loop.time() - began,
        len(tasks),
        "\n  ".join(await_chain(task) for task in tasks) or "(none)",
    )


def watch_shutdown(bound: float) -> asyncio.TimerHandle:
    """Report the loop's tasks if the process is still running :data:`REPORT_AFTER` seconds
    after the drain's ``bound`` from now (see the module docstring); the timer, which nothing
    needs to cancel: a process that exits never runs it."""
    loop = asyncio.get_running_loop()
    return loop.call_later(bound + REPORT_AFTER, _report, loop.time(), loop)
