"""What the cost benchmarks run against, started one way: the fast emulator and ``wenxin
serve`` of a tree as processes (``chunk_cost.py``, ``start_cost.py``, ``profile_serve.py``), and
in-process stand-ins for the upstream stream (``_chunk_relay_micro.py``, ``checkpoint_cost.py``,
``redis_eventlog_cost.py``); with the readings they take of a process (CPU seconds, per
thread) and of a server (streams ended).

- :func:`start_emulator`: ``wenxin emulate --ttft 0 --interval 0 --v2-interval 0`` with its
  cyclic collector off, pinned to the load core (CPU 1);
- :func:`start_serve`: ``wenxin serve`` of this tree (``src`` ``None``) or of another tree's
  ``src/`` (the same ``.venv`` Python with ``PYTHONPATH`` at it; checked to really import from
  there), pinned to CPU 0, with its own SQLite data directory and a key whose limits never
  bite, its upstream the emulator (v2), client connection limits off;
- :class:`Processes` owns what was started and stops it (the last started first).

Imported by the scripts in this folder as ``_servers`` (a script's folder is on its
``sys.path``). Only the stand-ins import ``wenxin_stream``, lazily, so that it runs
with the tree the caller's ``PYTHONPATH`` names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv" / "bin"
WENXIN = VENV / "wenxin"
CLI = "import sys; from wenxin_stream.cli import main; sys.exit(main())"
"""``python -c`` code that runs the CLI of whatever ``wenxin_stream`` ``PYTHONPATH`` names."""
LISTENING = r"on http://127\.0\.0\.1:(\d+)"
"""The port in the start-up line of ``wenxin serve`` and ``wenxin emulate``."""


def pin(cpu: int | None, *, enabled: bool = True) -> list[str]:
    """``taskset -c cpu`` (nothing without taskset, on one core, for ``None`` or when not
    ``enabled``)."""
    if cpu is None or not enabled or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


def _ticks(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_seconds(pid: int) -> float:
    """CPU seconds ``pid`` has used (user + system)."""
    return _ticks(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split())


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s main thread (``loop``: the event loop) and of its other
    threads (``threads``)."""
    out = {"loop": 0.0, "threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            out["loop" if task.name == str(pid) else "threads"] += _ticks(fields)
    return out


def context_switches(pid: int) -> dict[str, int]:
    """Context switches so far (voluntary and not) of ``pid``'s main thread (``loop``) and of
    its other threads (``threads``): on one pinned core every hand-over to a thread costs
    two."""
    out = {"loop": 0, "threads": 0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" not in line:
                    continue
                out["loop" if task.name == str(pid) else "threads"] += int(line.split()[-1])
    return out


def wait_for_line(
    path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 60.0
) -> str:
    """The first group of ``pattern`` once it appears in the log ``path`` (exits if ``proc``
    exits first or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited: {path.read_text()[-2000:]}")
        match = re.search(pattern, path.read_text() if path.exists() else "")
        if match:
            return match.group(1)
        time.sleep(0.05)
    raise SystemExit(f"no {pattern!r} in {path}")


def ended_streams(url: str, timeout: float = 10.0) -> float:
    """Streams the server at ``url`` has ended, whatever the reason (its ``/metrics``)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=timeout) as response:  # noqa: S310
        text = response.read().decode()
    ends = re.findall(r"^wenxin_stream_ends_total\{[^}]*\}\s+([0-9.e+]+)", text, re.M)
    return sum(float(v) for v in ends)


def sample_value(text: str, sample: str) -> float | None:
    """The value of the sample written exactly ``sample`` (name and labels) in a
    ``/metrics`` text, or None when it is not there."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def add_server_env(parser: argparse.ArgumentParser) -> None:
    """``--server-env NAME=VALUE`` (repeatable): set in the measured server's environment
    alone, not the emulator's or the load generator's (read with :func:`env_assignments`)."""
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the server's environment alone (PYTHONMALLOC=malloc, LD_PRELOAD=…)",
    )


def env_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` arguments (``--server-env``) as a dict; exits on one without ``=``."""
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise SystemExit(f"--server-env wants NAME=VALUE, not {bad[0]!r}")
    return dict(p.split("=", 1) for p in pairs)


class Processes:
    """The processes a benchmark started, each logging to a file in ``logs``; :meth:`stop`
    terminates them, the last started first (a server before its upstream and stores)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], name: str, env: dict[str, str] | None = None) -> Path:
        """Start ``argv`` (the environment plus ``env``); its log ``<logs>/<name>.log``."""
        log = self.logs / f"{name}.log"
        self.procs.append(
            subprocess.Popen(  # noqa: S603
                list(argv),
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
        )
        return log

    def stop(self) -> None:
        """Terminate every process, then wait for each (killed after 10 s)."""
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_emulator(
    procs: Processes,
    *,
    cpu: int | None = 1,
    enabled: bool = True,
    env: dict[str, str] | None = None,
) -> str:
    """The fast emulator (no pacing but what a request's directives ask, cyclic collector
    off) on ``cpu`` (``env``: added to its environment); its URL."""
    code = "import gc, sys; gc.disable(); from wenxin_stream.cli import main; sys.exit(main())"
    argv = [*pin(cpu, enabled=enabled), str(VENV / "python"), "-c", code, "emulate",
            "--port", "0", "--ttft", "0", "--interval", "0", "--v2-interval", "0"]  # fmt: skip
    log = procs.start(argv, "emulator", env)
    return f"http://127.0.0.1:{wait_for_line(log, 'listening ' + LISTENING, procs.procs[-1])}"


@dataclass(frozen=True)
class Served:
    """A running ``wenxin serve``: its process, URL and the bench key."""

    proc: subprocess.Popen[bytes]
    url: str
    key: str

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid


FLOOR_MODES = {"floor": "bytes", "floor-parse": "parse", "floor-sdk": "sdk"}
"""``bench/floor_relay.py``'s mode behind each floor target's name (compare's, the scripts'
``--route``)."""


def start_floor(
    procs: Processes,
    tag: str,
    upstream: str,
    *,
    mode: str = "bytes",
    pinned: bool = True,
) -> tuple[subprocess.Popen[bytes], str]:
    """``bench/floor_relay.py`` in ``mode`` (``bytes``, or ``parse`` / ``sdk``: its flag of that
    name) over ``upstream`` on CPU 0, its log ``<logs>/<tag>.log``: its process and URL."""
    relay = Path(__file__).resolve().parent / "floor_relay.py"
    argv = [*pin(0, enabled=pinned), str(VENV / "python"), str(relay), "--upstream", upstream]
    if mode != "bytes":
        argv.append(f"--{mode}")
    log = procs.start(argv, tag)
    proc = procs.procs[-1]
    port = wait_for_line(log, r" on http://127\.0\.0\.1:(\d+)", proc)
    return proc, f"http://127.0.0.1:{port}"


def start_serve(
    procs: Processes,
    tag: str,
    upstream: str,
    *,
    src: Path | str | None = None,
    upstream_key: str,
    key_name: str = "bench",
    data: Path | None = None,
    args: Sequence[str] = (),
    key_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cpu: int | None = 0,
    pinned: bool = True,
) -> Served:
    """``wenxin serve`` (of ``src``, else this tree) over the v2 upstream at ``upstream`` on
    ``cpu``, its data in ``data`` (default ``<logs>/<tag>-data``, made afresh), its log
    ``<logs>/<tag>.log``; ``args`` go to ``serve``, ``key_args`` to ``keys create``, ``env``
    to both."""
    env = dict(env or {})
    wenxin = [str(WENXIN)]
    if src is not None:
        env["PYTHONPATH"] = str(Path(src).resolve())
        wenxin = [str(VENV / "python"), "-c", CLI]
        probe = subprocess.run(  # noqa: S603 — our own interpreter
            [str(VENV / "python"), "-c", "import wenxin_stream; print(wenxin_stream.__file__)"],
            capture_output=True, text=True, check=True, env={**os.environ, **env},
        )  # fmt: skip
        if not probe.stdout.strip().startswith(str(Path(src).resolve())):
            raise SystemExit(f"{tag} imports {probe.stdout.strip()}, not {src}")
    data = data if data is not None else procs.logs / f"{tag}-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    made = subprocess.run(  # noqa: S603
        [*wenxin, "keys", "create", "--data-dir", str(data), "--name", key_name,
         "--rpm", "10000000", "--tpm", "2000000000", "--max-streams", "100000", *key_args],
        capture_output=True, text=True, check=True, env={**os.environ, **env},
    )  # fmt: skip
    key = made.stdout.strip().splitlines()[-1]
    config = data / "serve.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndata-dir = "{data}"\n'
        f'upstream-api = "v2"\nupstream-v2-base-url = "{upstream}"\n'
        "upstream-max-connections = 10000\ndefault-rpm = 10000000\n"
        "default-tpm = 10000000000\ndefault-max-streams = 100000\n"
    )
    log = procs.start(
        [*pin(cpu, enabled=pinned), *wenxin, "serve", "--config", str(config), *args],
        tag,
        {**env, "WENXIN_UPSTREAM_BEARER_TOKEN": upstream_key,
         "WENXIN_MAX_CONNECTIONS": "0", "WENXIN_MAX_CONNECTIONS_PER_IP": "0"},
    )  # fmt: skip
    proc = procs.procs[-1]
    return Served(proc, f"http://127.0.0.1:{wait_for_line(log, LISTENING, proc)}", key)


class _StandIn:
    """What the relay uses of the SDK's ``AsyncChatStream``: an async context manager whose
    iteration yields events (:meth:`_events`), and ``end_reason`` / ``attempt_usages``."""

    def __init__(self) -> None:
        self.end_reason: Any = None
        self.attempt_usages: tuple[Any, ...] = ()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    def _events(self) -> AsyncIterator[Any]:
        raise NotImplementedError


class QueuedUpstream(_StandIn):
    """Stands in for the SDK's ``AsyncChatStream`` in process: one text delta for each text
    put into :attr:`queue`, until ``None`` (then ``end_reason`` is ``COMPLETED``)."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def _events(self) -> AsyncIterator[Any]:
        from wenxin_stream import EndReason, TextDelta

        while (text := await self.queue.get()) is not None:
            yield TextDelta(text)
        self.end_reason = EndReason.COMPLETED


class PacedUpstream(_StandIn):
    """Stands in for the SDK's ``AsyncChatStream`` in process: ``chunks`` text deltas of
    ``text``, one every ``pace`` seconds (0: one per loop step); ``end_reason`` stays
    ``None``."""

    def __init__(self, chunks: int, text: str, pace: float = 0.0) -> None:
        super().__init__()
        self.chunks, self.text, self.pace = chunks, text, pace

    async def _events(self) -> AsyncIterator[Any]:
        from wenxin_stream import TextDelta

        for _ in range(self.chunks):
            yield TextDelta(self.text)
            await asyncio.sleep(self.pace)
