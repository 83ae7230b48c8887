"""What per-key limits cost in Redis (`server/_limits_redis.py`) against in memory, in one run.

N admissions of one key with RPM, TPM and a stream limit set (every check of the script runs,
nothing is refused: the limits are far above N), each admitted, settled and released as an
answer would be:

- ``memory``: ``KeyLimiter`` (one ``wenxin serve``), the same steps;
- ``redis``: ``SharedLimits`` against a private ``redis-server`` on loopback (started here,
  stopped by PID): one ``EVALSHA`` to admit, settle and release in the background.

``--concurrency C`` admits in waves of C at once (``asyncio.gather``), as a burst of starts
does: the admissions of one moment then share a pipeline (``_background_calls.ask``); run it
with ``PYTHONPATH=<a baseline tree>/src`` for the same figures before a change.

Reported per admission: client CPU (``time.process_time``: this process, the event loop and
redis-py with hiredis), wall time, and Redis's own CPU from ``INFO commandstats`` (the
``usec`` of every command it ran, divided by N). Rounds alternate the two modes.

    .venv/bin/python bench/redis_limits_cost.py [--n 3000] [--rounds 3] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from wenxin_stream.server._leases import Leases
from wenxin_stream.server._limits import Admission, KeyLimiter, KeyLimits, Limits
from wenxin_stream.server._limits_redis import SharedLimits
from wenxin_stream.server._redis import SharedRedis, SharedStateError

LIMITS = KeyLimits(rpm=10_000_000, tpm=10_000_000_000, max_streams=1_000_000)


async def drive(limits: Limits, n: int, concurrency: int = 1) -> tuple[float, float]:
    """Client CPU and wall seconds for ``n`` admit → settle → release, ``concurrency`` at
    once."""

    async def one() -> None:
        admission = await limits.acquire("bench", None, 120)
        assert isinstance(admission, Admission), admission
        limits.settle(admission, 100)
        limits.release(admission)

    cpu, wall = time.process_time(), time.perf_counter()
    for done in range(0, n, concurrency):
        await asyncio.gather(*(one() for _ in range(min(concurrency, n - done))))
    if isinstance(limits, SharedLimits):
        await limits.leases.flush()
    return time.process_time() - cpu, time.perf_counter() - wall


def redis_usec(info: dict[str, Any]) -> float:
    """Total ``usec`` of every command Redis ran (``INFO commandstats``)."""
    return float(sum(v["usec"] for k, v in info.items() if k.startswith("cmdstat_")))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private ``redis-server`` on a free loopback port (its URL), stopped by PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/install-services)")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", directory]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)  # noqa: S603 - our argv
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


async def main(url: str, n: int, rounds: int, concurrency: int) -> dict[str, Any]:
    redis = SharedRedis(url, timeout=2.0, prefix="bench:")
    for _ in range(100):  # until it answers
        try:
            await redis.open()
            break
        except SharedStateError:
            await asyncio.sleep(0.05)
    shared = SharedLimits(LIMITS, Leases(redis, instance_id="bench"))
    await drive(shared, 200)  # warm: the script loaded, the pool filled
    results: dict[str, list[dict[str, float]]] = {"memory": [], "redis": []}
    for _ in range(rounds):
        cpu, wall = await drive(KeyLimiter(LIMITS), n, concurrency)
        results["memory"].append({"cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6})
        await redis.client.config_resetstat()
        cpu, wall = await drive(shared, n, concurrency)
        server = redis_usec(await redis.client.info("commandstats"))
        results["redis"].append(
            {"cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6, "redis_cpu_us": server / n}
        )
    await redis.close()
    best = {mode: min(rows, key=lambda r: r["cpu_us"]) for mode, rows in results.items()}
    return {
        "n": n,
        "rounds": rounds,
        "concurrency": concurrency,
        "runs": results,
        "best": best,
        "client_cpu_ratio_redis_over_memory": best["redis"]["cpu_us"] / best["memory"]["cpu_us"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="admissions at once")
    args = parser.parse_args()
    with redis_server() as url:
        print(json.dumps(asyncio.run(main(url, args.n, args.rounds, args.concurrency)), indent=2))
