"""Profile one `wenxin serve` under one `wenxin bench` load: where the relay's CPU goes.

Starts what `bench/compare` starts for one target — the emulator (load core), and `wenxin
serve` alone on the relay core, optionally with `--redis-url` to a private redis-server (load
core) and `--database-url` to a private PostgreSQL (the tests' own, unpinned) — runs one
`wenxin bench` step at a pacing and concurrency, and meanwhile records the server with
`py-spy record` (collapsed stacks, `--idle` off) for the middle of the step. It prints, and
writes to ``<out>/profile.json``, the server's CPU per 1,000 chunks over the step
(`/proc/<pid>/stat`), the context switches per answer of its event loop's thread and of the
others (`/proc/<pid>/task/*/status`), and the top frames by inclusive and self share of the
samples; the server's own view at the end (its ``/metrics``, saved as ``metrics.txt``: the TTFT
it added, the upstream's TTFT, the event loop's lag, and with admission pacing on how many
starts went on at once and how many waited, and how long: ``paced_starts``) and, with
``--redis``, Redis's commands over the step (``INFO commandstats``: calls and µs of Redis CPU
per ended stream). It also samples, second by second, the CPU of the server, the emulator, the
load generator (and Redis): ``cpu_percent_by_second``, and over the measurement window their
median, 90th percentile and lowest second (``cpu_steady_percent``): a search step reports only
the mean, and a server fails on its busiest seconds. The ramp and the warm-up are one answer's
length of the pacing unless given (as the search's steps), and py-spy records after the
warm-up.

    .venv/bin/python bench/profile_serve.py --route native --redis --postgres \\
        --pacing ernie --concurrency 250 --out bench/results/profile-native-redis-pg

``--route floor`` (``floor-parse``, ``floor-sdk``) profiles ``bench/floor_relay.py`` (with
``--parse``, ``--sdk``) in the server's place, the same way: the cheapest relay Python can be
on this stack (issue 15's floor; ``bench/PROFILE.md``), and that relay with the SDK in its
pipe. ``--native-frames`` shows the C frames under the Python ones (uvloop, httptools,
aiohttp's parser, the kernel's calls), where most of the floor's CPU is.
``--gil`` samples only the thread holding the GIL: the shares are then of the Python CPU, not
diluted by the event loop's waits in epoll or the store's threads' waits.

``--perf`` records the server with Linux ``perf record`` (999 Hz, every thread, no call
graphs) instead of py-spy, and splits its CPU by shared object: the interpreter's own loop
(``libpython``: bytecode, objects, dicts), the kernel (sockets, epoll, futexes), the C
allocator, uvloop, the HTTP parsers. Each object's share of the samples times the step's CPU
per answer gives ``perf_ms_per_answer``; this is how much of a relay's cost is Python
running at all, which py-spy cannot say (it names the Python frames, not the work of the C
code under them; the kernel's share shows as ``[kernel.kallsyms]``). It needs the ``perf``
binary (Debian's ``linux-perf``) and the rights to record the process (root, as here).

Needs py-spy (a dev dependency: `scripts/install` puts it in `.venv`), root or ptrace
rights, and two cores. The figures are for deciding what to change; compare's same-load
rounds are for judging it.
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
import threading
import time
import urllib.request
from pathlib import Path

from _servers import (
    FLOOR_MODES,
    Processes,
    add_server_env,
    context_switches,
    cpu_seconds,
    ended_streams,
    env_assignments,
    pin,
    sample_value,
    start_emulator,
    start_floor,
    start_serve,
    thread_cpu,
)

from wenxin_stream.bench import ProcSampler, parse_pacing

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
WENXIN = VENV / "wenxin"
PACINGS = {
    "fast": ("ttft=0.2;interval=0.02;chunks=64;stamp=0", 64),
    "ernie": ("ttft=0.5;interval=0.4;chunks=12;stamp=0", 12),
}
UPSTREAM_KEY = "bce-v3/ALTAK-bench/profile"


def histogram_quantiles(text: str, name: str, labels: str = "") -> dict[str, float | None]:
    """Upper bounds of the buckets holding the p50 and p99 of histogram ``name`` (the series
    whose labels contain ``labels``) in a ``/metrics`` text, and its count."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{") and labels in line:
            le = re.search(r'le="([^"]+)"', line)
            if le:
                buckets.append((float(le.group(1)), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float | None] = {"count": total}
    for q in (50, 99):
        out[f"p{q}_le"] = next((b for b, n in buckets if n >= total * q / 100), None)
    return out


def redis_commands(
    url: str, *, reset: bool = False, per: float = 0.0
) -> list[tuple[str, int, float]]:
    """Redis's commands since the last ``reset``, most CPU first: (command, calls, µs of
    Redis CPU per ended stream when ``per`` is given, else in all). Scripts count under
    ``evalsha``; the commands they run count under their own names too."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        if reset:
            client.config_resetstat()
            return []
        stats = client.info("commandstats")
    finally:
        client.close()
    rows = [
        (name.removeprefix("cmdstat_"), int(v["calls"]), float(v["usec"]) / (per or 1.0))
        for name, v in stats.items()
    ]
    return [(n, c, round(u, 1)) for n, c, u in sorted(rows, key=lambda r: -r[2])[:12]]


class CpuSeries:
    """CPU (% of one core) of some processes, second by second, while the load runs: a
    thread takes a reading of each (``wenxin bench``'s :class:`ProcSampler`) every
    :attr:`interval` seconds. A step's mean mixes its busiest seconds with quieter ones (a
    ramp shorter than an answer leaves a hole in every generation of starts), and a server
    fails on its busiest."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        self.interval = interval
        self.t0 = time.monotonic()
        self.samplers = {name: ProcSampler(pid, name) for name, pid in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-series", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:  # the first reading is the base of the first second's
            for sampler in self.samplers.values():
                sampler.sample(time.monotonic() - self.t0)
            if self._stop.wait(self.interval - (time.monotonic() - self.t0) % self.interval):
                return

    def stop(self) -> None:
        """Stop sampling (the last partial interval is not kept)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def by_second(self) -> dict[str, list[float]]:
        """Each process's CPU, one figure per interval."""
        return {
            name: [round(cpu, 1) for _, cpu, _ in sampler.samples]
            for name, sampler in self.samplers.items()
        }

    def summary(self, start: float, end: float) -> dict[str, dict[str, float | None]]:
        """Per process, over the seconds that ended in ``[start, end]`` (seconds since the
        load started): the median, the 90th percentile and the lowest second."""
        out: dict[str, dict[str, float | None]] = {}
        for name, sampler in self.samplers.items():
            inside = sorted(round(cpu, 1) for t, cpu, _ in sampler.samples if start <= t <= end)
            if not inside:
                out[name] = {"median": None, "p90": None, "min": None}
                continue
            out[name] = {
                "median": round(statistics.median(inside), 1),
                "p90": inside[min(len(inside) - 1, int(0.9 * len(inside)))],
                "min": inside[0],
            }
        return out


def summarise(collapsed: Path, top: int) -> dict[str, list[tuple[str, float]]]:
    """Inclusive and self shares of the frames in py-spy's collapsed output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r" \((.*/)?([^/]*)\)", r" (\2)", f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if not total:
        return {"inclusive": [], "self": []}
    return {
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top)],
        "self": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
        "samples": [("total", float(total))],
    }


def record_py_spy(pid: int, args: argparse.Namespace, path: Path) -> None:
    """``py-spy record`` of process ``pid`` for ``args.record`` seconds, collapsed stacks
    into ``path`` (``--native-frames`` and ``--gil`` as ``args`` say)."""
    spy = [str(VENV / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
           "--duration", f"{args.record:g}", "--rate", "250", "--output", str(path)]  # fmt: skip
    # py-spy refuses --native with --nonblocking: native frames pause the process
    spy.append("--native" if args.native_frames else "--nonblocking")
    if args.gil:  # the Python CPU alone: no thread waiting in epoll, a queue or a socket
        spy.append("--gil")
    done = subprocess.run(spy, check=False, capture_output=True, text=True)  # noqa: S603
    if done.returncode:
        print(f"py-spy failed: {done.stderr.strip()[-500:]}", file=sys.stderr)


def record_perf(pid: int, seconds: float, path: Path) -> None:
    """``perf record`` of process ``pid`` (all its threads) for ``seconds``, into ``path``."""
    perf = shutil.which("perf")
    if perf is None:
        print("perf is not installed (Debian: linux-perf)", file=sys.stderr)
        return
    command = [perf, "record", "-F", "999", "-p", str(pid), "-o", str(path), "--",
               "sleep", f"{seconds:g}"]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True)  # noqa: S603
    if done.returncode:
        print(f"perf record failed: {done.stderr.strip()[-500:]}", file=sys.stderr)


def perf_shares(path: Path, least: float = 0.5) -> dict[str, float]:
    """The share (%) of ``perf record``'s samples in each shared object, largest first;
    those under ``least`` % together as ``other``."""
    perf = shutil.which("perf")
    if perf is None:  # (`record_perf` said so)
        return {}
    report = subprocess.run(  # noqa: S603
        [perf, "report", "-i", str(path), "--stdio", "--sort", "dso", "-g", "none",
         "-F", "sample,dso"],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    samples: collections.Counter[str] = collections.Counter()
    for line in report.stdout.splitlines():
        count, _, dso = line.strip().partition(" ")
        if count.isdigit() and dso.strip():
            name = dso.strip()
            samples[re.sub(r"\.cpython-\d+.*\.so$|\.so[.\d]*$", "", name)] += int(count)
    total = sum(samples.values())
    if not total:
        return {}
    shares: dict[str, float] = {}
    other = 0.0
    for name, count in samples.most_common():
        share = 100 * count / total
        if share < least:
            other += share
        else:
            shares[name] = round(share, 1)
    if other:
        shares["other"] = round(other, 1)
    return shares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--route",
        choices=("native", "openai", "floor", "floor-parse", "floor-sdk"),
        default="native",
    )
    parser.add_argument("--redis", action="store_true", help="--redis-url to a private Redis")
    parser.add_argument("--postgres", action="store_true", help="--database-url (needs --redis)")
    parser.add_argument("--pacing", choices=sorted(PACINGS), default="ernie")
    parser.add_argument("--concurrency", type=int, default=250)
    parser.add_argument("--duration", type=float, default=16.0)
    parser.add_argument(
        "--ramp", type=float,
        help="seconds to start them all (default: one answer's length, as compare's search)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=float, help="seconds not measured (default: the ramp)")
    parser.add_argument("--record", type=float, default=8.0, help="seconds of py-spy")
    parser.add_argument("--no-profile", action="store_true", help="CPU figure only")
    parser.add_argument("--native-frames", action="store_true", help="py-spy --native")
    parser.add_argument("--perf", action="store_true", help="perf record: CPU by shared object")
    parser.add_argument(
        "--native-turns", type=int, default=10, help="native: questions per conversation"
    )
    parser.add_argument(
        "--gil", action="store_true", help="py-spy --gil: only the thread holding the GIL"
    )
    parser.add_argument("--src", help="run wenxin_stream from this src/ (a baseline tree)")
    add_server_env(parser)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # A ramp shorter than an answer makes every later generation of starts a wave as dense as
    # the ramp's (each worker starts its next stream as its last ends): one answer's length
    # spreads them evenly, as the search does
    answer_s = parse_pacing(PACINGS[args.pacing][0]).answer_seconds
    args.ramp = answer_s if args.ramp is None else args.ramp
    args.warmup = args.ramp if args.warmup is None else args.warmup
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "tests"))
    from services import postgres_server, redis_server

    src_env = {"PYTHONPATH": str(Path(args.src).resolve())} if args.src else {}
    with contextlib.ExitStack() as stack:
        procs = Processes(out)
        stack.callback(procs.stop)
        emulator = start_emulator(procs, env=src_env)
        fleet: list[str] = []
        redis_url = None
        if args.redis:
            redis = stack.enter_context(redis_server())
            redis_url = redis.url
            fleet += ["--redis-url", redis.url]
            with contextlib.suppress(OSError):
                os.sched_setaffinity(redis.process.pid, {1})
        if args.postgres:
            fleet += ["--database-url", stack.enter_context(postgres_server()).url]
        if args.route.startswith("floor"):  # bench/floor_relay.py in the server's place
            key = UPSTREAM_KEY  # passed on to the emulator, as nginx does
            serve, url = start_floor(procs, "floor", emulator, mode=FLOOR_MODES[args.route])
        else:
            served = start_serve(
                procs, "serve", emulator, src=args.src, upstream_key=UPSTREAM_KEY,
                key_name="profile", data=out / "serve-data", args=fleet,
                key_args=fleet[-2:] if args.postgres else (),
                env=env_assignments(args.server_env),
            )  # fmt: skip
            serve, url, key = served.proc, served.url, served.key
        pacing, chunks = PACINGS[args.pacing]
        bench = [
            *pin(1), str(WENXIN), "bench", "--url", url,
            "--target", "openai" if args.route.startswith("floor") else args.route,
            "--model", "ernie-4.0-8k", "--quiet", "--out", str(out / "bench"),
            "--pacing", pacing, "--concurrency", str(args.concurrency),
            "--duration", f"{args.duration:g}", "--ramp", f"{args.ramp:g}",
            "--warmup", f"{args.warmup:g}",
            "--drain", "15", "--time-limit", f"{args.duration + 60:g}",
            "--api-key", key, "--pid", str(serve.pid), "--label", "wenxin serve",
            "--native-turns", str(args.native_turns),
        ]  # fmt: skip
        time.sleep(1.0)
        if redis_url:  # Redis's own account of the step: its commands' CPU (INFO commandstats)
            redis_commands(redis_url, reset=True)
        cpu0, ends0, wall0 = cpu_seconds(serve.pid), ended_streams(url), time.monotonic()
        threads0, switches0 = thread_cpu(serve.pid), context_switches(serve.pid)
        load = subprocess.Popen(bench, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        watched = {"server": serve.pid, "emulator": procs.procs[0].pid, "load": load.pid}
        if redis_url:
            watched["redis"] = redis.process.pid
        series = CpuSeries(watched)
        collapsed = out / "collapsed.txt"
        perf_data = out / "perf.data"
        for earlier in (collapsed, perf_data):  # an earlier run's into this --out: not this one's
            earlier.unlink(missing_ok=True)
        if not args.no_profile:  # in the measurement window: not the ramp's new connections
            time.sleep(max(0.0, min(args.warmup + 1, args.duration - args.record)))
            if args.perf:
                record_perf(serve.pid, args.record, perf_data)
            else:
                record_py_spy(serve.pid, args, collapsed)
        _, err = load.communicate()
        series.stop()
        cpu1, ends1, wall1 = cpu_seconds(serve.pid), ended_streams(url), time.monotonic()
        threads1, switches1 = thread_cpu(serve.pid), context_switches(serve.pid)
        metrics = ""
        if not args.route.startswith("floor"):  # the server's own view: what it adds, lag
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:  # noqa: S310
                metrics = response.read().decode()
            (out / "metrics.txt").write_text(metrics)
        result_file = out / "bench" / "result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        streams = ends1 - ends0
        doc: dict[str, object] = {
            "route": args.route,
            "redis": args.redis,
            "postgres": args.postgres,
            "pacing": args.pacing,
            "concurrency": args.concurrency,
            "native_turns": args.native_turns,
            "src": args.src,
            "server_env": args.server_env,
            "load_average": os.getloadavg(),
            "server_cpu_s": round(cpu1 - cpu0, 3),
            "wall_s": round(wall1 - wall0, 1),
            "streams_ended": streams,
            "cpu_ms_per_1k_chunks": round(1e6 * (cpu1 - cpu0) / (streams * chunks), 1)
            if streams
            else None,
            "cpu_ms_per_answer": round(1e3 * (cpu1 - cpu0) / streams, 3) if streams else None,
            "threads_cpu_s": {
                name: round(threads1[name] - threads0.get(name, 0.0), 3)
                for name in sorted(threads1)
                if threads1[name] - threads0.get(name, 0.0) > 0
            },
            "context_switches_per_answer": {
                name: round((switches1[name] - switches0[name]) / streams, 1) if streams else None
                for name in sorted(switches1)
            },
            "ttft_ms": {
                k: result.get("result", {}).get("ttft_ms", {}).get(k) for k in ("p50", "p99")
            },
            "lateness_ms": {
                k: result.get("result", {}).get("lateness_ms", {}).get(k) for k in ("p50", "p99")
            },
            "bench_stderr": err.decode(errors="replace")[-500:],
            # the measurement window's seconds (after the warm-up, before the load ends)
            "cpu_steady_percent": series.summary(args.warmup + 1, args.duration),
            "cpu_percent_by_second": series.by_second(),
        }
        if metrics:  # bucket bounds (s), over the whole run (warm-up included)
            view: dict[str, object] = {
                "ttft_added": histogram_quantiles(metrics, "wenxin_ttft_seconds", 'part="server"'),
                "ttft_upstream": histogram_quantiles(
                    metrics, "wenxin_ttft_seconds", 'part="upstream"'
                ),
                "loop_lag": histogram_quantiles(metrics, "wenxin_event_loop_lag_seconds"),
            }
            waited = sample_value(metrics, 'wenxin_paced_starts_total{turn="waited"}')
            if waited is not None:  # the admission pacer is on: how many starts it held back
                view["paced_starts"] = {
                    "at_once": sample_value(metrics, 'wenxin_paced_starts_total{turn="at_once"}'),
                    "waited": waited,
                    "wait": histogram_quantiles(metrics, "wenxin_start_pacer_wait_seconds"),
                }
            doc["server_view"] = view
        if redis_url:
            doc["redis_commands"] = redis_commands(redis_url, per=streams)
        procs.stop()  # the server first, before its Redis and PostgreSQL
        if collapsed.exists():
            doc["profile"] = summarise(collapsed, args.top)
        if perf_data.exists():
            shares = perf_shares(perf_data)
            doc["perf_shares_percent"] = shares
            per_answer = doc["cpu_ms_per_answer"]
            if isinstance(per_answer, float):
                doc["perf_ms_per_answer"] = {
                    dso: round(per_answer * share / 100, 3) for dso, share in shares.items()
                }
        (out / "profile.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
        print(json.dumps({k: v for k, v in doc.items() if k != "profile"}, indent=1))
        for kind in ("inclusive", "self"):
            print(f"-- {kind}")
            for frame, share in doc.get("profile", {}).get(kind, []):  # type: ignore[union-attr]
                print(f"{share:6.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
