"""What a stream start costs `wenxin serve`, and what a burst of starts does to running streams.

Two measurements, each of this tree against a baseline tree (``--baseline-src``: its ``src/``
from ``git archive``, run with the same ``.venv`` Python and ``PYTHONPATH`` at it), both
servers up at once (in-memory state, the SQLite store, an API key with limits, the audit log:
the production features ``bench/compare`` turns on), each alone on CPU 0 when ``taskset``
exists, the emulator and the load on CPU 1:

``cost`` (the default): server CPU per stream start. Each round sends ``--streams`` streams of
a minimal answer (the emulator's ``ttft=0;interval=0;chunks=1``: the start, one chunk and the
end dominate) with ``wenxin bench`` (``--concurrency`` at a time, keep-alive connections; the
native route renews its conversation every 10 questions, as ``wenxin bench`` does) to one
server, and reads that server's process CPU (``utime + stime`` from ``/proc``, every thread)
before and after. Rounds alternate between the servers and the routes, so a noisy neighbour
hits both alike; the figure is the median per server and route, and their ratio. With
``--profile`` one more round per route is recorded with ``py-spy record --gil`` on each server
(only the thread holding the GIL is sampled: a thread waiting on a queue is not work) and
every sample is put in the part of the start it belongs to (:data:`PARTS`, the innermost frame
that names one), so the CPU per start is split into its parts; the collapsed stacks stay in
the run's temporary directory. With ``--floor`` the OpenAI route's rounds also go to
``bench/floor_relay.py`` (bytes passed through) and its ``--parse`` twin, on the same core:
what a start costs the cheapest Python relays on this stack (uvicorn, one aiohttp request),
the floor under any start of ours (``ratio_to_floor``).

``burst``: ``--running`` ERNIE-paced streams (``ttft=0.5;interval=0.4;chunks=12``) run on the
OpenAI route for ``--duration`` s (one ``wenxin bench``, started over 3 s); at
``--burst-at`` s another ``wenxin bench`` starts ``--burst`` streams at once (``--ramp 0``).
The running streams' chunk lateness is read from the first ``wenxin bench``: its p99 over the
whole window, and the worst of its one-second p99s (its progress lines) from the burst on.
Servers alternate per round. Each server paces its starts as its own default has it
(this tree: on, 4 ms slices) unless ``--start-slice`` sets this tree's (``WENXIN_START_SLICE``;
0 turns it off) and ``--baseline-start-slice`` the baseline's.

    mkdir -p /tmp/base && git archive main src | tar -x -C /tmp/base
    .venv/bin/python bench/start_cost.py --baseline-src /tmp/base/src --profile
    .venv/bin/python bench/start_cost.py --baseline-src /tmp/base/src --mode burst
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _servers import (
    FLOOR_MODES,
    Processes,
    cpu_seconds,
    pin,
    start_emulator,
    start_floor,
    start_serve,
    thread_cpu,
)

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv" / "bin"
WENXIN = VENV / "wenxin"
UPSTREAM_KEY = "bce-v3/ALTAK-bench/starts"
MINIMAL = "ttft=0;interval=0;chunks=1;stamp=0"
ERNIE = "ttft=0.5;interval=0.4;chunks=12"

PARTS: list[tuple[str, tuple[str, ...]]] = [
    # (part, patterns of the frame's file or function); the innermost frame that matches wins
    ("audit", ("_audit.py",)),
    (
        "store (SQLite worker, conversations, exchange, final record)",
        ("_store.py", "_schema.py", "_sqlite.py", "_sql.py", "_checkpoints.py"),
    ),
    ("metrics", ("_metrics.py",)),
    ("keys and access", ("_keys.py", "_access.py")),
    (
        "admission (limits, budgets, token estimate)",
        # ("/_limits.py": the server's key limits, not uvicorn's protocol, `_http_limits.py`)
        ("/_limits.py", "_limits_redis.py", "_budgets.py", "_token_estimate.py", "_ratelimit"),
    ),
    ("usage records at the end", ("_usage.py", "_usage_writer.py")),
    (
        "SDK: request building and validation",
        (
            "_requests.py",
            "_validation.py",
            "_parameters.py",
            "_dialects.py",
            "_images.py",
            "_models.py",
            "_credentials.py",
            "_tokens",
        ),
    ),
    (
        "SDK: stream core, SSE and v2 parsing",
        (
            "_stream_core.py",
            "_stream_parser.py",
            "_wire_v2.py",
            "_sse.py",
            "_accumulate.py",
            "_events.py",
            "_retry.py",
            "_timeouts.py",
        ),
    ),
    (
        "upstream HTTP (aiohttp, our transport)",
        ("aiohttp", "_transport_aiohttp.py", "yarl", "multidict"),
    ),
    ("SDK: client shell (AsyncChatStream)", ("_async_client.py", "_client_base.py")),
    ("relay (Generation, Subscription, task)", ("_relay.py", "_aio.py")),
    (
        "route: answer start, encode, write",
        (
            "_routes_openai.py",
            "_routes_streams.py",
            "_connection.py",
            "_answers.py",
            "_completion_request.py",
            "_routes_conversations",
            "_upstream.py",
        ),
    ),
    ("request decoding, routing, safety net", ("_http.py", "_app.py", "_asgi.py")),
    (
        "uvicorn (HTTP parse, response write)",
        ("httptools_impl", "_http_limits.py", "flow_control", "h11_impl"),
    ),
    ("garbage collector", ("_gc.py",)),
]


PIN = True
"""Pin the servers to CPU 0 and the emulator and the load to CPU 1 (``--no-pin``: not)."""


class Servers:
    """The emulator and the two servers (``base``, ``ours``), stopped on exit."""

    def __init__(
        self,
        work: Path,
        baseline: Path,
        start_slice: float | None = None,
        baseline_slice: float | None = None,
        floors: bool = False,
        redis: bool = False,
    ) -> None:
        self.work = work
        self._procs = Processes(work)
        self._services = contextlib.ExitStack()
        self._redis = redis
        self.emulator = start_emulator(self._procs, enabled=PIN)
        self.servers: dict[str, tuple[int, str, str]] = {}  # tag → (pid, url, key)
        self.servers["base"] = self._serve("base", baseline, baseline_slice)
        self.servers["ours"] = self._serve("ours", None, start_slice)
        self.floors: dict[str, tuple[int, str, str]] = {}
        """``bench/floor_relay.py`` (``floor``) and with ``--parse`` (``floor-parse``): the
        cheapest Python relays on this stack, their starts measured on the OpenAI route."""
        if floors:
            for tag in ("floor", "floor-parse"):
                self.floors[tag] = self._floor(tag)

    def _floor(self, tag: str) -> tuple[int, str, str]:
        proc, url = start_floor(self._procs, tag, self.emulator, mode=FLOOR_MODES[tag], pinned=PIN)
        return proc.pid, url, UPSTREAM_KEY  # the key goes upstream

    def _serve(
        self, tag: str, src: Path | None, slice_s: float | None = None
    ) -> tuple[int, str, str]:
        env = {"WENXIN_START_SLICE": f"{slice_s:g}"} if slice_s is not None else {}
        fleet: list[str] = []
        if self._redis:  # a private redis-server each, on the load's CPU
            sys.path.insert(0, str(ROOT / "tests"))
            from services import redis_server

            redis = self._services.enter_context(redis_server())
            fleet = ["--redis-url", redis.url]
            if PIN:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(redis.process.pid, {1})
        served = start_serve(
            self._procs, tag, self.emulator, src=src, upstream_key=UPSTREAM_KEY,
            key_name="starts", env=env, pinned=PIN, args=fleet,
        )  # fmt: skip
        return served.pid, served.url, served.key

    def stop(self) -> None:
        self._procs.stop()  # the servers first, then their Redis
        self._services.close()


def bench_argv(
    url: str, key: str, route: str, pacing: str, concurrency: int, out: Path, **flags: str
) -> list[str]:
    argv = [
        *pin(1, enabled=PIN), str(WENXIN), "bench", "--target", route, "--url", url,
        "--api-key", key,
        "--model", "ernie-4.0-8k", "--pacing", pacing, "--concurrency", str(concurrency),
        "--out", str(out), "--drain", "20",
    ]  # fmt: skip
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", value]
    return argv


def completed(out: Path) -> int:
    result = json.loads((out / "result.json").read_text())
    run = result.get("result", result)
    return int(run["streams_completed"])


def cost_round(
    pid: int, url: str, key: str, route: str, streams: int, conc: int, out: Path
) -> tuple[float, int]:
    """(server CPU seconds, streams completed) of one round of minimal answers; the split
    between the loop's thread and the others is added to :data:`THREADS`."""
    argv = bench_argv(url, key, route, MINIMAL, conc, out, requests=str(streams), ramp="0.2",
                      quiet="")  # fmt: skip
    argv.remove("")  # --quiet takes no value
    before, threads = cpu_seconds(pid), thread_cpu(pid)
    subprocess.run(argv, check=True, capture_output=True)  # noqa: S603
    time.sleep(0.5)  # the answers' ends (records, audit) are done by then
    done = completed(out)
    for name, cpu in thread_cpu(pid).items():
        THREADS[(pid, route, name)].append((cpu - threads[name]) / done * 1000)
    return cpu_seconds(pid) - before, done


THREADS: dict[tuple[int, str, str], list[float]] = collections.defaultdict(list)
"""(server pid, route, ``loop`` or ``threads``) → ms of CPU per start, per round."""


def part_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for part, patterns in PARTS:
            if any(p in frame for p in patterns):
                return part
    return "event loop and the rest"


def split(collapsed: Path) -> dict[str, float]:
    """The share of the samples in each part (:data:`PARTS`)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            counts[part_of(stack.split(";"))] += int(count)
    total = sum(counts.values()) or 1
    return {part: n / total for part, n in counts.most_common()}


def profiled_round(
    pid: int, url: str, key: str, route: str, streams: int, conc: int, out: Path, collapsed: Path
) -> tuple[dict[str, float], float, int]:
    spy = subprocess.Popen(  # noqa: S603
        [str(VENV / "py-spy"), "record", "--pid", str(pid), "--format", "raw", "--rate", "500",
         "--output", str(collapsed), "--nonblocking", "--gil"],
        stdout=subprocess.DEVNULL, stderr=collapsed.with_suffix(".log").open("wb"),
    )  # fmt: skip
    time.sleep(1.0)
    cpu, done = cost_round(pid, url, key, route, streams, conc, out)
    spy.send_signal(2)  # SIGINT: py-spy writes what it has
    spy.wait(30)
    return (split(collapsed) if collapsed.exists() else {}), cpu, done


def run_cost(args: argparse.Namespace, servers: Servers, work: Path) -> dict[str, Any]:
    per: dict[str, list[float]] = collections.defaultdict(list)
    for tag, (pid, url, key) in servers.servers.items():  # warm-up, not counted
        for route in args.routes:
            cost_round(pid, url, key, route, 50, args.concurrency, work / f"warm-{tag}-{route}")
    for tag, (pid, url, key) in servers.floors.items():
        cost_round(pid, url, key, "openai", 50, args.concurrency, work / f"warm-{tag}")
    for r in range(args.rounds):
        for route in args.routes:
            order = ["base", "ours"] if r % 2 == 0 else ["ours", "base"]
            for tag in order:
                pid, url, key = servers.servers[tag]
                out = work / f"r{r}-{route}-{tag}"
                cpu, done = cost_round(pid, url, key, route, args.streams, args.concurrency, out)
                per[f"{route}/{tag}"].append(cpu / done * 1000)
                print(f"round {r} {route:6} {tag}: {cpu:.2f} s CPU, {done} streams, "
                      f"{per[f'{route}/{tag}'][-1]:.3f} ms per start", flush=True)  # fmt: skip
        for tag, (pid, url, key) in servers.floors.items():  # the OpenAI route's floor
            out = work / f"r{r}-{tag}"
            cpu, done = cost_round(pid, url, key, "openai", args.streams, args.concurrency, out)
            per[f"openai/{tag}"].append(cpu / done * 1000)
            print(
                f"round {r} openai {tag}: {per[f'openai/{tag}'][-1]:.3f} ms per start", flush=True
            )
    medians = {k: statistics.median(v) for k, v in per.items()}
    result: dict[str, Any] = {
        "streams_per_round": args.streams,
        "concurrency": args.concurrency,
        "redis": args.redis,
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "ms_per_start": {k: [round(x, 3) for x in v] for k, v in per.items()},
        "median_ms_per_start": {k: round(v, 3) for k, v in medians.items()},
        "ratio_ours_to_base": {
            route: round(medians[f"{route}/ours"] / medians[f"{route}/base"], 3)
            for route in args.routes
        },
        "per_round_ratios": {
            route: [
                round(o / b, 3)
                for o, b in zip(per[f"{route}/ours"], per[f"{route}/base"], strict=True)
            ]
            for route in args.routes
        },
    }
    if servers.floors and "openai" in args.routes:
        result["ratio_to_floor"] = {
            f"openai/{tag}/{floor}": round(medians[f"openai/{tag}"] / medians[f"openai/{floor}"], 3)
            for tag in ("base", "ours")
            for floor in servers.floors
        }
    result["thread_ms_per_start_median"] = {
        f"{route}/{tag}/{name}": round(statistics.median(THREADS[(pid, route, name)]), 3)
        for tag, (pid, _, _) in servers.servers.items()
        for route in args.routes
        for name in ("loop", "threads")
    }
    if args.profile:
        profiles: dict[str, Any] = {}
        for route in args.routes:
            for tag in ("base", "ours"):
                pid, url, key = servers.servers[tag]
                shares, cpu, done = profiled_round(
                    pid, url, key, route, args.streams, args.concurrency,
                    work / f"profile-{route}-{tag}",
                    work / f"{route}-{tag}.collapsed.txt",
                )  # fmt: skip
                per_start = cpu / done * 1000
                profiles[f"{route}/{tag}"] = {
                    "ms_per_start": round(per_start, 3),
                    "parts_ms": {p: round(s * per_start, 3) for p, s in shares.items()},
                }
        result["profiles"] = profiles
    return result


def late_after(progress: str, t_burst: float) -> float | None:
    """The worst one-second p99 lateness (ms) of the progress lines from ``t_burst`` on."""
    worst = None
    for line in progress.splitlines():
        m = re.search(r"\[\s*([0-9.]+)s\].*p99 late\s+([0-9.]+) ms", line)
        if m and float(m.group(1)) >= t_burst:
            value = float(m.group(2))
            worst = value if worst is None else max(worst, value)
    return worst


def burst_round(
    pid: int, url: str, key: str, args: argparse.Namespace, out: Path, burst: int
) -> dict[str, Any]:
    running = bench_argv(url, key, "openai", ERNIE, args.running, out / "running",
                         duration=f"{args.duration:g}", ramp="3", warmup="4")  # fmt: skip
    cpu0 = cpu_seconds(pid)
    load = subprocess.Popen(running, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
    t0 = time.monotonic()
    if burst:
        time.sleep(max(0.0, args.burst_at - (time.monotonic() - t0)))
        argv = bench_argv(url, key, "openai", ERNIE, burst, out / "burst",
                          requests=str(burst), ramp="0", quiet="")  # fmt: skip
        argv.remove("")
        subprocess.run(argv, check=False, capture_output=True)  # noqa: S603
    _, err = load.communicate()
    cpu = cpu_seconds(pid) - cpu0
    result = json.loads((out / "running" / "result.json").read_text())
    run = result.get("result", result)
    burst_done = completed(out / "burst") if burst else 0
    return {
        "p99_lateness_ms": run["lateness_ms"]["p99"],
        "max_lateness_ms": run["lateness_ms"].get("max"),
        "worst_1s_p99_after_burst_ms": late_after(err.decode(errors="replace"), args.burst_at),
        "running_failed": run["streams_failed"],
        "burst_completed": burst_done,
        "server_cpu_s": round(cpu, 2),
    }


def run_burst(args: argparse.Namespace, servers: Servers, work: Path) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in range(args.rounds):
        order = ["base", "ours"] if r % 2 == 0 else ["ours", "base"]
        for tag in order:
            pid, url, key = servers.servers[tag]
            for burst in ([0] if args.steady else []) + [args.burst]:
                out = work / f"burst-r{r}-{tag}-{burst}"
                row = burst_round(pid, url, key, args, out, burst)
                rounds[f"{tag}/burst={burst}"].append(row)
                print(f"round {r} {tag} burst {burst}: {json.dumps(row)}", flush=True)
                time.sleep(3)  # the resume windows and connections settle
    return {
        "running": args.running,
        "burst": args.burst,
        "redis": args.redis,
        "burst_at_s": args.burst_at,
        "duration_s": args.duration,
        "load_average": os.getloadavg(),
        "rounds": rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--mode", choices=("cost", "burst"), default="cost")
    parser.add_argument("--routes", nargs="+", default=["openai", "native"])
    parser.add_argument("--streams", type=int, default=1500, help="cost: streams per round")
    parser.add_argument("--concurrency", type=int, default=20, help="cost: streams at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cost: split with py-spy")
    parser.add_argument("--running", type=int, default=250, help="burst: running streams")
    parser.add_argument("--burst", type=int, default=250, help="burst: streams started at once")
    parser.add_argument("--burst-at", type=float, default=10.0, help="burst: seconds in")
    parser.add_argument("--duration", type=float, default=20.0, help="burst: seconds of load")
    parser.add_argument("--steady", action="store_true", help="burst: also a round without one")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--start-slice",
        type=float,
        help="this tree's admission pacing (WENXIN_START_SLICE; 0: off; default: its own)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="cost: also the floor relays' starts (bench/floor_relay.py, bytes / --parse)",
    )
    parser.add_argument(
        "--baseline-start-slice",
        type=float,
        help="the baseline's admission pacing (default: its own)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="no taskset (a machine busy with other work)"
    )
    parser.add_argument(
        "--redis", action="store_true", help="both servers with --redis-url (a private Redis each)"
    )
    args = parser.parse_args()
    global PIN
    PIN = not args.no_pin
    out = args.out = args.out or ROOT / "bench" / "results" / f"start_{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="start-cost-"))
    servers = Servers(
        work, args.baseline_src, args.start_slice, args.baseline_start_slice,
        floors=args.floor and args.mode == "cost", redis=args.redis,
    )  # fmt: skip
    try:
        run = run_cost if args.mode == "cost" else run_burst
        result = run(args, servers, work)
    finally:
        servers.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if args.profile:  # the collapsed stacks stay for a closer look
        print(f"py-spy's collapsed stacks: {work}/<route>-<server>.collapsed.txt")
    else:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
