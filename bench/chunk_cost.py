"""The relay's CPU per chunk: `wenxin serve`'s process CPU per 1,000 chunks, this tree against a
baseline tree, on the OpenAI route and the native route (issue 15 item 1), in one run.

One emulator (``wenxin emulate --ttft 0 --interval 0 --v2-interval 0``, its cyclic collector
off) and two in-memory servers (this tree; the baseline's ``src/``, run with the same ``.venv``
Python and ``PYTHONPATH`` at it; each with its SQLite store and a key whose limits never bite)
stay up for the whole run. A round sends ``--answers`` streamed answers of ``--chunks`` chunks
(the ``[[wenxin:fault …]]`` pacing ``--pacing``), ``--concurrency`` at a time, through one
route of one server with ``wenxin bench --requests``, and reads that server's process CPU
(``utime + stime`` from ``/proc``) before and after — after the answers' ends are recorded
(the server's ``/metrics`` counts them). Rounds alternate between the trees (and the order
flips every round), so a noisy neighbour hits both alike. With ``taskset`` and two cores the
servers run on CPU 0 (never loaded together), the emulator and the load generator on CPU 1.

The denominator is the chunks the upstream sent (answers × ``--chunks``). A round whose client
saw fewer (``chunks_lost``: deltas coalesced because the relay fell behind) or a failed stream
is reported and left out of the medians: it relayed fewer, larger frames.

``--micro N`` measures instead, in N alternating pairs of processes (``_chunk_relay_micro.py``
under each tree's ``src/``), the relay's own work per chunk with no SDK and no sockets: a real
``Generation`` fed one chunk per upstream "read", read by the route's real relay loop into a
``send`` that keeps nothing, less the harness's own cost per chunk (measured alone in the same
process). Less of the path, less noise.

Per route it prints each round's figure, the median per tree, the ratio this / baseline, the
noise (the largest distance of one round from its own tree's median), each round's paired
ratio (the two trees back to back) and their median, and the native / OpenAI ratio of each
tree; ``--out`` gets the same as JSON.

    mkdir -p /tmp/chunk-base && git archive main src | tar -x -C /tmp/chunk-base
    .venv/bin/python bench/chunk_cost.py --baseline-src /tmp/chunk-base/src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _servers import (
    Processes,
    cpu_seconds,
    ended_streams,
    env_assignments,
    pin,
    start_emulator,
    start_serve,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = ROOT / ".venv" / "bin"
UPSTREAM_KEY = "bce-v3/ALTAK-bench/chunk-cost"
ROUTES = ("openai", "native")


class Server:
    """One `wenxin serve` of a tree (``src`` ``None``: this one)."""

    def __init__(
        self,
        tag: str,
        src: Path | None,
        emulator: str,
        procs: Processes,
        env: dict[str, str] | None = None,
    ) -> None:
        self.tag = tag
        self.served = start_serve(procs, tag, emulator, src=src, upstream_key=UPSTREAM_KEY, env=env)
        self.proc, self.url, self.key = self.served.proc, self.served.url, self.served.key


def one_round(server: Server, route: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Load ``server`` through ``route``; its CPU per 1,000 upstream chunks and the client's
    counts."""
    ends0 = ended_streams(server.url)
    cpu0 = cpu_seconds(server.proc.pid)
    out.mkdir(parents=True, exist_ok=True)
    pacing = f"ttft=0;interval={args.interval:g};chunks={args.chunks};stamp=0"
    done = subprocess.run(  # noqa: S603
        [*pin(1), str(VENV / "wenxin"), "bench", "--target", route, "--url", server.url,
         "--api-key", server.key, "--model", "ernie-4.0-8k", "--quiet", "--out", str(out),
         "--pacing", pacing, "--concurrency", str(args.concurrency),
         "--requests", str(args.answers), "--ramp", "0", "--drain", "60",
         "--time-limit", "600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"wenxin bench failed: {done.stderr[-2000:]}")
    deadline = time.monotonic() + 30
    while ended_streams(server.url) < ends0 + args.answers and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the ends' records (store, usage) are written by then
    cpu = cpu_seconds(server.proc.pid) - cpu0
    result = json.loads((out / "result.json").read_text()).get("result", {})
    chunks = args.answers * args.chunks
    return {
        "cpu_s": round(cpu, 3),
        "ms_per_1k_chunks": round(cpu / chunks * 1e6, 2),
        "chunks_received": result.get("chunks_received"),
        "chunks_lost": result.get("chunks_lost"),
        "streams_failed": result.get("streams_failed"),
        "counted": not result.get("chunks_lost") and not result.get("streams_failed"),
    }


def summary(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians, ratio and noise of one route's rounds."""
    counted = {k: [r["ms_per_1k_chunks"] for r in v if r["counted"]] for k, v in rounds.items()}
    if not all(counted.values()):
        return {"decided": False}
    medians = {k: statistics.median(v) for k, v in counted.items()}
    noise = max(abs(x / medians[k] - 1) for k, v in counted.items() for x in v)
    pairs = [  # each round's two trees ran back to back: their ratio drifts less
        a["ms_per_1k_chunks"] / b["ms_per_1k_chunks"]
        for a, b in zip(rounds["this"], rounds["base"], strict=False)
        if a["counted"] and b["counted"]
    ]
    return {
        "decided": True,
        "median_ms_per_1k_chunks": {k: round(v, 2) for k, v in medians.items()},
        "ratio_this_over_base": round(medians["this"] / medians["base"], 3),
        "noise": round(noise, 3),
        "paired_ratios": [round(r, 3) for r in pairs],
        "median_paired_ratio": round(statistics.median(pairs), 3) if pairs else None,
    }


def micro(args: argparse.Namespace) -> int:
    """The in-process measurement (see the module docstring)."""
    trees = {"this": ROOT / "src", "base": args.baseline_src.resolve()}
    envs = {"this": {}, "base": env_assignments(args.baseline_env)}
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
        route: {"this": [], "base": []} for route in ROUTES
    }
    for n in range(args.micro):
        for tag in ("this", "base") if n % 2 == 0 else ("base", "this"):
            done = subprocess.run(  # noqa: S603
                [*pin(0), str(VENV / "python"), str(HERE / "_chunk_relay_micro.py"),
                 str(args.micro_chunks)],
                capture_output=True, text=True, check=True,
                env={**os.environ, "PYTHONPATH": str(trees[tag]), **envs[tag]},
            )  # fmt: skip
            result = json.loads(done.stdout.strip().splitlines()[-1])
            for route in ROUTES:
                us = result[route]
                rounds[route][tag].append({"ms_per_1k_chunks": us, "counted": True})
            print(f"round {n} {tag}: {result} µs per chunk", flush=True)
    doc = {
        "micro_chunks": args.micro_chunks,
        "baseline_src": str(args.baseline_src),
        "baseline_env": args.baseline_env,
        "load_average": os.getloadavg(),
        "rounds": rounds,
        "summary": {route: summary(rounds[route]) for route in ROUTES},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"micro-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    for route in ROUTES:  # (µs per chunk = ms per 1,000 chunks)
        print(route, json.dumps(doc["summary"][route]))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, required=True, help="the baseline's src/")
    parser.add_argument(
        "--baseline-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the baseline's environment alone (with --baseline-src src: this tree "
        "under another allocator, say)",
    )
    parser.add_argument("--answers", type=int, default=100, help="answers per round")
    parser.add_argument("--chunks", type=int, default=200, help="chunks per answer")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--micro", type=int, default=0, help="in-process pairs instead")
    parser.add_argument("--micro-chunks", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chunk_cost")
    args = parser.parse_args()
    if args.micro:
        return micro(args)
    routes = [r for r in args.routes.split(",") if r]
    work = Path(tempfile.mkdtemp(prefix="chunk-cost-"))
    procs = Processes(work)
    try:
        emulator = start_emulator(procs)
        servers = [
            Server("this", None, emulator, procs),
            Server("base", args.baseline_src, emulator, procs, env_assignments(args.baseline_env)),
        ]
        for server in servers:  # warm-up, not counted
            for route in routes:
                warm = argparse.Namespace(**{**vars(args), "answers": args.concurrency})
                one_round(server, route, warm, work / f"warm-{server.tag}-{route}")
        rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
            route: {"this": [], "base": []} for route in routes
        }
        for n in range(args.rounds):
            order = servers if n % 2 == 0 else servers[::-1]
            for route in routes:
                for server in order:
                    r = one_round(server, route, args, work / f"r{n}-{server.tag}-{route}")
                    rounds[route][server.tag].append(r)
                    print(f"round {n} {route:6} {server.tag}: {r['ms_per_1k_chunks']:7.2f} ms "
                          f"per 1,000 chunks ({r['cpu_s']:.2f} s CPU; received "
                          f"{r['chunks_received']}, lost {r['chunks_lost']}, failed "
                          f"{r['streams_failed']})", flush=True)  # fmt: skip
        doc: dict[str, Any] = {
            "answers": args.answers,
            "chunks": args.chunks,
            "interval": args.interval,
            "concurrency": args.concurrency,
            "baseline_src": str(args.baseline_src),
            "baseline_env": args.baseline_env,
            "load_average": os.getloadavg(),
            "rounds": rounds,
            "summary": {route: summary(rounds[route]) for route in routes},
        }
        if set(ROUTES) <= set(routes):
            sums = doc["summary"]
            if sums["openai"]["decided"] and sums["native"]["decided"]:
                doc["native_over_openai"] = {
                    tag: round(
                        sums["native"]["median_ms_per_1k_chunks"][tag]
                        / sums["openai"]["median_ms_per_1k_chunks"][tag],
                        3,
                    )
                    for tag in ("this", "base")
                }
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (args.out / f"{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
        for route in routes:
            print(route, json.dumps(doc["summary"][route]))
        if "native_over_openai" in doc:
            print("native / openai", json.dumps(doc["native_over_openai"]))
        return 0
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
