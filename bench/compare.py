"""Compare `wenxin serve` with nginx, LiteLLM and the bare emulator, in one run, on one machine.

Theory of operation
===================

``bench/compare`` (a thin wrapper around this file, run with the project's ``.venv`` Python)
does everything a fresh machine needs and leaves one report, ``bench/RESULTS.md``::

    install     bench/install_relays.sh (nginx from apt, LiteLLM in bench/.venv-litellm),
                scripts/install when .venv / .venv-peers are missing; versions of everything
    start       the ERNIE emulator            taskset -c 1   (pacing comes from directives)
                nginx, proxy_pass, no buffer  taskset -c 0   one worker
                LiteLLM proxy                 taskset -c 0   one worker, master key
                wenxin serve                  taskset -c 0   API key, limits, metrics, audit
                each one polled until ready, then smoke-tested with one paced stream
    ttft        first, on the freshly started relays: one stream at a time, TTFT 0, rounds
                of sequential requests per target, interleaved so drifting background load
                hits every target alike, each round after a few unmeasured requests; the TTFT
                a relay adds is its percentile minus the direct percentile
    suites      fast (TTFT 200 ms, 64 chunks every 20 ms) and ERNIE-paced (TTFT 500 ms,
                12 chunks every 400 ms): per target, `wenxin bench --find-max`'s search and
                criteria, one `wenxin bench --concurrency N` per step (pinned to CPU 1,
                sampling the relay's and the emulator's CPU and RSS with --pid) so that a
                failed step can be run again before it counts
    memory      a fresh `wenxin serve`: idle RSS, RSS with N streams open (two N: the slope is
                the marginal cost of one stream), then 5 identical runs with the RSS after each
    sdk         bench/sdk_throughput.py for our AsyncClient and Client (.venv) and openai
                (httpx and aiohttp transports) and qianfan's async path (.venv-peers), each
                pinned to CPU 0 against the same emulator
    report      bench/results/<run>/ (summary.json, plots/, raw/, logs/) and bench/RESULTS.md

Every process compare starts is stopped when it ends, on success, failure or Ctrl-C (one
``ExitStack``; SIGTERM is turned into an exception so the same path runs). Readiness is
polled, never slept for. Lateness is measured against the pacing schedule (``stamp=0``) for
every target alike: nginx passes the emulator's ``wenxin_emitted_at`` stamps through, LiteLLM
and `wenxin serve` rebuild the chunks without them, and mixing the two methods would not
compare like with like. Before each run against `wenxin serve`, compare waits until no stream
is in flight and the server's resume grace has passed (see :meth:`Compare.settle`). The
emulator runs with Python's cyclic garbage collector off (``--emulator-gc on`` to keep it):
it is the test equipment, and its full collections (~100 ms at a thousand streams, freeing
nothing) would otherwise cap every target at about a thousand ERNIE-paced streams.

``--quick`` (about 6 minutes) trades precision for time: short steps, a coarse bisection,
LiteLLM's search capped at 32 (it tops out at a few dozen streams), fewer memory and SDK
streams; its results stay in the git-ignored ``bench/results/quick-*`` (``--publish`` to
write ``bench/RESULTS.md`` anyway).

Before and after in one run: ``--baseline REF``
------------------------------------------------

``bench/compare --quick --baseline main~1 --targets direct,nginx,serve`` measures the
checked-out code against the code of any git ref, on the same machine, in the same run::

    materialise  git archive REF src | tar -x into logs/baseline/ (removed at exit; not
                 `git worktree add`, which would write to the repository's shared worktree list)
    start        a second `wenxin serve` as target serve-base (serve-base-native with --native):
                 the same .venv Python with PYTHONPATH=logs/baseline/src, the same
                 configuration, API key set-up (its own `keys create`), pinning and settling;
                 the run stops unless the probe, the key command and the server's own log all
                 import wenxin_stream from the baseline's tree
    ttft         serve-base in every round, the twins swapping places every other round
    suites       serve-base's own search, right after serve's; then, per suite, interleaved
                 rounds of both at one load (half the smaller maximum): current, baseline /
                 baseline, current / … (--baseline-rounds, 3 quick, 5 full)
    memory       the current tree only
    sdk          our two clients from the baseline's tree too, each right after the current one
    report       "Change against the baseline" in RESULTS.md and on the console: relay CPU
                 per 1,000 chunks (same load, medians, ratio, noise), max streams (ratio),
                 TTFT added p50/p99 (both), and one verdict line

The two servers share the relay core and are never loaded together: before a run against
either, compare waits until the other has no stream in flight and its resume grace since its
last load has passed (:meth:`Compare.settle`). The noise estimate is the largest distance of
one same-load measurement from the median of its own code in this run (:func:`cpu_change`):
the same code, the same load and background, so whatever a ratio of medians exceeds it by is
not noise seen in this run. Max streams may differ by one search step (×(1 + resolution))
with no noise at all, so only a drop beyond that counts (:func:`max_change`); TTFT added is
shown, not judged. ``--baseline HEAD`` (the same code twice) is the sanity check: the ratios
must come out near 1 and the verdict must be "no regression within noise".

This file is longer than the house's ~600 lines per module: it is a script outside the
package, read top to bottom as one run's procedure (set-up, measurements, pure helpers,
report), and its parts are not used apart.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from wenxin_stream.bench import parse_pacing

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV = ROOT / ".venv" / "bin"
PEERS = ROOT / ".venv-peers" / "bin"
LITELLM_VENV = BENCH_DIR / ".venv-litellm" / "bin"
WENXIN = VENV / "wenxin"

MODEL = "ernie-4.0-8k"
EMULATE_ARGS = ["emulate", "--port", "0", "--ttft", "0", "--interval", "0", "--v2-interval", "0"]
"""No pacing of its own: every request paces itself with its directive."""
TTFT_PRIME = 5
"""Unmeasured requests sent to a target just before each of its TTFT rounds (see ttft())."""

SERVE_RESUME_GRACE = 5.0
"""`wenxin serve` keeps a finished stream resumable this long (its default ``resume-grace``)."""
UPSTREAM_KEY = "bce-v3/ALTAK-bench/compare"
"""The v2 key relays send to the emulator (dev mode accepts any well-formed key)."""

RELAY_CPU, LOAD_CPU = 0, 1
PEAK_TIMEOUT = 600.0
"""Seconds ``bench/memory.py``'s peak and return may take (it needs about four minutes)."""
FD_LIMIT = 20_000
"""No process here can hold more descriptors than this."""


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True)
class Suite:
    """One pacing and how to search it."""

    key: str
    title: str
    pacing: str
    start: dict[str, int]  # first find-max step per target

    @property
    def stream_s(self) -> float:
        """One stream's length at this pacing: its TTFT and one interval per chunk, the end
        event coming an interval after the last chunk (5.3 s ERNIE-paced; until 2026-12-06
        compare counted an interval less)."""
        seconds = parse_pacing(self.pacing).answer_seconds
        assert seconds is not None, f"{self.pacing}: TTFT, interval and chunks are all needed"
        return seconds


SUITES = {
    "fast": Suite(
        "fast",
        "fast: TTFT 200 ms, 64 chunks every 20 ms",
        "ttft=0.2;interval=0.02;chunks=64;stamp=0",
        {"direct": 250, "nginx": 250, "litellm": 4, "serve": 250, "serve-native": 100},
    ),
    "ernie": Suite(
        "ernie",
        "ERNIE-paced: TTFT 500 ms, 12 sentence chunks every 400 ms",
        "ttft=0.5;interval=0.4;chunks=12;stamp=0",
        {"direct": 500, "nginx": 500, "litellm": 2, "serve": 500, "serve-native": 250},
    ),
}

TARGETS = ("direct", "nginx", "floor", "floor-parse", "floor-sdk", "litellm", "serve", "serve-base",
           "serve-redis", "serve-workers2", "serve-native", "serve-base-native",
           "serve-redis-native", "serve-workers2-native")  # fmt: skip
"""Every target, in the order they are measured (each baseline right after its current twin)."""
REDIS_TARGETS = {"serve-redis": 1, "serve-workers2": 2}
"""The `wenxin serve` targets with the event log, limits and cancel in Redis: their workers.
Each gets a private ``redis-server`` of its own, so that Redis's INFO counts one target."""
REDIS_PAIRS = (("serve", "serve-redis"), ("serve-native", "serve-redis-native"))
"""Pairs measured at one load in interleaved rounds (the in-memory mode, then Redis): the
source of the CPU ratio, as ``--baseline``'s twins (:meth:`Compare.same_load_rounds`)."""
WORKER_LABEL = "wenxin serve worker"
"""The label of each worker of ``--workers N``: the relay's CPU is the sum over them."""
DEFAULT_TARGETS = ("direct", "nginx", "litellm", "serve")
TARGET_TITLES = {
    "direct": "direct to the emulator",
    "nginx": "nginx proxy_pass (buffering off)",
    "floor": "floor: bare Python relay (uvicorn + aiohttp, bytes passed through)",
    "floor-parse": "floor + parse (SSE decoded, JSON loaded and dumped)",
    "floor-sdk": "floor + SDK (AsyncClient's stream, its events dumped)",
    "litellm": "LiteLLM proxy",
    "serve": "wenxin serve (OpenAI route)",
    "serve-native": "wenxin serve (native API, stored conversations)",
    "serve-base": "wenxin serve, baseline (OpenAI route)",
    "serve-base-native": "wenxin serve, baseline (native API, stored conversations)",
    "serve-redis": "wenxin serve, Redis (OpenAI route)",
    "serve-workers2": "wenxin serve, 2 workers + Redis (OpenAI route)",
    "serve-redis-native": "wenxin serve, Redis (native API, stored conversations)",
    "serve-workers2-native": "wenxin serve, 2 workers + Redis (native API, stored conversations)",
}
BASELINE_TWINS = {"serve": "serve-base", "serve-native": "serve-base-native"}
"""``--baseline``: each `wenxin serve` target of the checked-out code and its baseline twin."""
CURRENT_TWIN = {base: current for current, base in BASELINE_TWINS.items()}
FLOOR_TARGETS: dict[str, tuple[str, ...]] = {
    "floor": (),
    "floor-parse": ("--parse",),
    "floor-sdk": ("--sdk",),
}
"""``bench/floor_relay.py`` as a target, and its mode's flags: the cheapest relay Python can be
on `wenxin serve`'s stack (issue 15's floor), with the least parse, and with the SDK in the
pipe (the SDK's share of the server's cost). Not in the default targets: each adds a find-max
search per suite (and ``floor`` the floor's memory measure)."""
START_AS = {
    **CURRENT_TWIN,
    **dict.fromkeys(FLOOR_TARGETS, "nginx"),
    **dict.fromkeys(REDIS_TARGETS, "serve"),
    **dict.fromkeys((f"{name}-native" for name in REDIS_TARGETS), "serve-native"),
}
"""Targets whose find-max search starts where another's does."""


@dataclass(frozen=True, slots=True)
class Profile:
    """How long and how finely to measure (full run or --quick)."""

    name: str
    step: dict[str, float]  # seconds per find-max step, per suite
    ramp: float
    warmup: dict[str, float]
    resolution: float
    max_steps: int
    litellm_max: int
    relay_max: int  # two descriptors per relayed stream
    direct_max: int
    ttft_rounds: int
    ttft_per_round: int
    rss_streams: tuple[int, int]
    rss_plateau: float
    peak_streams: int  # bench/memory.py's peak: what comes back after it
    flat_runs: int
    flat_streams: int
    flat_duration: float
    sdk_streams: int
    baseline_rounds: int  # --baseline: interleaved same-load rounds per twin and suite


FULL = Profile(
    "full",
    step={"fast": 15.0, "ernie": 20.0},
    ramp=2.0,
    warmup={"fast": 2.0, "ernie": 2.0},
    resolution=0.1,
    max_steps=10,
    litellm_max=256,
    relay_max=9_500,
    direct_max=19_000,
    ttft_rounds=8,
    ttft_per_round=50,
    rss_streams=(1_000, 4_000),
    rss_plateau=6.0,
    peak_streams=2_000,
    flat_runs=5,
    flat_streams=1_000,
    flat_duration=10.0,
    sdk_streams=500,
    baseline_rounds=5,
)
QUICK = Profile(
    "quick",
    step={"fast": 4.0, "ernie": 5.0},
    ramp=1.0,
    warmup={"fast": 1.0, "ernie": 0.0},
    resolution=0.5,
    max_steps=5,
    litellm_max=32,
    relay_max=9_500,
    direct_max=19_000,
    ttft_rounds=4,
    ttft_per_round=50,
    rss_streams=(500, 2_000),
    rss_plateau=3.0,
    peak_streams=1_000,
    flat_runs=5,
    flat_streams=300,
    flat_duration=3.0,
    sdk_streams=200,
    baseline_rounds=3,
)


# --------------------------------------------------------------------------------------------
# Small helpers


class CompareError(Exception):
    """Something compare needs did not work; the message says what."""


def log(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", flush=True)


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http://127.0.0.1)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        body: bytes = response.read()
    return body.decode("utf-8", "replace")


def read_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_delay_s(pid: int) -> float | None:
    """Seconds ``pid``'s main thread has spent runnable but waiting for a CPU."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


ALLOCATOR_PROBE = """
from wenxin_stream.server._allocator import plan
env = plan("auto", {}, current="python")
print(f"jemalloc ({env['LD_PRELOAD']})" if env else "pymalloc (no jemalloc installed)")
"""
"""What ``wenxin serve --allocator auto`` (the default) runs here (``server/_allocator.py``)."""


def run_text(argv: list[str], **kwargs: Any) -> str:
    """stdout+stderr of a short command, stripped ('' when it cannot run)."""
    try:
        done = subprocess.run(  # noqa: S603
            argv, capture_output=True, text=True, timeout=120, check=False, **kwargs
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return str(done.stdout + done.stderr).strip()


class Recorder:
    """The exact commands of the run, secrets replaced by the names of their variables."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.secrets: dict[str, str] = {}

    def secret(self, value: str, name: str) -> str:
        self.secrets[value] = name
        return value

    def mask(self, text: str) -> str:
        for value, name in self.secrets.items():
            text = text.replace(value, f"${name}")
        return text

    def add(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        line = " ".join(shlex.quote(str(a)) for a in argv)
        line = f"{prefix} {line}".strip().replace(str(ROOT) + "/", "")
        self.commands.append(self.mask(line))


# --------------------------------------------------------------------------------------------
# Processes


@dataclass
class Service:
    """A process compare started: its log, its pid, and how to stop it."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    stop_signal: int = signal.SIGINT
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, rec: Recorder) -> Service:
        rec.add(self.argv, self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,  # its own process group: we can stop all it started
        )
        handle.close()
        return self

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for(self, probe: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        """Poll ``probe`` until it returns something truthy (exceptions count as not yet)."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise CompareError(
                    f"{self.name} exited with {self.proc.returncode} before {what}:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(Exception):
                value = probe()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise CompareError(
                    f"{self.name}: no {what} after {timeout:g} s:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def log_match(self, pattern: str) -> str | None:
        match = re.search(pattern, self.log_path.read_text("utf-8", "replace"))
        return match.group(1) if match else None

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, self.stop_signal)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group we created for it
            proc.wait(timeout=5)
        # whatever it left behind in its own group (nginx workers, uvicorn children)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smoke_stream(url: str, key: str, *, native: bool = False) -> str:
    """One paced stream through ``url``; proves the directive reached the emulator.

    Asks for exactly 3 chunks with a 150 ms TTFT and checks that 3 content chunks arrived, the
    stream ended properly, and the first came no sooner than the emulator was told.
    """
    directive = "[[wenxin:fault ttft=0.15;interval=0.1;chunks=3]]"  # > the event log's 20 ms batch
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if native:
        req = urllib.request.Request(  # noqa: S310 (loopback)
            f"{url}/api/conversations", data=b"{}", headers=headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            conv = json.loads(response.read())["id"]
        path = f"{url}/api/conversations/{conv}/messages"
        body: dict[str, Any] = {"content": f"你好 {directive}"}
    else:
        path = f"{url}/v1/chat/completions"
        body = {
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": f"你好 {directive}"}],
        }
    req = urllib.request.Request(  # noqa: S310 (loopback)
        path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    t0 = time.perf_counter()
    first = None
    chunks, ended = 0, False
    with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310
        for raw in response:
            line = raw.decode("utf-8", "replace").strip()
            if native and line.startswith("event: end"):
                ended = True
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                ended = True
                continue
            obj = json.loads(data)
            text = obj.get("text") if native else None
            if not native:
                for choice in obj.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or text
            if text:
                chunks += 1
                first = first or time.perf_counter() - t0
    if chunks != 3 or not ended or first is None or first < 0.14:
        raise CompareError(
            f"smoke stream through {url}: {chunks} content chunks (want 3), ended={ended}, "
            f"first after {first} s (want ≥ 0.15): the pacing directive did not arrive intact"
        )
    return f"3 chunks, first after {first * 1000:.0f} ms"


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class Target:
    """A target of the load generator: how `wenxin bench` reaches it and what to sample."""

    name: str
    kind: str
    url: str
    key: str | None
    pids: list[tuple[int, str]]
    serve: Service | None = None  # a `wenxin serve` to let settle between runs
    redis: RedisProbe | None = None  # its private redis-server (the Redis targets)


class RedisProbe:
    """A private ``redis-server`` of one target, and what compare reads from it (INFO)."""

    def __init__(self, service: Service, port: int) -> None:
        import redis

        self.service = service
        self.url = f"redis://127.0.0.1:{port}/0"
        self.client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def info(self) -> dict[str, float]:
        """Redis's CPU seconds (user + system, every thread), ``used_memory``, keys, expiries."""
        info = self.client.info()
        keys = (info.get("db0") or {}).get("keys", 0)
        return {
            "cpu_s": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            "used_memory": float(info["used_memory"]),
            "keys": float(keys),
            "expired_keys": float(info["expired_keys"]),
        }


class Compare:
    """One comparison run (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile = QUICK if args.quick else FULL
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_name = f"quick-{stamp}" if args.quick else stamp
        self.out = Path(args.out).resolve() if args.out else BENCH_DIR / "results" / self.run_name
        self.raw = self.out / "raw"
        self.logs = self.out / "logs"
        self.plots = self.out / "plots"
        self.rec = Recorder()
        self.stack = contextlib.ExitStack()
        self.summary: dict[str, Any] = {
            "run": self.run_name,
            "profile": self.profile.name,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "errors": [],
        }
        self.targets: dict[str, Target] = {}
        self.emulator: Service | None = None
        self.services: dict[str, Service] = {}
        self.base_src: Path | None = None  # --baseline: the baseline's src/ (materialised)
        self.load_ended: dict[str, float] = {}  # `wenxin serve` name -> end of its last load
        cpus = os.cpu_count() or 1
        self.relay_cpu: int | None = RELAY_CPU if cpus >= 2 else None
        self.load_cpu: int | None = LOAD_CPU if cpus >= 2 else None

    def pin(self, cpu: int | None) -> list[str]:
        """The command prefix that pins a process to ``cpu`` at the measured niceness."""
        prefix = ["nice", "-n", str(self.args.nice)] if self.args.nice else []
        return [*prefix, "taskset", "-c", str(cpu)] if cpu is not None else prefix

    # ---- set-up ----------------------------------------------------------------------------

    def install(self) -> None:
        if not WENXIN.exists() or not (PEERS / "python").exists():
            log("installing the project (scripts/install)")
            self._check_call([str(ROOT / "scripts" / "install")])
        if not self.args.no_install:
            # only what this run measures (LiteLLM alone takes minutes to install)
            wanted = ["taskset", *(r for r in ("nginx", "litellm") if r in self.selected_targets)]
            log(f"installing {', '.join(wanted)} if missing (bench/install_relays.sh)")
            self._check_call(["bash", str(BENCH_DIR / "install_relays.sh"), *wanted])
        if "litellm" in self.selected_targets and not (LITELLM_VENV / "litellm").exists():
            raise CompareError("LiteLLM is not installed: run bench/install_relays.sh")
        if not self.args.skip_sdk and run_text(
            [str(PEERS / "python"), "-c", "import httpx_aiohttp"]
        ):
            log("installing httpx-aiohttp into .venv-peers (openai's aiohttp transport)")
            self._check_call(
                [
                    str(PEERS / "pip"),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "httpx-aiohttp",
                ]
            )

    def _check_call(self, argv: list[str]) -> None:
        self.rec.add(argv)
        done = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL)  # noqa: S603
        if done.returncode:
            raise CompareError(f"{' '.join(argv)} failed with status {done.returncode}")

    @property
    def selected_targets(self) -> list[str]:
        return [t for t in TARGETS if t in self.args.targets]

    def materialise_baseline(self) -> None:
        """``--baseline REF``: that ref's ``src/`` under the run's logs, removed at exit.

        ``git archive`` rather than ``git worktree add``: the repository's worktree list is
        shared with everyone who works in it, and compare needs nothing but the source. The
        baseline runs with the project's ``.venv`` Python (its dependencies are the current
        ones) and ``PYTHONPATH`` at that ``src/``, which comes before the editable install on
        ``sys.path``; this is checked here and again in the server's own log (see
        :meth:`start_serve`), and the run stops if the baseline's code is not what runs.
        """
        ref = self.args.baseline
        commit = run_text(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                           "--end-of-options", f"{ref}^{{commit}}"])  # fmt: skip
        if not re.fullmatch(r"[0-9a-f]{40,64}", commit):
            raise CompareError(f"--baseline {ref}: not a commit in this repository")
        dest = self.logs / "baseline"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        # registered before any baseline process starts, so it runs after they are stopped
        self.stack.callback(shutil.rmtree, dest, ignore_errors=True)
        argv = ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src"]
        self.rec.add([*argv[:-2], ref, "src", "|", "tar", "-x", "-C", str(dest)])
        done = subprocess.run(argv, capture_output=True, check=False)  # noqa: S603
        if done.returncode:
            raise CompareError(
                f"git archive {ref}: {done.stderr.decode('utf-8', 'replace').strip()}"
            )
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
            tar.extractall(dest, filter="data")
        src = dest / "src"
        probe = run_text(
            [str(VENV / "python"), "-c", "import wenxin_stream as w, wenxin_stream._version as v; "
             "print(w.__file__); print(v.__version__)"],
            env={**os.environ, "PYTHONPATH": str(src)},
        ).splitlines()  # fmt: skip
        if len(probe) != 2 or not Path(probe[0]).resolve().is_relative_to(src.resolve()):
            raise CompareError(
                f"--baseline {ref}: .venv's Python with PYTHONPATH={src} imports "
                f"wenxin_stream from {probe[0] if probe else '(nothing)'}, not the baseline"
            )
        git = ["git", "-C", str(ROOT)]
        dirty = run_text([*git, "status", "--porcelain", "--", "src"])
        self.base_src = src
        self.summary["baseline"] = {
            "ref": ref,
            "commit": commit,
            "short": run_text([*git, "rev-parse", "--short", commit]),
            "subject": run_text([*git, "log", "-1", "--format=%s", commit]),
            "version": probe[1],
            "current_commit": run_text([*git, "rev-parse", "--short", "HEAD"]),
            "current_dirty": bool(dirty),
            "resolution": self.profile.resolution,
            "rounds": self.args.baseline_rounds or self.profile.baseline_rounds,
        }
        b = self.summary["baseline"]
        log(
            f"baseline: {ref} = {b['short']} ({b['subject']}), wenxin-stream {b['version']}, "
            f"from {src}; current: {b['current_commit']}"
            + (" with uncommitted changes in src/" if dirty else "")
        )

    def describe(self) -> None:
        cpu = "unknown"
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
        mem = ""
        with contextlib.suppress(OSError), open("/proc/meminfo") as f:
            kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
            mem = f"{kib / 2**20:.1f} GiB"
        os_name = ""
        with contextlib.suppress(OSError), open("/etc/os-release") as f:
            os_name = next(
                (
                    ln.split("=", 1)[1].strip().strip('"')
                    for ln in f
                    if ln.startswith("PRETTY_NAME")
                ),
                "",
            )
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

        def pkg(python: Path, name: str) -> str:
            # nothing printed (so "–") when it is not installed, rather than a traceback
            code = (
                "import contextlib, importlib.metadata as m\n"
                f"with contextlib.suppress(m.PackageNotFoundError): print(m.version({name!r}))"
            )
            return run_text([str(python), "-c", code]) or "–"

        self.summary["machine"] = {
            "cpu_model": cpu,
            "cores": os.cpu_count(),
            "memory": mem,
            "kernel": platform.release(),
            "os": os_name,
            "python": platform.python_version(),
            "fd_limit": [soft, hard],
            "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
            "pinning": (
                f"relay on CPU {self.relay_cpu}, emulator and load generator on CPU {self.load_cpu}"
                if self.relay_cpu is not None
                else "one core: no pinning"
            )
            + (f"; measured processes at nice {self.args.nice}" if self.args.nice else "")
            + (
                f"; the Redis targets' redis-server and PostgreSQL on CPU {self.services_cpu}"
                if self.relay_cpu is not None and self.args.services_core == "relay"
                else ""
            ),
            "emulator_gc": self.args.emulator_gc,
        }
        nginx = run_text([self._nginx_bin(), "-v"]).replace("nginx version: ", "")
        self.summary["versions"] = {
            "wenxin-stream": run_text([str(WENXIN), "--version"]).replace("wenxin-stream ", ""),
            "nginx": nginx or "–",
            "litellm": pkg(LITELLM_VENV / "python", "litellm") if LITELLM_VENV.exists() else "–",
            "uvicorn (.venv)": pkg(VENV / "python", "uvicorn"),
            "uvloop (.venv)": pkg(VENV / "python", "uvloop"),
            "httptools (.venv)": pkg(VENV / "python", "httptools"),
            "aiohttp (.venv)": pkg(VENV / "python", "aiohttp"),
            "urllib3 (.venv)": pkg(VENV / "python", "urllib3"),
            "openai (.venv-peers)": pkg(PEERS / "python", "openai"),
            "httpx (.venv-peers)": pkg(PEERS / "python", "httpx"),
            "httpx-aiohttp (.venv-peers)": pkg(PEERS / "python", "httpx-aiohttp"),
            "qianfan (.venv-peers)": pkg(PEERS / "python", "qianfan"),
            "wenxin serve's allocator (`auto`)": run_text(
                [str(VENV / "python"), "-c", ALLOCATOR_PROBE]
            ),
        }
        if self.base_src is not None:
            b = self.summary["baseline"]
            self.summary["versions"]["wenxin-stream (baseline)"] = (
                f"{b['version']} at `{b['ref']}` ({b['short']}: {b['subject']})"
            )
        for name, version in self.summary["versions"].items():
            log(f"version: {name} {version}")

    @staticmethod
    def _nginx_bin() -> str:
        return shutil.which("nginx") or "/usr/sbin/nginx"

    # ---- services --------------------------------------------------------------------------

    def _service(self, service: Service) -> Service:
        self.stack.callback(service.stop)
        service.start(self.rec)
        return service

    def start_emulator(self) -> None:
        command = [str(WENXIN)]
        if self.args.emulator_gc == "off":
            # The same CLI with Python's cyclic garbage collector off: its full collections
            # pause the emulator for ~100 ms at a thousand streams and cap every target.
            code = (
                "import gc, sys; gc.disable(); from wenxin_stream.cli import main; "
                "sys.exit(main(sys.argv[1:]))"
            )
            command = [str(VENV / "python"), "-c", code]
        emu = self._service(
            Service(
                "emulator",
                [*self.pin(self.load_cpu), *command, *EMULATE_ARGS],
                self.logs / "emulator.log",
            )
        )
        port = emu.wait_for(
            lambda: emu.log_match(r"listening on http://127\.0\.0\.1:(\d+)"), "start line"
        )
        url = f"http://127.0.0.1:{port}"
        emu.wait_for(lambda: "ok" in http_get(f"{url}/healthz"), "/healthz")
        self.emulator = emu
        self.emulator_url = url
        self.targets["direct"] = Target(
            "direct", "ernie-v2", url, UPSTREAM_KEY, [(emu.pid, "emulator")]
        )
        log(f"emulator at {url} (pid {emu.pid})")

    def _emulator_pid(self) -> list[tuple[int, str]]:
        assert self.emulator is not None
        return [(self.emulator.pid, "emulator")]

    def start_nginx(self) -> None:
        prefix = self.logs / "nginx"
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        port = free_port()
        values = {
            "user_line": "user root;" if os.geteuid() == 0 else "",
            "rlimit_nofile": str(FD_LIMIT),
            "worker_connections": str(FD_LIMIT - 100),
            "prefix": str(prefix),
            "upstream_port": self.emulator_url.rsplit(":", 1)[1],
            "listen_port": str(port),
        }
        template = (BENCH_DIR / "nginx.conf.template").read_text()

        def fill(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise CompareError(f"nginx.conf.template: unknown placeholder {match.group(0)}")
            return values[match.group(1)]

        conf = prefix / "nginx.conf"
        conf.write_text(re.sub(r"\$\{(\w+)\}", fill, template))
        nginx = self._service(
            Service(
                "nginx",
                [*self.pin(self.relay_cpu), self._nginx_bin(), "-p", str(prefix), "-c", str(conf)],
                self.logs / "nginx.log",
                stop_signal=signal.SIGQUIT,
            )
        )
        url = f"http://127.0.0.1:{port}"
        nginx.wait_for(lambda: http_get(f"{url}/nginx-healthz") == "ok\n", "/nginx-healthz")
        workers = nginx.wait_for(lambda: children(nginx.pid), "worker process")
        self.services["nginx"] = nginx
        self.targets["nginx"] = Target(
            "nginx",
            "openai",
            url,
            UPSTREAM_KEY,
            [(workers[0], "nginx worker"), *self._emulator_pid()],
        )
        log(
            f"nginx at {url} (master {nginx.pid}, worker {workers[0]}): "
            + smoke_stream(url, UPSTREAM_KEY)
        )

    def floor_command(self, flags: tuple[str, ...] = ()) -> list[str]:
        """The command of ``bench/floor_relay.py`` (with its mode's ``flags``) against this
        run's emulator, pinned like every relay (the project's ``.venv`` Python: `wenxin
        serve`'s uvicorn and aiohttp)."""
        argv = [str(VENV / "python"), str(BENCH_DIR / "floor_relay.py"),
                "--upstream", self.emulator_url, "--port", "0"]  # fmt: skip
        return [*self.pin(self.relay_cpu), *argv, *flags]

    def start_floor(self, tag: str) -> tuple[Service, str]:
        """``bench/floor_relay.py`` as ``tag`` (its :data:`FLOOR_TARGETS` flags); (service,
        url)."""
        floor = self._service(
            Service(
                tag,
                self.floor_command(FLOOR_TARGETS[tag.removesuffix("-memory")]),
                self.logs / f"{tag}.log",
                stop_signal=signal.SIGTERM,
            )
        )
        port = floor.wait_for(
            lambda: floor.log_match(r"floor relay on http://127\.0\.0\.1:(\d+)"), "start line"
        )
        url = f"http://127.0.0.1:{port}"
        floor.wait_for(lambda: http_get(f"{url}/healthz") == "ok\n", "/healthz")
        return floor, url

    def start_floor_target(self, tag: str) -> None:
        floor, url = self.start_floor(tag)
        self.services[tag] = floor
        self.targets[tag] = Target(
            tag, "openai", url, UPSTREAM_KEY, [(floor.pid, "floor relay"), *self._emulator_pid()]
        )
        log(f"{TARGET_TITLES[tag]} at {url} (pid {floor.pid}): " + smoke_stream(url, UPSTREAM_KEY))

    def start_litellm(self) -> None:
        port = free_port()
        master_key = self.rec.secret("sk-" + secrets.token_hex(24), "LITELLM_MASTER_KEY")
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_MASTER_KEY": master_key,
            "EMULATOR_V2_BASE": f"{self.emulator_url}/v2",
            "DISABLE_SCHEMA_UPDATE": "True",
        }
        litellm_args = ["--config", str(BENCH_DIR / "litellm_config.yaml"), "--host",
                        "127.0.0.1", "--port", str(port), "--num_workers", "1"]  # fmt: skip
        workdir = self.logs / "litellm"
        workdir.mkdir(parents=True, exist_ok=True)
        lite = self._service(
            Service(
                "litellm",
                [*self.pin(self.relay_cpu), str(LITELLM_VENV / "litellm"), *litellm_args],
                self.logs / "litellm.log",
                env=env,
                cwd=workdir,  # it writes nothing we want in the tree
                stop_signal=signal.SIGTERM,
            )
        )
        url = f"http://127.0.0.1:{port}"
        lite.wait_for(
            lambda: "alive" in http_get(f"{url}/health/liveliness"), "/health/liveliness", 180
        )
        self.services["litellm"] = lite
        pids = [(lite.pid, "litellm")] + [(c, "litellm child") for c in children(lite.pid)]
        self.targets["litellm"] = Target(
            "litellm", "openai", url, master_key, [*pids, *self._emulator_pid()]
        )
        log(f"LiteLLM at {url} (pid {lite.pid}): " + smoke_stream(url, master_key))

    def start_serve(
        self,
        tag: str = "serve",
        src: Path | None = None,
        *,
        redis_url: str | None = None,
        workers: int = 1,
        database_url: str | None = None,
    ) -> tuple[Service, str, str]:
        """A `wenxin serve` with its production features on; (service, url, api key).

        With ``src`` (``--baseline``) the code under ``src`` runs instead of the checked-out
        one, for the key as for the server: the same ``.venv`` Python, ``PYTHONPATH=src``, and
        the server's log must say that its ``wenxin_stream`` was imported from there.
        ``redis_url`` adds ``--redis-url`` (limits, leases, the event log and cancel in
        Redis) and ``workers`` > 1 ``--workers``: N processes cannot share one core, so such a
        server is not pinned (its workers, the emulator and the load generator share both).
        """
        wenxin = [str(WENXIN)]
        env: dict[str, str] = {}
        if src is not None:
            code = (
                "import sys, wenxin_stream; "
                "print('compare: wenxin_stream from', wenxin_stream.__file__, flush=True); "
                "from wenxin_stream.cli import main; sys.exit(main())"
            )
            wenxin = [str(VENV / "python"), "-c", code]
            env["PYTHONPATH"] = str(src)
        data = self.logs / f"{tag}-data"
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(parents=True)
        argv = [*wenxin, "keys", "create", "--data-dir", str(data), "--name", "compare",
                "--rpm", "10000000", "--tpm", "2000000000", "--max-streams", "100000"]  # fmt: skip
        if database_url is not None:
            argv += ["--database-url", database_url]
        self.rec.add(argv, env)
        done = subprocess.run(  # noqa: S603
            argv, capture_output=True, text=True, check=False, env={**os.environ, **env}
        )
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise CompareError(f"wenxin keys create failed: {last}")
        lines = done.stdout.strip().splitlines()
        if src is not None:  # the probe's line first, then the key
            origin = lines.pop(0).removeprefix("compare: wenxin_stream from ") if lines else ""
            if not Path(origin).resolve().is_relative_to(src.resolve()):
                raise CompareError(f"{tag}: wenxin keys create ran {origin or '?'}, not {src}")
        key = self.rec.secret("\n".join(lines), "WENXIN_API_KEY")
        config = data / "serve.toml"
        config.write_text(
            "\n".join(
                [
                    "# written by bench/compare",
                    "[server]",
                    'host = "127.0.0.1"',
                    "port = 0",
                    f'data-dir = "{data}"',
                    'upstream-api = "v2"',
                    f'upstream-v2-base-url = "{self.emulator_url}"',
                    "# one pool connection per relayed stream (the default, 4096, would cap it)",
                    "upstream-max-connections = 10000",
                    "# limits on, generous enough never to bite",
                    "default-rpm = 10000000",
                    "default-tpm = 10000000000",
                    "default-max-streams = 100000",
                    "",
                ]
            )
        )
        fleet = ["--redis-url", redis_url] if redis_url else []
        if database_url is not None:
            fleet += ["--database-url", database_url]
        if workers > 1:
            fleet += ["--workers", str(workers)]
        pin = self.pin(self.relay_cpu if workers == 1 else None)
        serve = self._service(
            Service(
                tag,
                [*pin, *wenxin, "serve", "--config", str(config), *fleet],
                self.logs / f"{tag}.log",
                # every load connection comes from 127.0.0.1, and a step may open more than
                # the default caps: counted, never refused (in the environment, not the TOML
                # file, since a baseline from before these settings would refuse the file)
                env={
                    "WENXIN_UPSTREAM_BEARER_TOKEN": UPSTREAM_KEY,
                    "WENXIN_MAX_CONNECTIONS": "0",
                    "WENXIN_MAX_CONNECTIONS_PER_IP": "0",
                    **env,
                },
            )
        )
        port = serve.wait_for(
            lambda: serve.log_match(r"on http://127\.0\.0\.1:(\d+)"), "start line"
        )
        url = f"http://127.0.0.1:{port}"
        serve.wait_for(lambda: "ready" in http_get(f"{url}/readyz"), "/readyz")
        if src is not None:
            origin = serve.log_match(r"compare: wenxin_stream from (\S+)") or ""
            if not Path(origin).resolve().is_relative_to(src.resolve()):
                raise CompareError(
                    f"{tag} imported wenxin_stream from {origin or '?'}, not from the baseline "
                    f"at {src}: the baseline's code is not what runs"
                )
            log(f"{tag}: the server runs wenxin_stream from {origin}")
        return serve, url, key

    def start_relays(self) -> None:
        self.start_emulator()
        wanted = set(self.selected_targets)
        if "nginx" in wanted:
            self.start_nginx()
        for tag in FLOOR_TARGETS:
            if tag in wanted:
                self.start_floor_target(tag)
        if "litellm" in wanted:
            self.start_litellm()
        if wanted & {"serve", "serve-native"}:
            self._start_serve_target("serve", wanted)
        if self.base_src is not None and wanted & {"serve-base", "serve-base-native"}:
            # both servers stay up, idle until measured, and never loaded together (settle())
            self._start_serve_target("serve-base", wanted, self.base_src)
        for tag, workers in REDIS_TARGETS.items():
            if wanted & {tag, f"{tag}-native"}:
                self._start_redis_target(tag, workers, wanted)

    def start_redis(self, tag: str) -> RedisProbe:
        """A private ``redis-server`` for ``tag``: no persistence, loopback, a free port, on
        the load core with the emulator (the relay core stays the relay's), or with
        ``--services-core relay`` on the relay's core (:meth:`services_cpu`)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise CompareError("redis-server is not installed (run scripts/install-services)")
        port = free_port()
        data = self.logs / f"{tag}-redis"
        data.mkdir(parents=True, exist_ok=True)
        service = self._service(
            Service(
                f"{tag}-redis",
                [*self.pin(self.services_cpu), binary, "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(data), "--daemonize", "no"],
                self.logs / f"{tag}-redis.log",
                stop_signal=signal.SIGTERM,
            )
        )  # fmt: skip
        probe = RedisProbe(service, port)
        service.wait_for(probe.client.ping, "PING")
        return probe

    def start_postgres(self) -> str:
        """A private PostgreSQL for the run (the tests' own: ``initdb`` in a temporary
        directory, trust authentication, loopback, a free port, ``fsync`` off), stopped with
        the run; its URL."""
        sys.path.insert(0, str(ROOT / "tests"))
        from services import ServiceUnavailable, postgres_server

        try:
            service = self.stack.enter_context(postgres_server())
        except ServiceUnavailable as exc:
            raise CompareError(str(exc)) from None
        if self.args.services_core == "relay" and self.relay_cpu is not None:
            pin_tree(service.process.pid, self.relay_cpu)
        return str(service.url)

    @property
    def services_cpu(self) -> int | None:
        """The core of the Redis targets' own services (``--services-core``)."""
        return self.relay_cpu if self.args.services_core == "relay" else self.load_cpu

    def _start_redis_target(self, tag: str, workers: int, wanted: set[str]) -> None:
        """``tag`` (serve-redis, serve-workers2) and ``tag``-native: its redis-server (and with
        ``--postgres`` a PostgreSQL), then its `wenxin serve`. Only the native API's answers
        are resumable, so only they are written to the event log; the OpenAI route uses Redis
        for the limits and leases."""
        redis = self.start_redis(tag)
        database = self.start_postgres() if self.args.postgres else None
        self.summary["postgres"] = database is not None
        serve, url, key = self.start_serve(
            tag, redis_url=redis.url, workers=workers, database_url=database
        )
        self.services[tag] = serve
        if workers > 1:
            pids = serve.wait_for(lambda: self._worker_pids(serve.pid, workers), "workers")
            relay = [(pid, f"{WORKER_LABEL} {i + 1}") for i, pid in enumerate(pids)]
        else:
            relay = [(serve.pid, "wenxin serve")]
        pids = [*relay, *self._emulator_pid()]
        self.targets[tag] = Target(tag, "openai", url, key, pids, serve, redis)
        native = f"{tag}-native"
        self.targets[native] = Target(native, "native", url, key, pids, serve, redis)
        info = json.loads(http_get(f"{url}/api/info", headers={"Authorization": f"Bearer {key}"}))
        log(
            f"{TARGET_TITLES[tag]} at {url} (pids {', '.join(str(p) for p, _ in relay)}, "
            f"{redis.url}, upstream {info['upstream']} {info['api']}): " + smoke_stream(url, key)
        )
        if native in wanted:
            log(f"{TARGET_TITLES[native]}: " + smoke_stream(url, key, native=True))

    @staticmethod
    def _worker_pids(supervisor: int, workers: int) -> list[int] | None:
        """The pids of ``--workers``' worker processes (not multiprocessing's resource
        tracker), once all ``workers`` are there."""
        pids = []
        for pid in children(supervisor):
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
        return sorted(pids) if len(pids) == workers else None

    def _start_serve_target(self, tag: str, wanted: set[str], src: Path | None = None) -> None:
        """A `wenxin serve` as the targets ``tag`` (OpenAI route) and ``tag``-native."""
        native = f"{tag}-native"
        serve, url, key = self.start_serve(tag, src)
        self.services[tag] = serve
        label = "wenxin serve" if src is None else "wenxin serve (baseline)"
        pids = [(serve.pid, label), *self._emulator_pid()]
        self.targets[tag] = Target(tag, "openai", url, key, pids, serve)
        self.targets[native] = Target(native, "native", url, key, pids, serve)
        info = json.loads(http_get(f"{url}/api/info", headers={"Authorization": f"Bearer {key}"}))
        log(
            f"{label} at {url} (pid {serve.pid}, auth_required={info['auth_required']}, "
            f"upstream {info['upstream']} {info['api']}): " + smoke_stream(url, key)
        )
        if native in wanted:
            log(f"{label} native API: " + smoke_stream(url, key, native=True))

    # ---- wenxin bench ----------------------------------------------------------------------

    def bench(
        self, target: Target, out: Path, flags: list[str], timeout: float, tag: str
    ) -> dict[str, Any] | None:
        """Run `wenxin bench` on the load core; its result.json (None if it wrote none)."""
        argv = [*self.pin(self.load_cpu), str(WENXIN), "bench", "--target", target.kind,
                "--url", target.url, "--model", MODEL, "--quiet", "--out", str(out),
                *flags]  # fmt: skip
        if target.key:
            argv += ["--api-key", target.key]
        for pid, label in target.pids:
            argv += ["--pid", str(pid), "--label", label]
        self.rec.add(argv)
        out.mkdir(parents=True, exist_ok=True)
        waits0 = {label: run_delay_s(pid) for pid, label in target.pids}
        redis0 = self._redis_marks(target)
        wall0 = time.monotonic()
        with (out / "bench.log").open("w") as logf, (out / "stdout.md").open("w") as mdf:
            proc = subprocess.Popen(  # noqa: S603
                argv, stdin=subprocess.DEVNULL, stdout=mdf, stderr=subprocess.PIPE, text=True
            )

            def copy_stderr() -> None:
                assert proc.stderr is not None
                for line in proc.stderr:
                    logf.write(line)
                    if "error" in line:  # warnings (CPU waits) are in the log and the tables
                        log(f"  {tag}: {line.rstrip()}")

            reader = threading.Thread(target=copy_stderr, daemon=True)
            reader.start()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.summary["errors"].append(f"{tag}: wenxin bench killed after {timeout:.0f} s")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                reader.join(timeout=5)
        wall = time.monotonic() - wall0
        redis1 = self._redis_marks(target)
        if target.serve is not None:
            self.load_ended[target.serve.name] = time.monotonic()
        path = out / "result.json"
        if not path.exists():
            self.summary["errors"].append(
                f"{tag}: wenxin bench wrote no result (exit {proc.returncode})"
            )
            return None
        doc: dict[str, Any] = json.loads(path.read_text())
        # How long each sampled process waited for its CPU (other work on a shared machine):
        # /proc/<pid>/schedstat run delay over the whole bench invocation.
        waits = {}
        for pid, label in target.pids:
            before, after = waits0.get(label), run_delay_s(pid)
            if before is not None and after is not None and wall > 0:
                waits[label] = round((after - before) / wall * 100, 1)
        doc["cpu_wait_percent"] = waits
        if redis0 is not None and redis1 is not None:
            doc["redis"] = redis_cost(redis0, redis1, pacing_chunks(flags))
        return doc

    def _redis_marks(self, target: Target) -> dict[str, float] | None:
        """A Redis target's INFO figures and its server's streams ended so far (None for
        the other targets, or when either cannot be read)."""
        if target.redis is None:
            return None
        try:
            marks = target.redis.info()
            text = http_get(f"{target.url}/metrics", timeout=5)
        except Exception as exc:  # a figure missing, not a failed run
            self.summary["errors"].append(f"{target.name}: Redis INFO or /metrics: {exc}")
            return None
        ends = re.findall(r"^wenxin_stream_ends_total\{[^}]*\}\s+([0-9.e+]+)", text, re.M)
        marks["streams_ended"] = sum(float(v) for v in ends)
        return marks

    def _step_flags(self, suite: Suite, concurrency: int) -> tuple[list[str], float]:
        """`wenxin bench`'s flags for one step at ``concurrency``, and how long to allow it."""
        p = self.profile
        step = self.args.step_duration or p.step[suite.key]
        drain = suite.stream_s * 2 + 3
        # starts spread over one stream's length at least: each worker starts its next stream
        # as its last ends, so a shorter ramp makes every later generation of starts a burst as
        # dense as the ramp's (ERNIE-paced: 5.3 s streams, a 2 s ramp → 2.65× the even rate;
        # a 4.9 s ramp, the length once counted without the end event, left a 0.4 s hole in
        # every generation and 1.08× the even rate around it)
        ramp = min(max(p.ramp * max(1.0, concurrency / 2000), suite.stream_s), step / 2)
        warmup = min(max(p.warmup[suite.key], ramp) if p.warmup[suite.key] else 0, step / 2)
        flags = [
            "--pacing", suite.pacing, "--concurrency", str(concurrency),
            "--duration", f"{step:g}", "--ramp", f"{ramp:g}",
            "--warmup", f"{warmup:g}",
            "--drain", f"{drain:g}", "--time-limit", f"{step + drain + 30:g}",
            "--ttft-timeout", "15", "--idle-timeout", "15",
        ]  # fmt: skip
        return flags, step + drain + 120

    def find_max(self, suite: Suite, name: str) -> dict[str, Any]:
        """The largest concurrency ``name`` sustains at ``suite``'s pacing.

        The search is `wenxin bench`'s own policy (:class:`wenxin_stream.bench.MaxSearch`:
        doubling, then bisection) with its default criteria, but compare runs each step as one
        `wenxin bench --concurrency N` and runs a failed step once more before believing it:
        on a shared machine one scheduling stall of 50 ms fails a p99 criterion at thousands
        of chunks a second. The steps are then written as one `--find-max` document with the
        bench package's own writer, so ``raw/<suite>/<target>/`` looks like the output of
        `wenxin bench --find-max` (result.json, report.md, find_max.svg, latency_cdf.svg).
        """
        from wenxin_stream.bench import MaxSearch, write_outputs

        p = self.profile
        target = self.targets[name]
        limit = {"direct": p.direct_max, "litellm": p.litellm_max}.get(name, p.relay_max)
        reason = "one descriptor per stream" if name == "direct" else "two descriptors per stream"
        if name == "litellm":
            reason = "LiteLLM's search is capped (it tops out at a few dozen streams)"
        if self.args.max_concurrency and self.args.max_concurrency < limit:
            limit, reason = self.args.max_concurrency, "--max-concurrency"
        start = min(suite.start[START_AS.get(name, name)], limit)
        step = self.args.step_duration or p.step[suite.key]
        criterion = self.args.max_p99_lateness_ms
        search = MaxSearch(start, limit, resolution=p.resolution, max_steps=p.max_steps)
        out = self.raw / suite.key / name
        log(f"{suite.key}/{name}: find-max from {start} up to {limit}")
        steps: list[dict[str, Any]] = []
        docs: dict[int, dict[str, Any]] = {}
        retried = 0
        while (concurrency := search.next()) is not None:
            attempts = 1 + max(0, self.args.retries)
            for attempt in range(1, attempts + 1):
                self.settle(target)
                flags, timeout = self._step_flags(suite, concurrency)
                tag = f"{suite.key}/{name}"
                suffix = f"-retry{attempt - 1}" if attempt > 1 else ""
                doc = self.bench(
                    target, out / f"step-{concurrency:05d}{suffix}", flags, timeout, tag
                )
                violations = step_violations(doc, criterion)
                log(
                    f"  {tag}: {concurrency:6d} streams {'pass' if not violations else 'FAIL'}"
                    + (f" (try {attempt})" if attempt > 1 else "")
                    + f"  {step_line(doc)}  {'; '.join(violations)}"
                )
                if not violations:
                    break
                if attempt < attempts:
                    retried += 1
            search.record(concurrency, not violations)
            if doc and doc.get("result"):
                docs[concurrency] = doc
                steps.append(
                    {
                        "concurrency": concurrency,
                        "passed": not violations,
                        "violations": violations,
                        "result": doc["result"],
                        "attempts": attempt,
                    }
                )
        best = docs.get(search.best)
        base = best or next(iter(docs.values()), None)
        if base is None:
            return {"best": None, "error": "no step produced a result"}
        fm_doc = {
            **base,
            "config": {**base["config"], "find_max": True, "start_concurrency": start,
                       "max_concurrency": limit, "step_duration": step,
                       "max_p99_lateness_ms": criterion, "out": str(out)},
            "result": best["result"] if best else None,
            "find_max": {
                "best_concurrency": search.best,
                "first_failing_concurrency": search.failed_at,
                "limit": limit,
                "limit_reason": reason,
                "criteria": {"max_p99_lateness_ms": criterion, "max_error_rate": 0.0,
                             "max_chunks_lost": 0},
                "steps": steps,
                "retries": retried,
            },
        }  # fmt: skip
        write_outputs(out, fm_doc)
        return summarize_find_max(fm_doc, name)

    def run_suites(self) -> None:
        self.summary["suites"] = {}
        for key in self.args.suites:
            suite = SUITES[key]
            rows = {}
            for name in self.selected_targets:
                if name.endswith("-native") and not self.args.native:
                    continue
                rows[name] = self.find_max(suite, name)
                self._copy_plots(suite.key, name)
            self.summary["suites"][key] = {
                "title": suite.title,
                "pacing": suite.pacing,
                "targets": rows,
            }
            if self.base_src is not None:
                self.summary["suites"][key]["baseline_rounds"] = self.baseline_rounds(suite, rows)
            if any(r in rows for _, r in REDIS_PAIRS):
                self.summary["suites"][key]["redis_rounds"] = self.redis_rounds(suite, rows)
            floor = self.floor_rounds(suite, rows)
            if floor is not None:
                self.summary["suites"][key]["floor_rounds"] = floor

    def baseline_rounds(self, suite: Suite, rows: dict[str, Any]) -> dict[str, Any]:
        """``--baseline``: each twin pair at one load, in interleaved rounds.

        The suite's rows give each server's CPU per 1,000 chunks at its own maximum: one step
        each, at two loads, at the edge (where queueing and coalescing weigh as much as what a
        chunk costs). This runs both at one load, half the smaller of the two maxima (a load
        both sustained with room to spare), ``--baseline-rounds`` times each, in the order
        current, baseline / baseline, current / … so that drifting background load and the
        position in a round fall on both alike. The medians give the comparison; how far one
        measurement strays from the median of its own code, in this run, is the noise
        (:func:`cpu_change`). A step that lost chunks (coalesced) or streams is left out: it
        relayed fewer, larger chunks, and its CPU per chunk is not comparable.
        """
        out: dict[str, Any] = {}
        for cur, base in BASELINE_TWINS.items():
            if cur in rows and base in rows:
                out[cur] = self._interleaved(suite, rows, cur, base, "baseline-rounds")
                out[cur]["baseline"] = out[cur].pop("other")
                out[cur]["current_cpu_ms_per_1k"] = out[cur].pop("first_cpu_ms_per_1k")
                out[cur]["baseline_cpu_ms_per_1k"] = out[cur].pop("other_cpu_ms_per_1k")
        return out

    def redis_rounds(self, suite: Suite, rows: dict[str, Any]) -> dict[str, Any]:
        """The in-memory `wenxin serve` and the Redis one at one load, in interleaved rounds
        (as :meth:`baseline_rounds`): the CPU ratio of Redis on against off, and its noise."""
        out: dict[str, Any] = {}
        for memory, redis in REDIS_PAIRS:
            if memory in rows and redis in rows:
                out[redis] = self._interleaved(suite, rows, redis, memory, "redis-rounds")
        return out

    def _interleaved(
        self, suite: Suite, rows: dict[str, Any], first: str, other: str, folder: str
    ) -> dict[str, Any]:
        """``first`` and ``other`` at one load in interleaved rounds (first, other / other,
        first / …): :meth:`_same_load`."""
        done = self._same_load(suite, rows, [first, other], folder)
        samples = done.pop("cpu_ms_per_1k")
        return {
            "other": other,
            **done,
            "first_cpu_ms_per_1k": samples[first],
            "other_cpu_ms_per_1k": samples[other],
        }

    def floor_rounds(self, suite: Suite, rows: dict[str, Any]) -> dict[str, Any] | None:
        """The floor's targets with nginx and `wenxin serve` (those of them measured) at one
        load in interleaved rounds: the same-load CPU per 1,000 chunks of each, the source of
        the floor's ratios (floor / nginx, serve / floor) in ``bench/PROFILE.md``."""
        names = [n for n in ("nginx", *FLOOR_TARGETS, "serve") if n in rows]
        if not any(n in FLOOR_TARGETS for n in names) or len(names) < 2:
            return None
        return self._same_load(suite, rows, names, "floor-rounds", self.args.floor_streams)

    def _same_load(
        self,
        suite: Suite,
        rows: dict[str, Any],
        names: list[str],
        folder: str,
        streams: int | None = None,
    ) -> dict[str, Any]:
        """``names`` at one load (``streams``, else half the smallest of their maxima) in
        ``--baseline-rounds`` interleaved rounds, each round's order the last one's rotated by
        one (with two targets: a, b / b, a / …) so that drifting background load and the place
        in a round fall on all alike; the relay CPU per 1,000 chunks of each counted step. A
        step that lost chunks (coalesced) or streams is not counted: it relayed fewer, larger
        chunks."""
        rounds = self.args.baseline_rounds or self.profile.baseline_rounds
        bests = [rows[name].get("best") or 0 for name in names]
        first = names[0]
        level = (
            min(b for b in bests if b) if any(bests) else suite.start[START_AS.get(first, first)]
        )
        concurrency = streams or max(1, level // 2)
        samples: dict[str, list[float]] = {name: [] for name in names}
        steps = []
        log(f"{suite.key}/{' vs '.join(names)}: {rounds} rounds each at {concurrency} streams")
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                target = self.targets[name]
                self.settle(target)
                flags, timeout = self._step_flags(suite, concurrency)
                tag = f"{suite.key}/{name}"
                out_dir = self.raw / suite.key / folder / f"{name}-{r + 1}"
                doc = self.bench(target, out_dir, flags, timeout, tag)
                result = (doc or {}).get("result")
                per_1k = relay_cpu_per_1k(result)
                usable = bool(
                    result
                    and per_1k is not None
                    and not result["chunks_lost"]
                    and not result["streams_failed"]
                )
                if usable and per_1k is not None:
                    samples[name].append(per_1k)
                violations = step_violations(doc, self.args.max_p99_lateness_ms)
                waits = (doc or {}).get("cpu_wait_percent") or {}
                wait = next((w for label, w in waits.items() if label != "emulator"), None)
                steps.append({"target": name, "round": r + 1, "cpu_ms_per_1k": per_1k,
                              "counted": usable, "relay_wait_percent": wait,
                              "violations": violations,
                              "redis": (doc or {}).get("redis")})  # fmt: skip
                log(
                    f"  {tag}: round {r + 1}: {concurrency} streams, relay CPU "
                    f"{_f(per_1k, 1, ' ms')} per 1k chunks (waited {_f(wait, 0, '%')})"
                    + ("" if usable else " (not counted: lost chunks or streams)")
                    + f"  {step_line(doc)}"
                )
        return {
            "concurrency": concurrency,
            "rounds": rounds,
            "cpu_ms_per_1k": samples,
            "steps": steps,
        }

    def _copy_plots(self, suite: str, name: str) -> None:
        """Copy a target's plots next to RESULTS.md, titled with the target, not its URL."""
        self.plots.mkdir(parents=True, exist_ok=True)
        target = self.targets[name]
        title = target_titles(self.summary)[name]
        for plot in ("find_max.svg", "latency_cdf.svg"):
            src = self.raw / suite / name / plot
            if src.exists():
                svg = src.read_text("utf-8").replace(
                    f"wenxin bench · {target.kind} · {target.url}",
                    escape(f"{title} · {SUITES[suite].title.split(':')[0]} suite"),
                )
                (self.plots / f"{suite}-{name}-{plot}").write_text(svg, "utf-8")

    # ---- TTFT at one stream ----------------------------------------------------------------

    def ttft(self) -> None:
        p = self.profile
        names = [n for n in self.selected_targets if not n.endswith("-native")]
        values: dict[str, list[float]] = {n: [] for n in names}
        round_p50: dict[str, list[float]] = {n: [] for n in names}
        pacing = "ttft=0;interval=0;chunks=4;stamp=0"
        log(f"TTFT at one stream: {p.ttft_rounds} rounds × {p.ttft_per_round} requests per target")
        for name in names:  # warm every path (connections, caches) before measuring
            self.bench(
                self.targets[name],
                self.raw / "ttft" / f"warm-{name}",
                ["--pacing", pacing, "--concurrency", "1", "--requests", "20"],
                120,
                f"ttft/warm-{name}",
            )
        for r in range(p.ttft_rounds):
            order = list(names)
            if r % 2 and {"serve", "serve-base"} <= set(order):
                # --baseline: the twins swap places every other round (neither always second)
                i, j = order.index("serve"), order.index("serve-base")
                order[i], order[j] = order[j], order[i]
            for name in order:
                self.settle(self.targets[name])
                # a few unmeasured requests right before every round, for every target: the
                # relay's core may have idled (settle), and waking an idle virtual CPU costs
                # the first request a few ms that no relay can help
                self.bench(
                    self.targets[name],
                    self.raw / "ttft" / f"prime-{name}-{r + 1}",
                    ["--pacing", pacing, "--concurrency", "1", "--requests", str(TTFT_PRIME)],
                    60,
                    f"ttft/prime-{name}",
                )
                doc = self.bench(
                    self.targets[name],
                    self.raw / "ttft" / f"{name}-{r + 1}",
                    ["--pacing", pacing, "--concurrency", "1", "--requests", str(p.ttft_per_round)],
                    120,
                    f"ttft/{name}",
                )
                if doc and doc.get("result"):
                    # n ≤ 200: the CDF holds every value
                    values[name] += [pt[0] for pt in doc["result"]["cdf"]["ttft_ms"]]
                    if doc["result"]["cdf"]["ttft_ms"]:
                        round_p50[name].append(
                            pct([pt[0] for pt in doc["result"]["cdf"]["ttft_ms"]], 50)
                        )
        rows: dict[str, Any] = {}
        base = values.get("direct") or []
        for name, vals in values.items():
            if not vals:
                continue
            row = {"n": len(vals), "p50": pct(vals, 50), "p99": pct(vals, 99), "max": max(vals),
                   "round_p50": round_p50[name]}  # fmt: skip
            if base and name != "direct":
                row["added_p50"] = row["p50"] - pct(base, 50)
                row["added_p99"] = row["p99"] - pct(base, 99)
            rows[name] = row
        self.summary["ttft"] = {"pacing": pacing, "targets": rows}

    # ---- memory of wenxin serve ------------------------------------------------------------

    def memory(self) -> None:
        p = self.profile
        for name in ("nginx", *FLOOR_TARGETS, "litellm", "serve", "serve-base"):
            if name in self.services:  # the relay core to itself
                self.services[name].stop()
        if "floor" in self.selected_targets:
            self.summary["memory_floor"] = self.floor_memory()
        if "serve" not in self.selected_targets:
            return
        serve, url, key = self.start_serve("serve-memory")
        target = Target("serve-memory", "openai", url, key, [(serve.pid, "wenxin serve")], serve)
        pid = serve.pid
        log(f"memory: fresh wenxin serve (pid {pid}), RSS {read_rss_mib(pid):.1f} MiB")
        idle, levels, slope = self._open_stream_rss(target, serve, url, "memory")
        after = []
        for i in range(p.flat_runs):
            self.bench(
                target,
                self.raw / "memory" / f"flat-{i + 1}",
                [
                    "--pacing",
                    SUITES["fast"].pacing,
                    "--concurrency",
                    str(p.flat_streams),
                    "--duration",
                    f"{p.flat_duration:g}",
                    "--ramp",
                    "1",
                ],
                p.flat_duration + 90,
                "memory/flat",
            )
            self._wait_idle(serve, url)
            after.append(self._steady_rss(pid, 1.0))
            log(f"memory: after run {i + 1}: RSS {after[-1]:.2f} MiB")
        growth = after[-1] - after[1] if len(after) >= 2 else None
        tolerance = max(2.0, 0.02 * after[1]) if len(after) >= 2 else None
        self.summary["memory"] = {
            "idle_mib": idle,
            "levels": levels,
            "marginal_kib_per_stream": slope,
            "flat": {
                "runs": p.flat_runs,
                "streams": p.flat_streams,
                "duration_s": p.flat_duration,
                "rss_after_mib": after,
                "growth_mib": growth,
                "tolerance_mib": tolerance,
            },
        }
        serve.stop()
        self.summary["memory"]["after_peak"] = self.after_peak()

    def after_peak(self) -> dict[str, Any] | None:
        """What a fresh `wenxin serve` gives back after a peak: ``bench/memory.py`` (its own
        emulator and server, the server on the relay core) opens the profile's
        ``peak_streams`` native streams, lets them end and their resume windows pass, and
        probes RSS a minute after the end; idle and that RSS (MiB), ``None`` if it wrote no
        result."""
        p = self.profile
        out = self.out / "memory-peak"  # kept with the run (raw/ is not)
        out.mkdir(parents=True, exist_ok=True)
        argv = [str(VENV / "python"), str(BENCH_DIR / "memory.py"), "--streams",
                str(p.peak_streams), "--server-cpu", str(self.relay_cpu or 0), "--out",
                str(out)]  # fmt: skip
        self.rec.add(argv)
        log(f"memory: a peak of {p.peak_streams:,} streams and back (bench/memory.py)")
        with (self.logs / "memory-peak.log").open("w") as logf:
            try:
                done = subprocess.run(  # noqa: S603
                    argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    timeout=PEAK_TIMEOUT, check=False,
                )  # fmt: skip
                status = f"exit {done.returncode}"
            except subprocess.TimeoutExpired:
                status = f"killed after {PEAK_TIMEOUT:.0f} s"
        found = sorted(out.glob("memory-*/memory.json"))
        if not found:
            self.summary["errors"].append(f"memory/peak: memory.py wrote no result ({status})")
            return None
        peak = after_peak_figures(json.loads(found[-1].read_text()), p.peak_streams)
        peak["summary"] = str(found[-1].parent.relative_to(self.out) / "summary.md")
        log(f"memory: idle {peak['idle_mib']:.1f} MiB, a minute after the peak "
            f"{peak['later_mib']:.1f} MiB ({peak['later_ratio'] - 1:+.1%})")  # fmt: skip
        return peak

    def floor_memory(self) -> dict[str, Any]:
        """The memory floor: a fresh ``bench/floor_relay.py`` (the bare pipe), measured as
        `wenxin serve` is (warm-up, idle RSS, RSS with two numbers of streams open); no
        flatness runs. Its ``/metrics`` gauge is what :meth:`_wait_idle` and
        :meth:`_rss_with_streams` read."""
        floor, url = self.start_floor("floor-memory")
        target = Target(
            "floor-memory", "openai", url, UPSTREAM_KEY, [(floor.pid, "floor relay")], None
        )
        log(f"memory: fresh floor relay (pid {floor.pid}), RSS {read_rss_mib(floor.pid):.1f} MiB")
        idle, levels, slope = self._open_stream_rss(target, floor, url, "memory-floor")
        floor.stop()
        return {"idle_mib": idle, "levels": levels, "marginal_kib_per_stream": slope}

    def _open_stream_rss(
        self, target: Target, service: Service, url: str, tag: str
    ) -> tuple[float, list[dict[str, Any]], float | None]:
        """Warm ``target`` with 100 fast streams; its idle RSS (MiB), then each of the
        profile's numbers of slow streams held open (RSS on the plateau, KiB per stream over
        idle), and the slope between the two (the marginal cost of one stream, KiB)."""
        p = self.profile
        pid = service.pid
        self.bench(
            target,
            self.raw / tag / "warm",
            [
                "--pacing",
                SUITES["fast"].pacing,
                "--concurrency",
                "100",
                "--duration",
                "3",
                "--ramp",
                "0.5",
            ],
            60,
            f"{tag}/warm",
        )
        self._wait_idle(service, url)
        idle = self._steady_rss(pid, 1.0)
        log(f"{tag}: idle RSS after warm-up {idle:.2f} MiB")
        levels = []
        for n in p.rss_streams:
            rss, open_streams = self._rss_with_streams(target, service, url, n, tag)
            levels.append(
                {
                    "streams": n,
                    "open": open_streams,
                    "rss_mib": rss,
                    "kib_per_stream": (rss - idle) * 1024 / max(open_streams, 1),
                }
            )
            log(
                f"{tag}: {open_streams} streams open: RSS {rss:.2f} MiB "
                f"({levels[-1]['kib_per_stream']:.1f} KiB per stream over idle)"
            )
            self._wait_idle(service, url)
        slope = None
        if len(levels) == 2 and levels[1]["open"] > levels[0]["open"]:
            slope = (
                (levels[1]["rss_mib"] - levels[0]["rss_mib"])
                * 1024
                / (levels[1]["open"] - levels[0]["open"])
            )
        return idle, levels, slope

    def settle(self, target: Target) -> None:
        """Let a `wenxin serve` target finish the previous run before the next one starts.

        Finished streams stay resumable for the resume grace and are dropped together when it
        runs out; a run that starts then would be charged for the previous run's clean-up (a
        step-wise test ends thousands of streams at once, a steady load never does). So wait
        until no stream is in flight, then for the grace. Other relays keep nothing.

        With ``--baseline`` two `wenxin serve` share the relay core, so a run against one also
        waits until the other has no stream in flight and its grace since its last load is
        over: one server's clean-up never lands in the other's measurement.
        """
        if target.serve is None:
            return
        others = {t.serve.name: t for t in self.targets.values() if t.serve is not None}
        until = 0.0
        for name, other in others.items():
            ended = self.load_ended.get(name)
            if other.serve is None or other.serve is target.serve or ended is None:
                continue
            other.serve.wait_for(
                lambda u=other.url: self._in_flight(u) == 0, "streams_in_flight = 0", 60
            )
            until = max(until, ended + SERVE_RESUME_GRACE + 0.5)
        url = target.url
        target.serve.wait_for(lambda: self._in_flight(url) == 0, "streams_in_flight = 0", 60)
        time.sleep(max(SERVE_RESUME_GRACE + 0.5, until - time.monotonic()))

    def _in_flight(self, url: str) -> float:
        text = http_get(f"{url}/metrics")
        match = re.search(r"^wenxin_streams_in_flight\s+([0-9.e+]+)", text, re.M)
        return float(match.group(1)) if match else math.nan

    def _wait_idle(self, serve: Service, url: str) -> None:
        serve.wait_for(lambda: self._in_flight(url) == 0, "streams_in_flight = 0", 60)
        time.sleep(SERVE_RESUME_GRACE + 0.5)  # finished streams are kept this long

    @staticmethod
    def _steady_rss(pid: int, seconds: float) -> float:
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(read_rss_mib(pid))
            time.sleep(0.05)
        return statistics.median(samples)

    def _rss_with_streams(
        self, target: Target, serve: Service, url: str, n: int, tag: str = "memory"
    ) -> tuple[float, int]:
        """Open ``n`` slow streams (one chunk a second, cut at the end); RSS on the plateau."""
        p = self.profile
        ramp = max(1.0, n / 1000)
        duration = ramp + p.rss_plateau + 4
        argv_flags = [
            "--pacing",
            "ttft=0;interval=1;chunks=600;stamp=0",
            "--concurrency",
            str(n),
            "--duration",
            f"{duration:g}",
            "--ramp",
            f"{ramp:g}",
            "--drain",
            "0",
            "--idle-timeout",
            "30",
        ]
        samples: list[tuple[float, float]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(Exception):
                    samples.append((self._in_flight(url), read_rss_mib(serve.pid)))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            self.bench(
                target,
                self.raw / tag / f"open-{n}",
                argv_flags,
                duration + 90,
                f"{tag}/open-{n}",
            )
        finally:
            done.set()
            sampler.join()
        top = max((s[0] for s in samples), default=0)
        plateau = [rss for flying, rss in samples if flying >= top * 0.995 and top > 0]
        if not plateau:
            raise CompareError(f"{tag}: no plateau with {n} streams open")
        return statistics.median(plateau), int(top)

    # ---- SDK throughput --------------------------------------------------------------------

    def sdk(self) -> None:
        p = self.profile
        ours = ["ours-async", "ours-sync"]
        clients = [(c, VENV) for c in ours] + [
            ("openai", PEERS),
            ("openai-aiohttp", PEERS),
            ("qianfan-async", PEERS),
        ]
        if self.base_src is not None:  # each of our clients, then the baseline's
            clients[1:1] = [("ours-async-base", VENV)]
            clients[3:3] = [("ours-sync-base", VENV)]
        rows = {}
        out = self.raw / "sdk"
        out.mkdir(parents=True, exist_ok=True)
        for client, venv in clients:
            env = {"PYTHONPATH": str(self.base_src)} if client.endswith("-base") else {}
            argv = [*self.pin(self.relay_cpu), str(venv / "python"),
                    str(BENCH_DIR / "sdk_throughput.py"), client.removesuffix("-base"),
                    "--url", self.emulator_url, "--streams", str(p.sdk_streams),
                    "--chunks", "64", "--ttft", "0.2", "--interval", "0.02"]  # fmt: skip
            self.rec.add(argv, env)
            done = subprocess.run(  # noqa: S603
                argv,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, **env},
            )
            (out / f"{client}.log").write_text(done.stdout + done.stderr)
            line = next(
                (ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None
            )
            if done.returncode or line is None:
                self.summary["errors"].append(
                    f"sdk/{client}: exit {done.returncode}: "
                    + (done.stderr.strip().splitlines() or [""])[-1][:200]
                )
                log(f"sdk: {client} failed (see {out / (client + '.log')})")
                continue
            rows[client] = json.loads(line)
            log(
                f"sdk: {client}: {rows[client]['cpu_ms_per_1000_chunks']} ms CPU per 1,000 chunks, "
                f"peak RSS {rows[client]['peak_rss_mb']} MB"
            )
        self.summary["sdk"] = {
            "streams": p.sdk_streams,
            "chunks": 64,
            "pacing": "ttft=0.2;interval=0.02",
            "clients": rows,
        }

    # ---- all of it -------------------------------------------------------------------------

    def run(self) -> int:
        t0 = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        raise_fd_limit()
        if self.load_cpu is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {self.load_cpu})  # compare itself stays off the relay core
        status = 0
        with self.stack:
            try:
                self.install()
                if self.args.baseline:
                    self.materialise_baseline()
                self.describe()
                self.start_relays()
                if not self.args.skip_ttft:
                    self.ttft()  # first: per-request overhead, not recovery from the suites
                if self.args.suites:
                    self.run_suites()
                if not self.args.skip_memory and {"serve", "floor"} & set(self.selected_targets):
                    self.memory()
                if not self.args.skip_sdk:
                    self.sdk()
            except CompareError as exc:
                log(f"error: {exc}")
                self.summary["errors"].append(str(exc))
                status = 1
            except KeyboardInterrupt:
                log("interrupted")
                self.summary["errors"].append("interrupted")
                status = 130
            finally:
                log("stopping everything compare started")
        self.summary["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        self.summary["elapsed_s"] = round(time.monotonic() - t0, 1)
        self.summary["commands"] = self.rec.commands
        (self.out / "summary.json").write_text(
            json.dumps(self.summary, indent=2, ensure_ascii=False) + "\n"
        )
        self.plots.mkdir(parents=True, exist_ok=True)
        for key, suite in (self.summary.get("suites") or {}).items():
            svg = max_bar_svg(suite, target_titles(self.summary))
            (self.plots / f"{key}-max-concurrency.svg").write_text(svg)
        (self.out / "RESULTS.md").write_text(render(self.summary, "", self.args))
        if self.args.publish:
            rel = (
                self.out.resolve().relative_to(BENCH_DIR)
                if self.out.resolve().is_relative_to(BENCH_DIR)
                else self.out.resolve()
            )
            (BENCH_DIR / "RESULTS.md").write_text(render(self.summary, f"{rel}/", self.args))
            log(f"wrote {BENCH_DIR / 'RESULTS.md'}")
        change = render_change(self.summary)
        if change:
            print("\n" + "\n".join(change), flush=True)
        log(f"wrote {self.out} in {self.summary['elapsed_s']:.0f} s")
        return status


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (the definition `wenxin bench` uses)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


def step_violations(doc: dict[str, Any] | None, max_p99_ms: float) -> list[str]:
    """Why one step fails `wenxin bench`'s default find-max criteria (empty: it passes)."""
    r = (doc or {}).get("result")
    if not r:
        return ["no result"]
    out = []
    if r["streams_completed"] == 0:
        out.append("no stream completed")
    if r["streams_failed"]:
        reasons = ", ".join(f"{k} {v}" for k, v in r["failures"].items())
        out.append(f"{r['streams_failed']} streams failed ({reasons})")
    if r["chunks_lost"]:
        out.append(f"{r['chunks_lost']} chunks lost")
    p99 = r["lateness_ms"]["p99"]
    if p99 is not None and p99 >= max_p99_ms:
        out.append(f"p99 lateness {p99:.1f} ms ≥ {max_p99_ms:g} ms")
    return out


def step_line(doc: dict[str, Any] | None) -> str:
    r = (doc or {}).get("result")
    if not r:
        return ""
    late = r["lateness_ms"]
    procs = " ".join(f"{p['label'].split()[0]} {p['cpu_mean'] or 0:.0f}%" for p in r["processes"])
    return (
        f"late p50 {late['p50'] or 0:.1f} p99 {late['p99'] or 0:.1f} ms  "
        f"{r['throughput']['chunks_per_s']:.0f} chunks/s  cpu: {procs} load-gen "
        f"{r['client']['cpu_percent']:.0f}%"
    )


def summarize_find_max(doc: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """The row of one target in a suite table, from `wenxin bench --find-max`'s result.json."""
    if not doc or "find_max" not in doc:
        return {"best": None, "error": "no result"}
    fm = doc["find_max"]
    row: dict[str, Any] = {
        "best": fm["best_concurrency"],
        "first_failure": fm["first_failing_concurrency"],
        "limit": fm["limit"],
        "limit_reason": fm["limit_reason"],
        "steps": len(fm["steps"]),
        "retries": fm.get("retries", 0),
        "failure_reasons": next(
            (
                s["violations"]
                for s in fm["steps"]
                if s["concurrency"] == fm["first_failing_concurrency"]
            ),
            [],
        ),
    }
    r = doc.get("result")
    if r:
        row.update(
            late_p50=r["lateness_ms"]["p50"],
            late_p99=r["lateness_ms"]["p99"],
            ttft_p50=r["ttft_ms"]["p50"],
            ttft_p99=r["ttft_ms"]["p99"],
            chunks_per_s=r["throughput"]["chunks_per_s"],
            client_cpu=r["client"]["cpu_percent"],
            lateness_method=r["lateness_method"],
            streams_completed=r["streams_completed"],
            client_cpu_wait=r["client"].get("cpu_wait_percent"),
        )
        for label, wait in (doc.get("cpu_wait_percent") or {}).items():
            slot = "emulator" if label == "emulator" else "relay"
            row.setdefault(f"{slot}_cpu_wait", wait)
        for proc in [relay_process(r), *(p for p in r["processes"] if p["label"] == "emulator")]:
            if proc is None:
                continue
            slot = "emulator" if proc["label"] == "emulator" else "relay"
            row[f"{slot}_cpu"] = proc["cpu_mean"]
            row[f"{slot}_cpu_max"] = proc["cpu_max"]
            row[f"{slot}_rss_mib"] = proc["rss_max_mb"]
        if any(p["label"].startswith(WORKER_LABEL) for p in r["processes"]):
            row["relay_workers"] = sum(p["label"].startswith(WORKER_LABEL) for p in r["processes"])
        if doc.get("redis"):
            row["redis"] = doc["redis"]
        cpu, rate = row.get("relay_cpu"), row.get("chunks_per_s")
        if cpu and rate:
            row["relay_cpu_ms_per_1k"] = cpu * 1e4 / rate
            row["one_core_streams"] = round(row["best"] * 100 / cpu) if row["best"] else None
    # each passed step's CPU per 1,000 chunks (a re-run's last attempt decides): two targets
    # compared at a concurrency both passed are compared at the same load
    last = {st["concurrency"]: st for st in fm["steps"]}
    per_step = {c: relay_cpu_per_1k(st["result"]) for c, st in last.items() if st["passed"]}
    row["step_cpu_ms_per_1k"] = {str(c): v for c, v in sorted(per_step.items()) if v}
    return row


def pacing_chunks(flags: list[str]) -> int | None:
    """The chunks per stream of a `wenxin bench` invocation's ``--pacing`` (None: not set)."""
    if "--pacing" not in flags:
        return None
    match = re.search(r"(?:^|;)chunks=(\d+)", flags[flags.index("--pacing") + 1])
    return int(match.group(1)) if match else None


def redis_cost(
    before: dict[str, float], after: dict[str, float], chunks: int | None
) -> dict[str, Any]:
    """What one `wenxin bench` invocation cost a Redis target's redis-server.

    Redis's CPU per chunk: its CPU time (INFO ``used_cpu_user`` + ``used_cpu_sys``) over
    the invocation, divided by the chunks its server relayed meanwhile (streams ended, from
    the server's ``/metrics``, × the chunks per stream of the pacing). Memory per answer:
    the growth of ``used_memory`` over the growth of the answers whose logs Redis holds
    (two keys each, log and metadata), at the invocation's end, when every answer of it has
    ended and its log is kept for the resume window. Keys that expired meanwhile (an earlier
    invocation's answers leaving after their window) would mix two kinds of answer into the
    difference, so then the memory figure is left out (``expired`` says how many).
    """
    answers = after["streams_ended"] - before["streams_ended"]
    relayed = answers * chunks if chunks else 0
    cpu = after["cpu_s"] - before["cpu_s"]
    held = (after["keys"] - before["keys"]) / 2
    expired = int(after["expired_keys"] - before["expired_keys"])
    grown = after["used_memory"] - before["used_memory"]
    return {
        "cpu_s": round(cpu, 4),
        "answers": int(answers),
        "chunks": int(relayed),
        "cpu_us_per_chunk": cpu * 1e6 / relayed if relayed else None,
        "used_memory_growth": int(grown),
        "answers_held_growth": held,
        "expired_keys": expired,
        # a few answers' worth of keys is within what Redis's own buffers move
        "bytes_per_answer": grown / held if held >= 20 and not expired else None,
    }


def pin_tree(pid: int, cpu: int) -> None:
    """Pin process ``pid`` and its children now running to ``cpu`` (PostgreSQL's postmaster:
    the backends it forks later inherit its affinity)."""
    pids = [pid]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)  # noqa: S603, S607
        pids += [int(p) for p in found.stdout.split()]
    for each in pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(each, {cpu})


def after_peak_figures(doc: dict[str, Any], streams: int) -> dict[str, Any]:
    """The figures of one ``bench/memory.py`` result (its ``memory.json``) that the targets
    table reads: RSS idle, right after the resume windows and a minute after the end."""

    def mib(label: str) -> float:
        return float(doc["probes"][label]["status"]["VmRSS"]) / 2**20

    idle = mib("idle")
    return {
        "streams": streams,
        "errors": doc.get("error_count"),
        "idle_mib": idle,
        "after_mib": mib("after"),
        "later_mib": mib("later"),
        "later_ratio": mib("later") / idle,
    }


def relay_cpu_per_1k(result: dict[str, Any] | None) -> float | None:
    """The relay's CPU ms per 1,000 chunks relayed in one `wenxin bench` result.

    The same figure as the suite tables' (:func:`summarize_find_max`): the first sampled
    process that is not the emulator, its mean CPU (% of a core) over the chunks per second.
    """
    if not result:
        return None
    relay = relay_process(result)
    cpu, rate = (relay or {}).get("cpu_mean"), result["throughput"]["chunks_per_s"]
    return float(cpu * 1e4 / rate) if cpu and rate else None


def relay_process(result: dict[str, Any]) -> dict[str, Any] | None:
    """The relay's figures in one `wenxin bench` result: the first sampled process that is
    not the emulator (LiteLLM's children are listed after its main process), or, for
    ``--workers N``, the sum of the workers' CPU and RSS (``cpu_max``: the sum of each
    worker's maximum, an upper bound)."""
    workers = [p for p in result["processes"] if p["label"].startswith(WORKER_LABEL)]
    if not workers:
        return next((p for p in result["processes"] if p["label"] != "emulator"), None)

    def total(key: str) -> float | None:
        values = [p[key] for p in workers]
        return None if None in values else float(sum(values))

    return {"label": f"{WORKER_LABEL}s ({len(workers)}, summed)", "cpu_mean": total("cpu_mean"),
            "cpu_max": total("cpu_max"), "rss_max_mb": total("rss_max_mb")}  # fmt: skip


def spread(values: list[float]) -> float | None:
    """How far one value strays from the median of ``values``, at most, as a fraction of it.

    None for fewer than two values (one measurement says nothing about its own noise).
    """
    if len(values) < 2:
        return None
    mid = statistics.median(values)
    return max(abs(v / mid - 1) for v in values) if mid else None


def cpu_change(current: list[float], baseline: list[float]) -> dict[str, Any]:
    """Relay CPU per 1,000 chunks of two codes, measured in interleaved rounds of one run.

    ``ratio`` is median(current) / median(baseline). ``noise`` is the largest :func:`spread` of
    the two codes: how far one measurement strayed from the median of its own code in this
    run, under the same load, pinning and background. The verdict: ``regression`` when the
    ratio is above 1 + noise, ``improvement`` when below 1 − noise, ``within noise``
    otherwise; ``unknown`` when either code has fewer than two measurements.
    """
    out: dict[str, Any] = {"current": None, "baseline": None, "ratio": None, "noise": None,
                           "verdict": "unknown"}  # fmt: skip
    if not current or not baseline:
        return out
    cur, base = statistics.median(current), statistics.median(baseline)
    out.update(current=cur, baseline=base, ratio=cur / base if base else None)
    spreads = [spread(current), spread(baseline)]
    if out["ratio"] is None or None in spreads:
        return out
    noise = max(x for x in spreads if x is not None)
    out["noise"] = noise
    if out["ratio"] > 1 + noise:
        out["verdict"] = "regression"
    elif out["ratio"] < 1 - noise:
        out["verdict"] = "improvement"
    else:
        out["verdict"] = "within noise"
    return out


def max_change(current: int | None, baseline: int | None, resolution: float) -> dict[str, Any]:
    """Max streams of two codes from the same search: within one search step or not.

    The search stops once the first failing concurrency is within ``resolution`` of the best
    passing one, so two searches of the same code can end a factor (1 + resolution) apart
    with no noise at all: a ratio in [1 / (1 + resolution), 1 + resolution] is within one
    search step; below, a regression; above, an improvement.
    """
    out: dict[str, Any] = {"ratio": None, "tolerance": 1 + resolution, "verdict": "unknown"}
    if current is None or baseline is None:  # a search without a result
        return out
    if not current or not baseline:  # 0: nothing passed
        if current == baseline == 0:
            out["verdict"] = "within one search step"  # neither sustained anything
        elif baseline and not current:
            out["verdict"] = "regression"
        elif current and not baseline:
            out["verdict"] = "improvement"
        return out
    ratio = current / baseline
    out["ratio"] = ratio
    tol = (1 + resolution) * (1 + 1e-9)  # the boundary itself is one step
    if ratio * tol < 1:
        out["verdict"] = "regression"
    elif ratio > tol:
        out["verdict"] = "improvement"
    else:
        out["verdict"] = "within one search step"
    return out


def baseline_change(s: dict[str, Any]) -> dict[str, Any] | None:
    """The change against ``--baseline`` from a run's summary (None without a baseline)."""
    b = s.get("baseline")
    if not b:
        return None
    rows = []
    for key, suite in (s.get("suites") or {}).items():
        for cur, r in (suite.get("baseline_rounds") or {}).items():
            base = r["baseline"]
            cur_row, base_row = suite["targets"].get(cur, {}), suite["targets"].get(base, {})
            cpu = cpu_change(r["current_cpu_ms_per_1k"], r["baseline_cpu_ms_per_1k"])
            at_max = [cur_row.get("relay_cpu_ms_per_1k"), base_row.get("relay_cpu_ms_per_1k")]
            best = max_change(cur_row.get("best"), base_row.get("best"), b["resolution"])
            rows.append(
                {
                    "suite": key,
                    "target": cur,
                    "baseline_target": base,
                    "concurrency": r["concurrency"],
                    "rounds": r["rounds"],
                    "cpu": cpu,
                    "cpu_at_max": at_max,
                    "cpu_at_max_ratio": at_max[0] / at_max[1] if all(at_max) else None,
                    "best": [cur_row.get("best"), base_row.get("best")],
                    "max": best,
                }
            )
    ttft = {}
    tt = (s.get("ttft") or {}).get("targets") or {}
    if "serve" in tt and "serve-base" in tt:
        cur, base = tt["serve"], tt["serve-base"]
        rounds = [cur.get("round_p50") or [], base.get("round_p50") or []]
        ttft = {
            "added_p50": [cur.get("added_p50"), base.get("added_p50")],
            "added_p99": [cur.get("added_p99"), base.get("added_p99")],
            # how much one server's p50 moved from round to round: the scale of noise
            "round_p50_range": max((max(v) - min(v) for v in rounds if len(v) > 1), default=None),
        }
    regressions = [
        f"{r['suite']}/{r['target']}: relay CPU per 1,000 chunks ×{r['cpu']['ratio']:.3f} "
        f"> 1 + noise {r['cpu']['noise']:.1%}"
        for r in rows
        if r["cpu"]["verdict"] == "regression"
    ] + [
        f"{r['suite']}/{r['target']}: max streams {r['best'][0]} against {r['best'][1]}, "
        f"more than one search step (×{r['max']['tolerance']:g}) lower"
        for r in rows
        if r["max"]["verdict"] == "regression"
    ]
    undecided = [f"{r['suite']}/{r['target']}" for r in rows if r["cpu"]["verdict"] == "unknown"]
    if regressions:
        verdict = "regression beyond noise: " + "; ".join(regressions)
    elif not rows or undecided:
        verdict = "not decided: too few usable measurements" + (
            f" ({', '.join(undecided)})" if undecided else " (no suite measured both servers)"
        )
    else:
        worst = max(r["cpu"]["noise"] for r in rows)
        verdict = f"no regression within noise (the largest noise here: ±{worst:.1%})"
    return {"rows": rows, "ttft": ttft, "verdict": verdict, "ok": not regressions and not
            undecided and bool(rows)}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Report


def max_bar_svg(suite: dict[str, Any], titles: dict[str, str] = TARGET_TITLES) -> str:
    """Horizontal bars: the largest sustained concurrency per target (log scale)."""
    rows = [
        (
            titles[n],
            r.get("best") or 0,
            r.get("first_failure") is None and bool(r.get("best")),
        )
        for n, r in suite["targets"].items()
    ]
    width, bar_left, row_h, top = 820, 330, 34, 56
    height = top + row_h * len(rows) + 40
    top_value = max([v for _, v, _ in rows] + [10])
    decades = math.ceil(math.log10(top_value * 1.2))
    span = width - bar_left - 90

    def x(v: float) -> float:
        return bar_left + (math.log10(max(v, 1)) / decades) * span

    colors = ("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">'
        f"{escape(suite['title'])}</text>",
        f'<text x="{width / 2}" y="42" text-anchor="middle" fill="#555">largest concurrency with '
        "p99 lateness under the criterion and no errors (log scale)</text>",
    ]
    for d in range(decades + 1):
        gx = bar_left + d / decades * span
        out.append(
            f'<line x1="{gx:.1f}" y1="{top - 4}" x2="{gx:.1f}" y2="{top + row_h * len(rows)}" '
            'stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{gx:.1f}" y="{top + row_h * len(rows) + 16}" text-anchor="middle" '
            f'fill="#555">{10**d:,}</text>'
        )
    for i, (label, value, at_limit) in enumerate(rows):
        y = top + i * row_h
        out.append(
            f'<text x="{bar_left - 10}" y="{y + 21}" text-anchor="end">{escape(label)}</text>'
        )
        if value:
            out.append(
                f'<rect x="{bar_left}" y="{y + 6}" width="{x(value) - bar_left:.1f}" '
                f'height="{row_h - 12}" '
                f'fill="{colors[i % len(colors)]}"/>'
            )
        text = f"{value:,}" + (" (search limit)" if at_limit else "") if value else "none passed"
        out.append(f'<text x="{x(value) + 6:.1f}" y="{y + 21}">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _f(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("✅ met" if ok else "❌ missed")


def targets_check(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each goal of the issue."""
    out: list[tuple[str, str, str]] = []
    suites = s.get("suites") or {}
    fast = (suites.get("fast") or {}).get("targets", {})
    ernie = (suites.get("ernie") or {}).get("targets", {})

    def best(rows: dict[str, Any], name: str) -> int | None:
        return (rows.get(name) or {}).get("best")

    serve_fast, lite, nginx = best(fast, "serve"), best(fast, "litellm"), best(fast, "nginx")
    if serve_fast is not None:
        out.append(
            ("fast suite: ≥ 500 concurrent streams", f"{serve_fast:,}", _verdict(serve_fast >= 500))
        )
        if lite is not None:
            ratio = serve_fast / lite if lite else math.inf
            out.append(
                (
                    "fast suite: ≥ 30× LiteLLM (same run)",
                    f"{serve_fast:,} / {lite:,} = {ratio:,.1f}×"
                    if lite
                    else "LiteLLM sustained none",
                    _verdict(ratio >= 30),
                )
            )
        if nginx:
            out.append(
                (
                    "fast suite: ≥ 50 % of nginx (same run)",
                    f"{serve_fast:,} / {nginx:,} = {serve_fast / nginx:.0%}",
                    _verdict(serve_fast / nginx >= 0.5),
                )
            )
    serve_ernie = best(ernie, "serve")
    if serve_ernie is not None:
        limited = (ernie.get("serve") or {}).get("first_failure") is None
        note = " (search limit reached)" if limited and serve_ernie else ""
        out.append(
            (
                "ERNIE-paced: ≥ 2,000 streams",
                f"{serve_ernie:,}{note}",
                _verdict(serve_ernie >= 2000),
            )
        )
        out.append(
            (
                "ERNIE-paced stretch: ≥ 5,000",
                f"{serve_ernie:,}{note}",
                _verdict(serve_ernie >= 5000),
            )
        )
    tt = ((s.get("ttft") or {}).get("targets") or {}).get("serve")
    if tt and "added_p50" in tt:
        out.append(
            (
                "TTFT added at 1 stream, p50 ≤ 1.5 ms",
                f"{tt['added_p50']:.2f} ms",
                _verdict(tt["added_p50"] <= 1.5),
            )
        )
        out.append(
            (
                "TTFT added at 1 stream, p99 ≤ 3 ms",
                f"{tt['added_p99']:.2f} ms",
                _verdict(tt["added_p99"] <= 3.0),
            )
        )
    out += redis_goals(s)
    out += relay_cost_goals(s)
    mem = s.get("memory")
    if mem:
        per = mem.get("marginal_kib_per_stream")
        if per is None and mem["levels"]:
            per = mem["levels"][-1]["kib_per_stream"]
        worst = max([per or 0] + [lv["kib_per_stream"] for lv in mem["levels"]])
        out.append(
            (
                "RSS per open stream ≤ 25 KB",
                f"{worst:.1f} KiB (worst of the measures)",
                _verdict(worst * 1.024 <= 25),
            )
        )
        peak = mem.get("after_peak")
        if peak and peak.get("later_ratio") is not None:
            out.append(
                (
                    "after a peak: RSS within 20 % of idle",
                    f"{peak['later_mib']:.1f} / {peak['idle_mib']:.1f} MiB = "
                    f"{peak['later_ratio'] - 1:+.1%} a minute after {peak['streams']:,} "
                    f"streams ended (`bench/memory.py`)",
                    _verdict(peak["later_ratio"] <= 1.2),
                )
            )
        flat = mem["flat"]
        if flat["growth_mib"] is not None:
            out.append(
                (
                    f"memory flat across {flat['runs']} runs",
                    f"{flat['growth_mib']:+.2f} MiB from run 2 to run {flat['runs']}",
                    _verdict(flat["growth_mib"] <= flat["tolerance_mib"]),
                )
            )
    return out


def same_step(first: dict[str, Any], second: dict[str, Any]) -> tuple[int, float, float] | None:
    """The largest concurrency both find-max rows passed, with each one's relay CPU per
    1,000 chunks there: the two at the same load (``None``: no step in common)."""
    a, b = first.get("step_cpu_ms_per_1k") or {}, second.get("step_cpu_ms_per_1k") or {}
    common = sorted(int(c) for c in set(a) & set(b))
    if not common:
        return None
    c = common[-1]
    return c, a[str(c)], b[str(c)]


def relay_cost_goals(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The relay-cost goals (issue 15): per suite, the OpenAI route's CPU per chunk at most
    3× nginx's and the native route's within 10 % of the OpenAI route's — at the same load
    where both passed a step of the same concurrency (the verdict's figure), each at its
    maximum beside it — and the ERNIE-paced maximum at least 80 % of nginx's."""
    out: list[tuple[str, str, str]] = []
    for key, suite in (s.get("suites") or {}).items():
        rows = suite["targets"]
        name = "fast" if key == "fast" else "ERNIE-paced"
        serve = rows.get("serve") or {}
        for other, goal, limit, form in (
            ("nginx", f"{name}: OpenAI route's relay CPU / 1k chunks ≤ 3× nginx's", 3.0, "{:.1f}×"),
            ("serve-native", f"{name}: native route's relay CPU / 1k chunks ≤ 1.10× the "
             "OpenAI route's", 1.1, "×{:.2f}"),
        ):  # fmt: skip
            row = rows.get(other)
            if row is None or not serve:
                continue
            first, second = (serve, row) if other == "nginx" else (row, serve)
            parts, ratio = [], None
            common = same_step(first, second)
            if common:
                c, mine, theirs = common
                ratio = mine / theirs
                parts.append(f"{mine:.1f} / {theirs:.1f} ms = {form.format(ratio)} "
                             f"(same load, {c:,} streams)")  # fmt: skip
            at_max = first.get("relay_cpu_ms_per_1k"), second.get("relay_cpu_ms_per_1k")
            if at_max[0] and at_max[1]:
                parts.append(f"{form.format(at_max[0] / at_max[1])} each at its maximum")
                ratio = ratio if ratio is not None else at_max[0] / at_max[1]
            if ratio is not None:
                out.append((goal, "; ".join(parts), _verdict(ratio <= limit)))
        nginx = rows.get("nginx") or {}
        if key == "ernie" and serve.get("best") is not None and nginx.get("best"):
            ratio = serve["best"] / nginx["best"]
            out.append(
                (
                    "ERNIE-paced: OpenAI route's max streams ≥ 80 % of nginx's",
                    f"{serve['best']:,} / {nginx['best']:,} = {ratio:.0%}",
                    _verdict(ratio >= 0.8),
                )
            )
    return out


def redis_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Per suite and Redis target: its figures against the in-memory `wenxin serve`.

    ``cpu`` is the same-load comparison (:func:`cpu_change` of the interleaved rounds,
    Redis over in-memory) where the rounds ran, else ``None``; ``cpu_at_max`` each one's CPU
    per 1,000 chunks at its own maximum (two different loads). Redis's CPU per chunk is the
    median over the Redis target's counted same-load steps, else its best step's; memory
    per answer the median over the steps where no key expired meanwhile.
    """
    out = []
    for key, suite in (s.get("suites") or {}).items():
        rows = suite["targets"]
        for name in (*REDIS_TARGETS, *(f"{n}-native" for n in REDIS_TARGETS)):
            row = rows.get(name)
            if row is None:
                continue
            memory = rows.get("serve-native" if name.endswith("-native") else "serve") or {}
            rounds = (suite.get("redis_rounds") or {}).get(name)
            reference = "serve-native" if name.endswith("-native") else "serve"
            cpu = (
                cpu_change(rounds["first_cpu_ms_per_1k"], rounds["other_cpu_ms_per_1k"])
                if rounds
                else None
            )
            costs = [st["redis"] for st in (rounds or {}).get("steps", [])
                     if st["target"] == name and st["counted"] and st.get("redis")]  # fmt: skip
            if not costs and row.get("redis"):
                costs = [row["redis"]]
            per_chunk = [c["cpu_us_per_chunk"] for c in costs if c["cpu_us_per_chunk"]]
            per_answer = [c["bytes_per_answer"] for c in costs if c["bytes_per_answer"]]
            if not per_answer and (row.get("redis") or {}).get("bytes_per_answer"):
                per_answer = [row["redis"]["bytes_per_answer"]]
            at_max = [row.get("relay_cpu_ms_per_1k"), memory.get("relay_cpu_ms_per_1k")]
            best = [row.get("best"), memory.get("best")]
            one_core = [row.get("one_core_streams"), memory.get("one_core_streams")]
            out.append(
                {
                    "suite": key,
                    "target": name,
                    "reference": reference,
                    "workers": row.get("relay_workers", 1),
                    "best": best,
                    "best_ratio": best[0] / best[1] if best[0] is not None and best[1] else None,
                    "limited": row.get("first_failure") is None and bool(best[0]),
                    "cpu": cpu,
                    "rounds_concurrency": (rounds or {}).get("concurrency"),
                    "cpu_at_max": at_max,
                    "cpu_at_max_ratio": at_max[0] / at_max[1] if all(at_max) else None,
                    "one_core": one_core,
                    "redis_cpu_us_per_chunk": statistics.median(per_chunk) if per_chunk else None,
                    "redis_bytes_per_answer": (
                        statistics.median(per_answer) if per_answer else None
                    ),
                    "chunks_per_answer": SUITES[key].pacing.split("chunks=")[1].split(";")[0],
                }
            )
    return out


def redis_goals(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The issue's Redis goals: CPU per 1,000 chunks ≤ 1.25× in-memory (fast suite), ERNIE-
    paced streams on one core ≥ 80 % of in-memory."""
    out: list[tuple[str, str, str]] = []
    for r in redis_rows(s):
        if r["target"] not in ("serve-redis", "serve-redis-native"):
            continue
        route = " (native API: the event log)" if r["target"].endswith("-native") else ""
        goal = f"fast{route}: relay CPU / 1k chunks, Redis ≤ 1.25× in-memory"
        if r["suite"] == "fast":
            cpu = r["cpu"]
            if cpu and cpu["ratio"] is not None:
                noise = f" ± {cpu['noise']:.0%}" if cpu["noise"] is not None else ""
                measured = (
                    f"{cpu['current']:.1f} / {cpu['baseline']:.1f} ms = ×{cpu['ratio']:.2f}{noise} "
                    f"(same load, {r['rounds_concurrency']:,} streams)"
                )
                out.append((goal, measured,
                            _verdict(cpu["ratio"] <= 1.25)))  # fmt: skip
            elif r["cpu_at_max_ratio"] is not None:
                out.append((goal, f"×{r['cpu_at_max_ratio']:.2f} (each at its maximum)",
                            _verdict(r["cpu_at_max_ratio"] <= 1.25)))  # fmt: skip
        if r["suite"] == "ernie" and r["best_ratio"] is not None:
            out.append(
                (
                    f"ERNIE-paced{route}: streams on one core, Redis ≥ 80 % of in-memory",
                    f"{r['best'][0]:,} / {r['best'][1]:,} = {r['best_ratio']:.0%}"
                    + (" (search limit reached)" if r["limited"] else ""),
                    _verdict(r["best_ratio"] >= 0.8),
                )
            )
    return out


def render_redis(s: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """The Redis section of RESULTS.md (empty when no Redis target ran)."""
    rows = redis_rows(s)
    if not rows:
        return []
    lines = [
        "## Redis: the scale-out configuration against the in-memory mode",
        "",
        *(
            [
                "The Redis targets keep their store in a private PostgreSQL (`--postgres`); "
                "`serve` keeps SQLite.",
                "",
            ]
            if s.get("postgres")
            else []
        ),
        "`wenxin serve --redis-url` (per-key limits, stream leases, the event log and cancel in "
        "Redis), each Redis target with a private `redis-server` (no persistence, loopback) on "
        "the load core, against the in-memory `wenxin serve` (`serve`) of the same run. "
        "*Same load*: both at one load (half the smaller maximum) in interleaved rounds; "
        "the ratio of the medians, ± how far one round strayed from its own median (the noise "
        "of this run). *At max*: each at its own maximum (two loads). *Redis CPU / chunk*: "
        "INFO `used_cpu_user` + `used_cpu_sys` over a run, over the chunks relayed (streams "
        "ended × chunks per stream). *Redis memory / answer*: the growth of `used_memory` over "
        "the answers whose logs it holds at the end of a run (all ended, kept for the resume "
        "window), runs where no key expired meanwhile.",
        "",
        "| suite | target | max streams (ratio to in-memory) | relay CPU / 1k chunks, same load "
        "| relay CPU / 1k chunks at max (ratio) | one core (Redis / in-memory) "
        "| Redis CPU / chunk | Redis memory / answer |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        cpu = r["cpu"]
        same = "–"
        if cpu and cpu["ratio"] is not None:
            noise = f" ± {cpu['noise']:.0%}" if cpu["noise"] is not None else ""
            same = (f"{cpu['current']:.1f} / {cpu['baseline']:.1f} ms = "
                    f"**×{cpu['ratio']:.2f}**{noise} at {r['rounds_concurrency']:,}")  # fmt: skip
        ratio = f" ({r['best_ratio']:.0%})" if r["best_ratio"] is not None else ""
        at_max = f"{_f(r['cpu_at_max'][0], 1)} / {_f(r['cpu_at_max'][1], 1)} ms" + (
            f" (×{r['cpu_at_max_ratio']:.2f})" if r["cpu_at_max_ratio"] else ""
        )
        per_answer = r["redis_bytes_per_answer"]
        lines.append(
            f"| {r['suite']} | {titles[r['target']]} | {_f(r['best'][0])}{ratio} | {same} "
            f"| {at_max} | {_f(r['one_core'][0])} / {_f(r['one_core'][1])} "
            f"| {_f(r['redis_cpu_us_per_chunk'], 2, ' µs')} "
            f"| {_f(per_answer / 1000 if per_answer else None, 1, ' KB')} "
            f"({r['chunks_per_answer']} chunks) |"
        )
    lines += [""]
    if any(r["workers"] > 1 for r in rows):
        lines += [
            "**2 workers on this machine.** `serve-workers2` is not pinned: its two workers, "
            "the emulator, the load generator and its redis-server share the machine's two "
            "cores, so its maximum is bounded by the load generator and the emulator as much "
            "as by the server, and its CPU is the *sum* over both workers (what the answers "
            "cost, not how fast one core goes). It shows whether a second worker adds "
            "capacity here, not what two workers do on a machine with cores to spare.",
            "",
        ]
    return lines


def floor_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Per suite with floor rounds and per target in them: the median of its same-load CPU
    per 1,000 chunks, its ratio to nginx's and to the floor's (``None`` where one is missing),
    and the number of counted rounds."""
    out = []
    for key, suite in (s.get("suites") or {}).items():
        rounds = suite.get("floor_rounds")
        if not rounds:
            continue
        medians = {
            name: statistics.median(values) if values else None
            for name, values in rounds["cpu_ms_per_1k"].items()
        }

        def ratio(value: float | None, ref: float | None) -> float | None:
            return value / ref if value is not None and ref else None

        for name, median in medians.items():
            out.append(
                {
                    "suite": key,
                    "target": name,
                    "concurrency": rounds["concurrency"],
                    "counted": len(rounds["cpu_ms_per_1k"][name]),
                    "rounds": rounds["rounds"],
                    "cpu_ms_per_1k": median,
                    "spread": spread(rounds["cpu_ms_per_1k"][name]),
                    "to_nginx": ratio(median, medians.get("nginx")),
                    "to_floor": ratio(median, medians.get("floor")),
                }
            )
    return out


def render_floor(s: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """The floor's section of RESULTS.md: same-load CPU per chunk, and RSS per open stream of
    the bare pipe beside `wenxin serve`'s (nothing when no floor target was measured)."""
    rows = floor_rows(s)
    mem = s.get("memory_floor")
    if not rows and not mem:
        return []
    lines = [
        "## The floor: the cheapest Python relay on this stack",
        "",
        "`bench/floor_relay.py`: uvicorn (httptools, uvloop) and one pooled aiohttp session, "
        "the upstream's bytes passed through as they arrive (floor), or each SSE event decoded, "
        "`json.loads`-ed and an OpenAI chunk `json.dumps`-ed (floor + parse), or the answer "
        "streamed with the SDK's `AsyncClient` and each event `json.dumps`-ed (floor + SDK); "
        "the cyclic collector off, as `wenxin serve` runs (from 2026-12-05). Same-load rounds: "
        "every target at one load, interleaved (the order rotates by one each round); relay CPU "
        "per 1,000 chunks is the median of the counted rounds. See `bench/PROFILE.md`.",
        "",
    ]
    if rows:
        lines += [
            "| suite | target | streams | counted rounds | relay CPU / 1k chunks (spread) "
            "| × nginx | × floor |",
            "|---|---|--:|--:|--:|--:|--:|",
        ]
        for r in rows:
            cpu = _f(r["cpu_ms_per_1k"], 1, " ms")
            if r["spread"] is not None:
                cpu += f" (±{r['spread']:.0%})"
            lines.append(
                f"| {r['suite']} | {titles.get(r['target'], r['target'])} | {r['concurrency']:,} "
                f"| {r['counted']}/{r['rounds']} | {cpu} | {_f(r['to_nginx'], 2, '×')} "
                f"| {_f(r['to_floor'], 2, '×')} |"
            )
        lines.append("")
    if mem:
        levels = ", ".join(
            f"{lv['open']:,} open: {lv['kib_per_stream']:.1f} KiB" for lv in mem["levels"]
        )
        marginal = mem.get("marginal_kib_per_stream")
        lines += [
            f"Memory of the bare pipe (a fresh floor relay, measured as `wenxin serve` is below): "
            f"idle {mem['idle_mib']:.2f} MiB; per stream over idle: {levels}"
            + (f"; marginal {marginal:.1f} KiB per stream." if marginal is not None else "."),
            "",
        ]
    return lines


def target_titles(s: dict[str, Any]) -> dict[str, str]:
    """Every target's title in the report; the baseline's names its ref and commit."""
    titles = dict(TARGET_TITLES)
    b = s.get("baseline")
    if b:
        at = b["short"] if b["commit"].startswith(b["ref"]) else f"{b['ref']} = {b['short']}"
        titles["serve-base"] = f"wenxin serve at {at} (OpenAI route)"
        titles["serve-base-native"] = f"wenxin serve at {at} (native API, stored conversations)"
    return titles


def _cell(text: Any) -> str:
    """``text`` made safe for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_change(s: dict[str, Any]) -> list[str]:
    """The "change against the baseline" section (Markdown lines; none without --baseline)."""
    ch = baseline_change(s)
    if ch is None:
        return []
    b = s["baseline"]
    current = f"the checked-out tree at {b['current_commit']}" + (
        " with uncommitted changes in `src/`" if b["current_dirty"] else ""
    )
    lines = [
        "## Change against the baseline",
        "",
        f"Current: {current}. Baseline: `{_cell(b['ref'])}` = {b['short']} "
        f"({_cell(b['subject'])}), wenxin-stream {b['version']}, run from its own source with "
        "the project's `.venv`, with the same configuration, API key set-up, pinning and "
        "settling; the two servers are never under load at the same time.",
        "",
        f"**Verdict: {_cell(ch['verdict'])}.**",
        "",
    ]
    if ch["rows"]:
        lines += [
            "| suite | route | relay CPU / 1k chunks at one load: current / baseline "
            "| ratio | noise | at each one's max: current / baseline | max streams: current / "
            "baseline | verdict |",
            "|---|---|--:|--:|--:|--:|--:|---|",
        ]
    for r in ch["rows"]:
        cpu, mx = r["cpu"], r["max"]
        at_max = f"{_f(r['cpu_at_max'][0], 0)} / {_f(r['cpu_at_max'][1], 0)} ms"
        if r["cpu_at_max_ratio"]:
            at_max += f" ({r['cpu_at_max_ratio']:.2f}×)"
        best = f"{_f(r['best'][0])} / {_f(r['best'][1])}"
        if mx["ratio"]:
            best += f" ({mx['ratio']:.2f}×)"
        lines.append(
            f"| {r['suite']} | {'OpenAI' if r['target'] == 'serve' else 'native'} "
            f"| {_f(cpu['current'])} / {_f(cpu['baseline'])} ms "
            f"({r['concurrency']:,} streams, {r['rounds']} rounds each) "
            f"| {_f(cpu['ratio'], 3, '×')} "
            f"| {'±' + format(cpu['noise'], '.1%') if cpu['noise'] is not None else '–'} "
            f"| {at_max} | {best} | CPU {cpu['verdict']}; max {mx['verdict']} |"
        )
    tt = ch["ttft"]
    if tt:
        lines += [
            *([""] if ch["rows"] else []),
            "| TTFT added at one stream | current | baseline | current − baseline |",
            "|---|--:|--:|--:|",
        ]
        for p in ("p50", "p99"):
            cur, base = tt[f"added_{p}"]
            diff = cur - base if cur is not None and base is not None else None
            lines.append(
                f"| {p} | {_f(cur, 2, ' ms')} | {_f(base, 2, ' ms')} "
                f"| {'–' if diff is None else format(diff, '+.2f') + ' ms'} |"
            )
    rng = tt.get("round_p50_range") if tt else None
    lines += [
        "",
        "How the verdict is reached: **relay CPU per 1,000 chunks** (the figure scheduling "
        "noise hardly moves) from interleaved rounds after each suite's searches, both servers "
        "at one load (half the smaller of their two maxima, so that neither is at its edge), "
        "in the order current, baseline / baseline, current / …; ratio of the medians; "
        "*noise* is how far one measurement strayed from the median of its own code in this "
        "run, and a ratio above 1 + noise is a regression (a step that lost chunks or streams "
        "is not counted). **Max streams** is a regression when the current maximum is lower "
        "than the baseline's by more than one search step "
        f"(×{1 + b['resolution']:g} in this profile). The CPU at each one's maximum is one "
        "step each at two different loads: shown, not judged. **TTFT added** is shown, not "
        "judged"
        + (
            f" (the per-round p50 of one server moved by up to {rng:.2f} ms in this run)"
            if rng is not None
            else ""
        )
        + "."
        + (" The memory section measures the current tree only." if s.get("memory") else "")
        + (
            " The SDK section runs the baseline's clients too, once each (no noise estimate)."
            if s.get("sdk")
            else ""
        ),
        "",
    ]
    return lines


def render(s: dict[str, Any], prefix: str, args: argparse.Namespace) -> str:
    """RESULTS.md from the summary; ``prefix`` leads from the file to the run directory."""
    m = s.get("machine", {})
    lines = [
        "# wenxin serve against nginx and LiteLLM",
        "",
        f"Run `{s['run']}` ({s['profile']} profile), started {s['started_at']}, took "
        f"{_f(s.get('elapsed_s'), 0)} s. Generated by `bench/compare"
        f"{' --quick' if s['profile'] == 'quick' else ''}`; raw results in "
        f"[`{prefix or './'}`]({prefix or './'}) (`summary.json`, `raw/`, `logs/`).",
        "",
    ]
    if s["profile"] == "quick":
        lines += [
            "> **Quick run**: short steps and a coarse search (each maximum is within about "
            "a factor of 1.5 of the true one). Run `bench/compare` for the real figures.",
            "",
        ]
    if s["errors"]:
        lines += ["**Problems during the run:**", ""]
        lines += [f"- {e.splitlines()[0] if e else e}" for e in s["errors"]] + [""]
    lines += ["## Targets", "", "| goal | measured | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in targets_check(s)] + [""]
    analysis = "PROFILE.md" if prefix else "../../PROFILE.md"
    lines += [
        f"Where a target is missed, [`bench/PROFILE.md`]({analysis}) shows the profiles, what "
        "was changed because of them and what remains.",
        "",
    ]
    lines += render_change(s)
    titles = target_titles(s)
    lines += render_redis(s, titles)
    lines += render_floor(s, titles)

    lines += [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m.get('cpu_model')} × {m.get('cores')} cores |",
        f"| memory | {m.get('memory')} |",
        f"| OS / kernel | {m.get('os')} / {m.get('kernel')} |",
        f"| Python | {m.get('python')} |",
        f"| open-file limit | {m.get('fd_limit')} (no process may hold more than "
        f"{FD_LIMIT:,} descriptors) |",
        f"| pinning | {m.get('pinning')} (`taskset`) |",
        f"| emulator's cyclic GC | {m.get('emulator_gc', 'on')} (`--emulator-gc`; see "
        "bench/README.md) |",
        f"| load average at start / end | {' '.join(m.get('loadavg_start', []))} / "
        f"{' '.join(m.get('loadavg_end', []))} |",
        "",
        "The machine is shared (other work may run on both cores during the run): the load "
        "average says how quiet it was.",
        "",
        "## Versions",
        "",
        "| component | version |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_cell(v)} |" for k, v in (s.get("versions") or {}).items()] + [""]

    for key, suite in (s.get("suites") or {}).items():
        lines += [
            f"## Suite {suite['title']}",
            "",
            f"Pacing `{suite['pacing']}`. Max streams: the largest concurrency whose step had no "
            f"failed stream, no lost chunk and p99 chunk lateness under "
            f"{args.max_p99_lateness_ms:g} ms, found by doubling then bisecting; a failed step "
            f"is run {args.retries + 1} times before it counts. The other figures are those of "
            "that step. Lateness is measured against the pacing schedule. CPU is % of one core; "
            "*wait* is the time the process was runnable but waiting for its core (other work "
            "on the machine). *CPU / 1k chunks* is the relay's CPU time per 1,000 chunks "
            "relayed at that step, and *one core* the streams that cost would allow at 100 % "
            "of the core — figures that scheduling noise hardly moves.",
            "",
            "| target | max streams | first failure (why) | lateness p50 / p99 ms "
            "| TTFT p50 / p99 ms | chunks/s | relay CPU mean / max | relay CPU / 1k chunks "
            "| one core | relay RSS | relay wait | emulator CPU / wait | load gen CPU / wait |",
            "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for name, r in suite["targets"].items():
            best = r.get("best")
            best_text = "none passed" if not best else f"**{best:,}**"
            if best and r.get("first_failure") is None:
                best_text += f" (limit: {r.get('limit_reason')})"
            fail = "–"
            if r.get("first_failure"):
                fail = f"{r['first_failure']:,} ({'; '.join(r.get('failure_reasons') or [])})"
            lines.append(
                f"| {titles[name]} | {best_text} | {fail} "
                f"| {_f(r.get('late_p50'))} / {_f(r.get('late_p99'))} "
                f"| {_f(r.get('ttft_p50'))} / {_f(r.get('ttft_p99'))} "
                f"| {_f(r.get('chunks_per_s'), 0)} "
                f"| {_f(r.get('relay_cpu'), 0, '%')} / {_f(r.get('relay_cpu_max'), 0, '%')} "
                f"| {_f(r.get('relay_cpu_ms_per_1k'), 0, ' ms')} "
                f"| {_f(r.get('one_core_streams'), 0)} "
                f"| {_f(r.get('relay_rss_mib'), 1, ' MiB')} "
                f"| {_f(r.get('relay_cpu_wait'), 0, '%')} "
                f"| {_f(r.get('emulator_cpu'), 0, '%')} / {_f(r.get('emulator_cpu_wait'), 0, '%')} "
                f"| {_f(r.get('client_cpu'), 0, '%')} / {_f(r.get('client_cpu_wait'), 0, '%')} |"
            )
        lines += ["", f"![max concurrency]({prefix}plots/{key}-max-concurrency.svg)", ""]
        plot_links = []
        for name in suite["targets"]:
            for plot, what in (
                ("find_max.svg", "lateness vs concurrency"),
                ("latency_cdf.svg", "CDFs at the max"),
            ):
                if (BENCH_DIR / prefix / "plots" / f"{key}-{name}-{plot}").exists() or not prefix:
                    plot_links.append(f"[{name}: {what}]({prefix}plots/{key}-{name}-{plot})")
        if plot_links:
            lines += ["Per-target plots: " + " · ".join(plot_links), ""]

    tt = s.get("ttft")
    if tt:
        lines += [
            "## Time to first token added at one stream",
            "",
            f"Sequential requests (one stream at a time) with pacing `{tt['pacing']}`, in "
            "interleaved rounds per target. Added = the relay's percentile minus the direct "
            "percentile.",
            "",
            "| target | requests | TTFT p50 ms | TTFT p99 ms | max ms | added p50 ms "
            "| added p99 ms |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for name, r in tt["targets"].items():
            lines.append(
                f"| {titles[name]} | {r['n']} | {_f(r['p50'], 2)} | {_f(r['p99'], 2)} "
                f"| {_f(r['max'], 2)} "
                f"| {_f(r.get('added_p50'), 2)} | {_f(r.get('added_p99'), 2)} |"
            )
        lines.append("")

    mem = s.get("memory")
    if mem:
        lines += [
            "## Memory of wenxin serve",
            "",
            f"A fresh `wenxin serve`, warmed with 100 streams; idle RSS {mem['idle_mib']:.2f} MiB. "
            "Slow streams (one chunk a second) held open; RSS is the median on the plateau."
            + (
                " The current tree only (the baseline is not measured here)."
                if s.get("baseline")
                else ""
            ),
            "",
            "| streams open | RSS MiB | per stream over idle |",
            "|--:|--:|--:|",
        ]
        for lv in mem["levels"]:
            lines.append(
                f"| {lv['open']:,} | {lv['rss_mib']:.2f} | {lv['kib_per_stream']:.1f} KiB |"
            )
        if mem.get("marginal_kib_per_stream") is not None:
            lines.append(
                f"| marginal (between the two) | | {mem['marginal_kib_per_stream']:.1f} KiB |"
            )
        f = mem["flat"]
        lines += [
            "",
            f"Flatness: {f['runs']} identical runs of {f['streams']:,} streams for "
            f"{f['duration_s']:g} s (fast pacing); RSS once no stream is in flight after each: "
            + ", ".join(f"{v:.2f}" for v in f["rss_after_mib"])
            + f" MiB (growth from run 2 to the last {_f(f['growth_mib'], 2, ' MiB')}, tolerance "
            f"{_f(f['tolerance_mib'], 2, ' MiB')}).",
            "",
        ]
        peak = mem.get("after_peak")
        if peak:
            lines += [
                f"After a peak (`bench/memory.py --streams {peak['streams']}`: a fresh server "
                "and emulator of its own, native streams paced `ttft=0.3;interval=1.5;"
                "chunks=20` held open together, then ended; RSS once their resume windows "
                "and the server's next quiet check have passed, and a minute after the end): "
                f"idle {peak['idle_mib']:.1f} MiB, after the windows {peak['after_mib']:.1f} MiB "
                f"({peak['after_mib'] / peak['idle_mib'] - 1:+.1%}), a minute after the end "
                f"{peak['later_mib']:.1f} MiB (**{peak['later_ratio'] - 1:+.1%}**); "
                f"{_f(peak['errors'])} errors. Its probes: [`{peak['summary']}`]"
                f"({prefix}{peak['summary']}).",
                "",
            ]

    sdk = s.get("sdk")
    if sdk:
        lines += [
            "## SDK throughput",
            "",
            f"`bench/sdk_throughput.py`: {sdk['streams']} concurrent streams of {sdk['chunks']} "
            f"chunks (`{sdk['pacing']}`) against the emulator's v2 route, one client per process "
            "pinned to the relay core (free by then).",
            "",
            "| client | complete | chunks | CPU s | CPU ms / 1,000 chunks | peak RSS MB "
            "| RSS after imports MB | wall s |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        at = ""
        if s.get("baseline"):
            at = f" at {s['baseline']['short']} (baseline)"
        names = {
            "ours-async": "wenxin_stream AsyncClient",
            "ours-async-base": f"wenxin_stream AsyncClient{at}",
            "ours-sync": "wenxin_stream Client (threads)",
            "ours-sync-base": f"wenxin_stream Client (threads){at}",
            "openai": "openai-python (httpx)",
            "openai-aiohttp": "openai-python (aiohttp)",
            "qianfan-async": "qianfan (async)",
        }
        for client, r in sdk["clients"].items():
            lines.append(
                f"| {names.get(client, client)} | {r['complete']}/{r['streams']} | {r['chunks']:,} "
                f"| {r['cpu_s']:.2f} | {r['cpu_ms_per_1000_chunks']:.1f} | {r['peak_rss_mb']:.1f} "
                f"| {r['baseline_rss_mb']:.1f} | {r['wall_s']:.2f} |"
            )
        lines.append("")

    lines += ["## Commands", "", "Exactly what ran, in order (secrets as variables).", "", "```"]
    lines += [*s.get("commands", []), "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/compare",
        description="Measure wenxin serve against nginx, LiteLLM and the bare emulator; "
        "write bench/RESULTS.md. See bench/README.md.",
    )
    parser.add_argument("--quick", action="store_true", help="about 5 minutes, coarse figures")
    parser.add_argument("--suites", default="fast,ernie", help="comma-separated: fast,ernie")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (the -base ones need --baseline, "
        "which adds them by itself)",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="also measure serve's native API (stored conversations) in the suites",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure `wenxin serve` as of git REF (a commit, main~3, a tag) in the same "
        "run: targets serve-base (and serve-base-native with --native), a change table and a "
        "verdict; see bench/README.md",
    )
    parser.add_argument(
        "--baseline-rounds",
        type=int,
        metavar="N",
        help="--baseline: interleaved rounds per suite that measure both servers at one load, "
        "the source of the CPU comparison and its noise (default 5, --quick 3; at least 2)",
    )
    parser.add_argument("--step-duration", type=float, help="seconds per find-max step")
    parser.add_argument("--max-concurrency", type=int, help="cap every search")
    parser.add_argument("--max-p99-lateness-ms", type=float, default=50.0, help="criterion (50)")
    parser.add_argument(
        "--retries", type=int, default=1, help="runs of a failed find-max step before it counts (1)"
    )
    parser.add_argument(
        "--floor-streams",
        type=int,
        metavar="N",
        help="the load of the floor's same-load rounds (default: half the smallest maximum of "
        "nginx, the floor targets and serve; on a loaded machine a fixed load keeps the CPU "
        "per chunk from being sampled at a few dozen streams)",
    )
    parser.add_argument("--skip-ttft", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-sdk", action="store_true")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="the Redis targets also keep their store in a private PostgreSQL (--database-url)",
    )
    parser.add_argument(
        "--services-core",
        choices=("load", "relay"),
        default="load",
        help="where the Redis targets' redis-server and PostgreSQL run: on the load core with "
        "the emulator (default), or on the relay's core (the relay and its shared state on one "
        "core, away from the load generator's bursts)",
    )
    parser.add_argument("--no-install", action="store_true", help="do not run install_relays.sh")
    parser.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        help="write bench/RESULTS.md (default: yes for a full run, no for --quick, whose "
        "results directory is git-ignored)",
    )
    parser.add_argument("--out", help="run directory (default bench/results/<run>)")
    parser.add_argument(
        "--emulator-gc",
        choices=("on", "off"),
        default="off",
        help="the emulator's cyclic garbage collector (off: its full collections, ~100 ms at "
        "a thousand streams, would cap every target; see bench/README.md)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="niceness of the measured processes (-10 as root: other work on a shared machine "
        "then disturbs the figures less; 0 to turn off)",
    )
    args = parser.parse_args(argv)
    args.suites = [x for x in args.suites.split(",") if x]
    args.targets = [x for x in args.targets.split(",") if x]
    if args.native:  # every `wenxin serve` target's native twin
        args.targets += [
            f"{name}-native"
            for name in ("serve", *REDIS_TARGETS)
            if name in args.targets and f"{name}-native" not in args.targets
        ]
        if "serve-native" not in args.targets:
            args.targets.append("serve-native")
    for name in args.suites:
        if name not in SUITES:
            parser.error(f"unknown suite {name!r}")
    for name in args.targets:
        if name not in TARGETS:
            parser.error(f"unknown target {name!r}")
        if name in BASELINE_TWINS.values() and not args.baseline:
            parser.error(f"target {name!r} needs --baseline REF")
    if args.baseline:
        if not args.baseline.strip() or args.baseline.startswith("-"):
            parser.error(f"--baseline: not a git ref: {args.baseline!r}")
        if not set(BASELINE_TWINS) & set(args.targets):
            parser.error("--baseline compares `wenxin serve`: --targets must include serve")
        args.targets += [
            twin
            for name, twin in BASELINE_TWINS.items()
            if name in args.targets and twin not in args.targets
        ]
    if args.baseline_rounds is not None and args.baseline_rounds < 2:
        parser.error("--baseline-rounds must be at least 2 (the noise comes from the repeats)")
    args.native = any(name.endswith("-native") for name in args.targets)
    if args.publish is None:
        args.publish = not args.quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    return Compare(args).run()


if __name__ == "__main__":
    sys.exit(main())
