"""CPU time per 1,000 streamed chunks and peak memory of one streaming client.

Run one client per process (so CPU and RSS are that client's alone) against an emulator
started elsewhere, e.g. ``wenxin emulate --port 8866`` pinned to another core:

    taskset -c 0 .venv/bin/python bench/sdk_throughput.py ours-async --url http://127.0.0.1:8866
    taskset -c 0 .venv-peers/bin/python bench/sdk_throughput.py openai --url ...

Clients: ``ours-async`` / ``ours-sync`` (this package; the sync one runs its streams in
threads), ``openai`` (openai-python, default httpx transport), ``openai-aiohttp``
(``DefaultAioHttpClient``), ``qianfan-async`` (qianfan's ``ado`` path on v2). Each opens
``--streams`` concurrent v2 streams of ``--chunks`` chunks (the emulator paces them with
``X-Wenxin-Fault: ttft=…;interval=…;chunks=…``), counts the chunks it receives, and prints one
JSON line: chunks, wall and CPU seconds, CPU ms per 1,000 chunks, peak RSS (MB) and the RSS
after imports (the baseline of the same process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import threading
import time
from typing import Any

KEY = "bce-v3/ALTAK-bench/secret"
MODEL = "ernie-4.0-8k"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"第{i}个问题：介绍一下长城"}]


async def ours_async(args: argparse.Namespace, fault: str) -> list[int]:
    from wenxin_stream import AsyncClient, Limits, TextDelta

    async with AsyncClient(
        environ={},
        bearer_token=KEY,
        v2_base_url=args.url,
        model=MODEL,
        limits=Limits(max_connections=args.streams + 10),
    ) as client:

        async def one(i: int) -> int:
            n = 0
            async with client.chat.stream(
                messages=[
                    {
                        "role": "user",
                        "content": f"{_messages(i)[0]['content']} [[wenxin:fault {fault}]]",
                    }
                ]
            ) as stream:
                async for event in stream:
                    if type(event) is TextDelta:
                        n += 1
            return n

        return list(await asyncio.gather(*(one(i) for i in range(args.streams))))


def ours_sync(args: argparse.Namespace, fault: str) -> list[int]:
    from wenxin_stream import Client, Limits, TextDelta

    results = [0] * args.streams
    with Client(
        environ={},
        bearer_token=KEY,
        v2_base_url=args.url,
        model=MODEL,
        limits=Limits(max_connections=args.streams + 10),
    ) as client:

        def one(i: int) -> None:
            with client.chat.stream(
                messages=f"{_messages(i)[0]['content']} [[wenxin:fault {fault}]]"
            ) as stream:
                results[i] = sum(1 for e in stream if type(e) is TextDelta)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return results


async def openai_async(args: argparse.Namespace, fault: str, *, aiohttp: bool) -> list[int]:
    import openai

    kwargs: dict[str, Any] = {}
    if aiohttp:
        kwargs["http_client"] = openai.DefaultAioHttpClient()
    client = openai.AsyncOpenAI(base_url=args.url + "/v2", api_key=KEY, max_retries=0, **kwargs)

    async def one(i: int) -> int:
        n = 0
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=_messages(i),
            stream=True,  # type: ignore[arg-type]
            extra_headers={"X-Wenxin-Fault": fault},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                n += 1
        return n

    try:
        return list(await asyncio.gather(*(one(i) for i in range(args.streams))))
    finally:
        await client.close()


async def qianfan_async(args: argparse.Namespace, fault: str) -> list[int]:
    os.environ["QIANFAN_CONSOLE_API_BASE_URL"] = args.url
    os.environ["QIANFAN_BEARER_TOKEN"] = KEY
    import qianfan

    chat = qianfan.ChatCompletion(version="2", model=MODEL)

    async def one(i: int) -> int:
        n = 0
        msgs = [
            {"role": "user", "content": f"{_messages(i)[0]['content']} [[wenxin:fault {fault}]]"}
        ]
        async for resp in await chat.ado(messages=msgs, stream=True):
            for choice in resp.body.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    n += 1
        return n

    return list(await asyncio.gather(*(one(i) for i in range(args.streams))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "client", choices=["ours-async", "ours-sync", "openai", "openai-aiohttp", "qianfan-async"]
    )
    parser.add_argument("--url", default="http://127.0.0.1:8866")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--ttft", type=float, default=0.2)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    fault = f"ttft={args.ttft};interval={args.interval};chunks={args.chunks}"
    # imports first, so the baseline RSS includes them
    if args.client.startswith("ours"):
        import aiohttp  # noqa: F401

        import wenxin_stream  # noqa: F401
    elif args.client.startswith("openai"):
        import openai  # noqa: F401
    else:
        import qianfan  # noqa: F401
    baseline = _rss_mb()
    peak_fds = [len(os.listdir("/proc/self/fd"))]
    stop = threading.Event()

    def sample_fds() -> None:
        while not stop.wait(0.02):
            peak_fds.append(len(os.listdir("/proc/self/fd")))

    sampler = threading.Thread(target=sample_fds, daemon=True)
    sampler.start()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if args.client == "ours-async":
        counts = asyncio.run(ours_async(args, fault))
    elif args.client == "ours-sync":
        counts = ours_sync(args, fault)
    elif args.client == "openai":
        counts = asyncio.run(openai_async(args, fault, aiohttp=False))
    elif args.client == "openai-aiohttp":
        counts = asyncio.run(openai_async(args, fault, aiohttp=True))
    else:
        counts = asyncio.run(qianfan_async(args, fault))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stop.set()
    sampler.join()
    chunks = sum(counts)
    print(
        json.dumps(
            {
                "client": args.client,
                "streams": args.streams,
                "complete": sum(1 for c in counts if c == args.chunks),
                "chunks": chunks,
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "cpu_ms_per_1000_chunks": round(cpu / max(chunks, 1) * 1e6, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "baseline_rss_mb": round(baseline, 1),
                "fds_before": peak_fds[0],
                "peak_fds": max(peak_fds),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
