"""``wenxin serve --workers N``: N worker processes on one machine sharing one listening socket.

Theory of operation
===================

One core runs one event loop; a machine with more cores runs more processes. The parent
process binds the socket (:func:`~wenxin_stream.emulator._server.bind_socket`), then becomes a
**supervisor**: it starts N workers with the ``spawn`` method (a fresh interpreter each, never a
``fork`` of a process that may hold threads or an event loop) and hands each the listening
socket; every worker accepts from it (the kernel gives each connection to one waiting worker)
and runs :func:`~wenxin_stream.server.run_server` unchanged. Everything several workers must
agree on lives outside them — per-key limits, leases, the resume log, cancel (Redis, which is
why ``workers > 1`` needs ``redis_url``) and the store (SQLite in WAL mode on one machine, or
PostgreSQL) — so a request may land on any worker.

**Metrics.** Each worker writes its values into files of its own in one directory
(``metrics_dir``, prometheus_client's multiprocess mode, :mod:`._metrics_files`); any worker
answers ``/metrics`` for the whole machine. The supervisor empties the directory before the
first worker starts (a temporary one unless configured) and, when a worker exits, calls
:func:`~._metrics_files.mark_process_dead` (its live gauges leave the sums; its counters stay
in the totals).

**Lifecycle.** A worker reports ready through a pipe when its start-up is complete (the
supervisor prints one line per worker). A worker that exits on its own is started again
after a pause that doubles (up to :data:`MAX_BACKOFF`) while it keeps dying young; if a slot
dies young :data:`QUICK_FAILURES` times in a row (a start-up error: the database, the port,
the configuration), the supervisor stops them all and exits 1 — a crash loop is reported, not
hidden. SIGTERM or SIGINT: the supervisor stops starting workers and sends SIGTERM to each
(each drains as one process does: ``shutdown_grace`` for running answers, then
``server_shutdown``); a worker still alive ``shutdown_grace`` + ``DRAIN_IDLE`` (an answer taken
in the drain's window for requests already on their way gets the whole grace) +
:data:`STOP_MARGIN` seconds later is killed. SIGHUP: a rolling restart — for each slot in turn
a new worker is started and, once it is ready, the old one gets SIGTERM — so new code or a
refreshed upstream client comes in without a moment with no worker accepting.

The supervision itself (:class:`Supervisor`) knows nothing of HTTP: it starts and watches
whatever its ``spawn`` function returns, which keeps it testable with tiny processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import Protocol, cast

from ._config import ServerConfig
from ._metrics_files import mark_process_dead

__all__ = [
    "MAX_BACKOFF",
    "QUICK_FAILURES",
    "STOP_MARGIN",
    "Supervisor",
    "Worker",
    "run_workers",
]

logger = logging.getLogger("wenxin_stream.server")

QUICK_FAILURES = 3
"""A slot whose worker dies within :data:`YOUNG` seconds this many times in a row ends the
supervisor (exit 1)."""

YOUNG = 5.0
"""Seconds after its start within which a worker's death counts as a failure to start."""

MAX_BACKOFF = 10.0
"""The longest pause before a dead worker is started again."""

STOP_MARGIN = 5.0
"""Seconds beyond its drain (``shutdown_grace`` + ``_http_limits.DRAIN_IDLE``) a worker may
take to exit before it is killed."""


class Worker(Protocol):
    """What the supervisor needs of a started process (:class:`multiprocessing.Process`)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...


@dataclass
class _Slot:
    index: int
    worker: Worker
    ready: Connection
    started: float
    failures: int = 0
    is_ready: bool = False


class Supervisor:
    """Keeps ``count`` workers running (see the module docstring).

    ``spawn(index, ready)`` starts the worker of slot ``index`` and returns it; the worker
    sends one message on ``ready`` (the write end of a pipe) when it serves. ``on_exit(pid)``
    runs after any worker has exited. :meth:`run` blocks until the workers are stopped, and
    returns the exit status: 0, or 1 after a crash loop.
    """

    def __init__(
        self,
        count: int,
        spawn: Callable[[int, Connection], Worker],
        *,
        stop_timeout: float,
        on_exit: Callable[[int], None] = lambda pid: None,
        announce: Callable[[str], object] = lambda line: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        self._spawn = spawn
        self._stop_timeout = stop_timeout
        self._on_exit = on_exit
        self._announce = announce
        self._clock = clock
        self._slots: list[_Slot] = []
        self._retiring: list[_Slot] = []  # replaced by a rolling restart, draining
        self._pending: dict[int, tuple[float, int]] = {}  # slot -> (when to start, failures)
        self._rolling: list[int] = []  # slots still to replace in a rolling restart
        self._stopping = threading.Event()
        self._reload = threading.Event()
        self.status = 0
        self.restarts = 0

    # -- requests from signal handlers or other threads ----------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to stop every worker and return."""
        self._stopping.set()

    def reload(self) -> None:
        """Ask :meth:`run` for a rolling restart of every worker."""
        self._reload.set()

    @property
    def pids(self) -> list[int]:
        """The pids of the current workers (not of those retiring)."""
        return [slot.worker.pid for slot in self._slots if slot.worker.pid is not None]

    @property
    def ready_count(self) -> int:
        return sum(slot.is_ready for slot in self._slots)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, poll: float = 0.5) -> int:
        """Start the workers, watch them until :meth:`stop` (or a crash loop), stop them."""
        try:
            for index in range(self.count):
                self._slots.append(self._start(index, failures=0))
            while not self._stopping.is_set():
                self._step(poll)
        finally:
            self._stop_all()
        return self.status

    def _start(self, index: int, *, failures: int) -> _Slot:
        receive, send = multiprocessing.Pipe(duplex=False)
        try:
            worker = self._spawn(index, send)
        finally:
            send.close()  # the child holds its own copy; EOF on ours means it is gone
        return _Slot(index, worker, receive, self._clock(), failures)

    def _step(self, poll: float) -> None:
        if self._reload.is_set():
            self._reload.clear()
            if self._rolling:  # one rolling restart at a time; this one covers the request
                logger.warning("a rolling restart is under way: SIGHUP ignored")
            else:
                self._rolling = list(dict.fromkeys(slot.index for slot in self._slots))
                self._replace_next()
        handles: dict[object, tuple[str, _Slot]] = {}
        for slot in self._slots:
            handles[slot.worker.sentinel] = ("exit", slot)
            if not slot.is_ready:
                handles[slot.ready] = ("ready", slot)
        for slot in self._retiring:
            handles[slot.worker.sentinel] = ("retired", slot)
        timeout = poll
        if self._pending:
            first = min(when for when, _ in self._pending.values())
            timeout = max(0.0, min(poll, first - self._clock()))
        for handle in wait(cast("list[Connection | int]", list(handles)), timeout):
            what, slot = handles[handle]
            if what == "ready":
                self._on_ready(slot)
            elif what == "retired":
                self._retiring.remove(slot)
                self._reap(slot)
            elif slot in self._slots and not slot.worker.is_alive():
                self._on_death(slot)
        now = self._clock()
        for index, (when, failures) in list(self._pending.items()):
            if when <= now and not self._stopping.is_set():
                del self._pending[index]
                self._slots.append(self._start(index, failures=failures))
                self.restarts += 1

    def _on_ready(self, slot: _Slot) -> None:
        try:
            line = slot.ready.recv()
        except (EOFError, OSError):
            return  # died before it was ready: its sentinel reports it
        slot.is_ready = True
        slot.failures = 0
        self._announce(f"worker {slot.index} (pid {slot.worker.pid}) ready: {line}")
        if self._rolling and self._rolling[0] == slot.index:
            # the replacement of the first slot in line serves: retire its predecessor
            self._rolling.pop(0)
            old = [s for s in self._slots if s.index == slot.index and s is not slot]
            for previous in old:
                self._slots.remove(previous)
                self._retiring.append(previous)
                with contextlib.suppress(OSError):
                    previous.worker.terminate()
            self._replace_next()

    def _replace_next(self) -> None:
        if self._rolling and not self._stopping.is_set():
            index = self._rolling[0]
            self._slots.append(self._start(index, failures=0))

    def _on_death(self, slot: _Slot) -> None:
        self._slots.remove(slot)
        self._reap(slot)
        if self._stopping.is_set():
            return
        failures = slot.failures + 1 if self._clock() - slot.started < YOUNG else 0
        logger.warning(
            "worker %d (pid %s) exited with %s%s",
            slot.index,
            slot.worker.pid,
            _describe_exit(slot.worker.exitcode),
            "" if slot.is_ready else " before it was ready",
        )
        if self._rolling and self._rolling[0] == slot.index and not slot.is_ready:
            # a replacement died before serving: its predecessor keeps serving; go on
            self._rolling.pop(0)
            self._replace_next()
        if any(other.index == slot.index for other in self._slots):
            return  # the slot is still served (the other worker of a rolling restart)
        if failures >= QUICK_FAILURES:
            logger.error(
                "worker %d died %d times within %.0f s of its start: stopping",
                slot.index,
                failures,
                YOUNG,
            )
            self.status = 1
            self._stopping.set()
            return
        pause = min(MAX_BACKOFF, 0.5 * 2 ** (failures - 1)) if failures else 0.0
        self._pending[slot.index] = (self._clock() + pause, failures)

    def _reap(self, slot: _Slot) -> None:
        slot.worker.join(timeout=1)
        slot.ready.close()
        if slot.worker.pid is not None:
            self._on_exit(slot.worker.pid)

    def _stop_all(self) -> None:
        self._stopping.set()
        everyone = self._slots + self._retiring
        for slot in everyone:
            if slot.worker.is_alive():
                with contextlib.suppress(OSError):
                    slot.worker.terminate()
        deadline = self._clock() + self._stop_timeout
        for slot in everyone:
            slot.worker.join(timeout=max(0.0, deadline - self._clock()))
            if slot.worker.is_alive():
                logger.warning(
                    "worker %d (pid %s) did not stop within %.0f s: killed",
                    slot.index,
                    slot.worker.pid,
                    self._stop_timeout,
                )
                slot.worker.kill()
                slot.worker.join(timeout=5)
            self._reap(slot)
        self._slots.clear()
        self._retiring.clear()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


# -- wenxin serve --workers ------------------------------------------------------------------


def _worker_main(config: ServerConfig, sock: socket.socket, ready: Connection) -> None:
    """A worker process: serve on the inherited socket, say when ready, exit with the status."""
    from . import run_server

    def announce(line: str) -> None:
        with contextlib.suppress(OSError):
            ready.send(line)
            ready.close()

    try:
        status = run_server(config, sock=sock, announce=announce)
    except Exception as exc:  # a start-up error: reported by the parent as a quick death
        print(f"wenxin serve worker: {exc}", file=sys.stderr, flush=True)
        status = 1
    sys.exit(status)


def worker_config(config: ServerConfig, index: int, metrics_dir: Path) -> ServerConfig:
    """The configuration of worker ``index``: the shared metrics directory, and a fleet name of
    its own when an instance id is configured."""
    instance = f"{config.instance_id}/w{index}" if config.instance_id else None
    return dataclasses.replace(config, metrics_dir=metrics_dir, instance_id=instance)


def run_workers(
    config: ServerConfig,
    sock: socket.socket,
    *,
    announce: Callable[[str], object] | None = None,
) -> int:
    """Serve with ``config.workers`` processes until SIGINT/SIGTERM; the exit status."""
    say = announce or (lambda line: print(line, file=sys.stderr, flush=True))
    own_dir = config.metrics_dir is None
    metrics_dir = (
        Path(tempfile.mkdtemp(prefix="wenxin-metrics-"))
        if config.metrics_dir is None
        else config.metrics_dir
    )
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):  # another run's files would join the sums
        stale.unlink()
    context = multiprocessing.get_context("spawn")

    def spawn(index: int, ready: Connection) -> Worker:
        process = context.Process(
            target=_worker_main,
            args=(worker_config(config, index, metrics_dir), sock, ready),
            name=f"wenxin-serve-worker-{index}",
        )
        process.start()
        return process

    from .._http_limits import DRAIN_IDLE

    supervisor = Supervisor(
        config.workers,
        spawn,
        stop_timeout=config.shutdown_grace + DRAIN_IDLE + STOP_MARGIN,
        on_exit=lambda pid: mark_process_dead(pid, metrics_dir),
        announce=say,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            supervisor.reload()
        else:
            supervisor.stop()

    previous = {
        signum: signal.signal(signum, on_signal)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    say(f"wenxin serve: {config.workers} workers (supervisor pid {os.getpid()})")
    try:
        return supervisor.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sock.close()
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
