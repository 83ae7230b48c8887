"""The machine and processes around a run: /proc sampling, file-descriptor limits, machine info.

Theory of operation
===================

:class:`ProcSampler` reads ``/proc/<pid>/stat`` (user + system CPU ticks of all the process's
threads) and ``/proc/<pid>/statm`` (resident pages) each time :meth:`ProcSampler.sample` is
called — the runner calls it every 0.5 s — and turns consecutive readings into CPU % of one
core (Δticks / ``SC_CLK_TCK`` / Δwall × 100). :meth:`ProcSampler.stats` summarises the samples
taken inside a time window. A process that exits is noted, not fatal.

:func:`raise_fd_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard limit (one socket per open
stream); :func:`concurrency_cap` is how many streams fit under it and in the ephemeral port
range with a margin. :func:`read_cpu_wait_ns` reads how long this process waited for a CPU
(run-queue delay from ``/proc/self/schedstat``): on a shared machine a load generator starved of
CPU looks exactly like a slow target, so the report says so. :func:`machine_info` describes the
host for ``result.json``.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from dataclasses import dataclass, field
from typing import Any

from ._stats import ProcessStats

__all__ = [
    "ProcSampler",
    "concurrency_cap",
    "machine_info",
    "raise_fd_limit",
    "read_cpu_wait_ns",
]

FD_RESERVE = 64
"""File descriptors kept free for everything that is not a stream socket."""

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def read_cpu_ticks(pid: int) -> int:
    """User + system CPU ticks of ``pid`` (all threads) from ``/proc/<pid>/stat``.

    Raises:
        OSError: no such process (or no /proc).
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def read_rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes from ``/proc/<pid>/statm``.

    Raises:
        OSError: no such process (or no /proc).
    """
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


@dataclass(slots=True)
class ProcSampler:
    """Samples one process's CPU and RSS; see the module docstring."""

    pid: int
    label: str
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # t, cpu %, rss MiB
    note: str = ""
    _last: tuple[float, int] | None = None

    def sample(self, now: float) -> None:
        """Take one reading at wall time ``now`` (monotonic seconds)."""
        if self.note:
            return
        try:
            ticks = read_cpu_ticks(self.pid)
            rss = read_rss_bytes(self.pid) / 2**20
        except (OSError, ValueError, IndexError):
            self.note = "process not found" if self._last is None else "process exited"
            return
        last = self._last
        self._last = (now, ticks)
        if last is not None and now > last[0]:
            cpu = (ticks - last[1]) / _TICK / (now - last[0]) * 100.0
            self.samples.append((now, cpu, rss))

    def stats(self, start: float, end: float) -> ProcessStats:
        """CPU and RSS over the samples taken in ``[start, end]``."""
        inside = [s for s in self.samples if start <= s[0] <= end] or self.samples
        if not inside:
            return ProcessStats(self.label, self.pid, 0, None, None, None, None, self.note)
        cpu = [s[1] for s in inside]
        rss = [s[2] for s in inside]
        return ProcessStats(
            label=self.label,
            pid=self.pid,
            samples=len(inside),
            cpu_mean=round(sum(cpu) / len(cpu), 1),
            cpu_max=round(max(cpu), 1),
            rss_mean_mb=round(sum(rss) / len(rss), 1),
            rss_max_mb=round(max(rss), 1),
            note=self.note,
        )


def read_cpu_wait_ns() -> int | None:
    """Nanoseconds this process's (main) thread has spent runnable but waiting for a CPU
    (``/proc/self/schedstat``, second field), or ``None`` where unavailable."""
    try:
        with open("/proc/self/schedstat", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):  # pragma: no cover - no schedstat
        return None


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard limit; return ``(soft, hard)`` after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # pragma: no cover - refused by the system
        return soft, hard
    return hard, hard


def open_fd_count() -> int:
    """How many file descriptors this process has open."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - no /proc
        return 16


def ephemeral_ports() -> int | None:
    """The size of the local (ephemeral) port range, when known."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):  # pragma: no cover - no /proc
        return None
    return high - low + 1


def concurrency_cap() -> tuple[int, str]:
    """The most streams this process can hold open, and what limits it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd_cap = max(1, soft - open_fd_count() - FD_RESERVE)
    ports = ephemeral_ports()
    if ports is not None and ports - FD_RESERVE < fd_cap:
        return max(1, ports - FD_RESERVE), f"ephemeral port range ({ports} ports)"
    return fd_cap, f"open-file limit ({soft})"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - no /proc
        pass
    return platform.processor() or "unknown"


def machine_info(event_loop: str) -> dict[str, Any]:
    """CPU model, cores, Python, OS and limits, for ``result.json``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "event_loop": event_loop,
        "fd_limit": [soft, hard],
        "ephemeral_ports": ephemeral_ports(),
    }
