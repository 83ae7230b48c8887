"""The supervisor of ``wenxin serve --workers``: starting, restarting, stopping, crash loops and
rolling restarts, with tiny processes standing in for servers (``workers_targets``)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import workers_targets

from wenxin_stream.server._workers import QUICK_FAILURES, Supervisor, Worker

_spawn = multiprocessing.get_context("spawn")


class Journal:
    """What the supervisor reported, in order (thread-safe)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def ready(self, line: str) -> None:
        pid = int(line.split("(pid ")[1].split(")")[0])
        with self._lock:
            self.lines.append(("ready", pid))

    def exited(self, pid: int) -> None:
        with self._lock:
            self.lines.append(("exit", pid))

    def pids(self, kind: str) -> list[int]:
        with self._lock:
            return [pid for what, pid in self.lines if what == kind]

    def position(self, kind: str, pid: int) -> int:
        with self._lock:
            return self.lines.index((kind, pid))


def spawner(target: Callable[..., None], *args: Any) -> Callable[[int, Connection], Worker]:
    def spawn(index: int, ready: Connection) -> Worker:
        process = _spawn.Process(target=target, args=(ready, *args), daemon=True)
        process.start()
        return process

    return spawn


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


@contextmanager
def supervising(
    spawn: Callable[[int, Connection], Worker], count: int = 2, stop_timeout: float = 5.0
) -> Iterator[tuple[Supervisor, Journal, list[int]]]:
    journal = Journal()
    supervisor = Supervisor(
        count, spawn, stop_timeout=stop_timeout, on_exit=journal.exited, announce=journal.ready
    )
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(supervisor.run(poll=0.05)))
    thread.start()
    try:
        yield supervisor, journal, status
    finally:
        supervisor.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_starts_every_worker_and_stops_them_all() -> None:
    with supervising(spawner(workers_targets.serve), count=3) as (supervisor, journal, status):
        wait_until(lambda: supervisor.ready_count == 3)
        pids = supervisor.pids
        assert len(set(pids)) == 3
        assert all(alive(pid) for pid in pids)
    assert status == [0]
    assert sorted(journal.pids("exit")) == sorted(pids)
    assert not any(alive(pid) for pid in pids)


def test_a_killed_worker_is_started_again() -> None:
    with supervising(spawner(workers_targets.serve)) as (supervisor, journal, status):
        wait_until(lambda: supervisor.ready_count == 2)
        victim = supervisor.pids[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: supervisor.ready_count == 2 and victim not in supervisor.pids)
        assert supervisor.restarts == 1
        assert victim in journal.pids("exit")  # its metrics files were released
        assert len(journal.pids("ready")) == 3
    assert status == [0]


def test_a_crash_loop_stops_the_supervisor_with_status_1() -> None:
    journal = Journal()
    supervisor = Supervisor(
        2, spawner(workers_targets.fail), stop_timeout=5, on_exit=journal.exited
    )
    started = time.monotonic()
    assert supervisor.run(poll=0.05) == 1
    assert time.monotonic() - started < 20
    # every start of the failing slot was reaped; none of them was ever ready
    assert len(journal.pids("exit")) >= QUICK_FAILURES
    assert journal.pids("ready") == []


def test_a_worker_stuck_in_its_drain_is_killed_after_the_stop_timeout() -> None:
    with supervising(spawner(workers_targets.stubborn), count=1, stop_timeout=0.5) as (
        supervisor,
        _,
        status,
    ):
        wait_until(lambda: supervisor.ready_count == 1)
        pid = supervisor.pids[0]
        began = time.monotonic()
    assert 0.4 < time.monotonic() - began < 10
    assert not alive(pid)
    assert status == [0]


def test_a_rolling_restart_retires_each_worker_only_after_its_replacement_serves() -> None:
    with supervising(spawner(workers_targets.serve), count=2) as (supervisor, journal, status):
        wait_until(lambda: supervisor.ready_count == 2)
        old = list(supervisor.pids)
        supervisor.reload()
        wait_until(lambda: not set(old) & set(supervisor.pids) and supervisor.ready_count == 2)
        wait_until(lambda: set(old) <= set(journal.pids("exit")))
        new = [pid for pid in journal.pids("ready") if pid not in old]
        assert len(new) == 2
        for before, after in zip(old, new, strict=True):
            # the old worker of a slot exits after its replacement said it is ready
            assert journal.position("ready", after) < journal.position("exit", before)
        assert supervisor.restarts == 0  # nothing died on its own
    assert status == [0]


def test_a_rolling_restart_with_a_broken_build_keeps_the_old_workers(tmp_path: Path) -> None:
    marker = tmp_path / "broken"
    spawn = spawner(workers_targets.fail_if_marked, str(marker))
    with supervising(spawn, count=2) as (supervisor, journal, status):
        wait_until(lambda: supervisor.ready_count == 2)
        old = list(supervisor.pids)
        marker.touch()
        supervisor.reload()
        # both replacements die before serving; the old workers go on serving
        wait_until(lambda: len(journal.pids("exit")) >= 2)
        time.sleep(0.3)
        assert sorted(supervisor.pids) == sorted(old)
        assert all(alive(pid) for pid in old)
    assert status == [0]


def test_count_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Supervisor(0, spawner(workers_targets.serve), stop_timeout=1)
