"""The SDK's decode of one upstream chunk: µs per v2 chunk through ``StreamCore.feed`` — the
stream parser (SSE decoder, the chunk's events) and the delivery of each event into the
accumulator, all an SDK stream does per read but the read itself (issue 15 item 1) — this tree
against a baseline tree, in alternating processes.

Each process imports ``wenxin_stream`` from one tree's ``src/`` and times, per kind of chunk,
the same stream fed one SSE event per ``feed`` call (a chunk per upstream read, as the relay
sees them at the emulator's pace), as the min of ``--repeats`` runs of ``--chunks`` chunks
(``time.process_time``: CPU, not wall time). Kinds: ``cjk`` (Chinese text, the emulator's
shape), ``ascii``, ``escapes`` (text with quotes, newlines and ``\\u2028``, written escaped),
``qianfan`` (Qianfan's shape, ``"flag":0`` and no ``finish_reason``) and ``usage`` (every
chunk carries usage: the generic path in both trees). Pairs of processes alternate between the
trees (the order flips every pair), and the median per tree and their ratio are printed.

    mkdir -p /tmp/decode-base && git archive main src | tar -x -C /tmp/decode-base
    .venv/bin/python bench/sdk_decode_cost.py --baseline-src /tmp/decode-base/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE_SRC = Path(__file__).resolve().parent.parent / "src"
KINDS = ("cjk", "ascii", "escapes", "qianfan", "usage")
_PIECES = {
    "cjk": "我无法直接获取实时的天气信息。",
    "ascii": "The quick brown fox jumps over",
    "escapes": 'say "hi"\nthen\u2028go \\ ok',
    "qianfan": "很抱歉，我无法直接获取",
    "usage": "我无法直接获取实时的天气信息。",
}


def _frame(kind: str, index: int) -> bytes:
    text = f"{_PIECES[kind]}{index}"
    choice: dict[str, object] = {"index": 0, "delta": {"content": text}}
    if kind == "qianfan":
        choice["flag"] = 0
    else:
        choice["finish_reason"] = None
        choice["flag"] = 0
    chunk: dict[str, object] = {
        "id": "as-5j1w2wzna2",
        "object": "chat.completion.chunk",
        "created": 1717488564,
        "model": "ernie-4.0-8k",
        "choices": [choice],
    }
    if kind == "usage":
        chunk["usage"] = {"prompt_tokens": 4, "completion_tokens": index, "total_tokens": index}
    ensure_ascii = kind == "escapes"
    data = json.dumps(chunk, ensure_ascii=ensure_ascii, separators=(",", ":"))
    return b"data: " + data.encode() + b"\n\n"


def _child(chunks: int, repeats: int) -> dict[str, float]:
    from wenxin_stream._credentials import NoAuth
    from wenxin_stream._retry import RetryPolicy
    from wenxin_stream._stream_core import ChatCall, StreamCore
    from wenxin_stream._timeouts import Timeout

    hello = ({"role": "user", "content": "hi"},)
    call = ChatCall(api="v2", model="ernie-4.0-8k", messages=hello, params={})
    result: dict[str, float] = {}
    for kind in KINDS:
        frames = [_frame(kind, i) for i in range(chunks)]
        best = float("inf")
        for _ in range(repeats):
            core = StreamCore(
                call, base_url="http://x", auth=NoAuth(), retry=RetryPolicy(), timeout=Timeout()
            )
            core.http_request(None, 0.0)
            core.begin_body({"content-type": "text/event-stream"})
            feed = core.feed
            start = time.process_time()
            for frame in frames:
                for _event in feed(frame):
                    pass
            best = min(best, time.process_time() - start)
            list(core.feed(b"data: [DONE]\n\n"))
            core.finish()
        result[kind] = best / chunks * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, required=False)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.chunks, args.repeats)))
        return
    trees = {"this": HERE_SRC}
    if args.baseline_src is not None:
        trees["baseline"] = args.baseline_src.resolve()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for pair in range(args.pairs):
        order = list(trees) if pair % 2 == 0 else list(reversed(trees))
        for name in order:
            env = {**os.environ, "PYTHONPATH": str(trees[name])}
            command = [sys.executable, __file__, "--child", "--chunks", str(args.chunks)]
            command += ["--repeats", str(args.repeats)]
            out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)  # noqa: S603
            runs[name].append(json.loads(out.stdout))
            figures = " ".join(f"{k}={v:.2f}" for k, v in runs[name][-1].items())
            print(f"pair {pair} {name:8} {figures}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}; µs per chunk, median of {args.pairs} processes")
    for kind in KINDS:
        medians = {name: statistics.median(r[kind] for r in runs[name]) for name in trees}
        line = " ".join(f"{name}={value:.2f}" for name, value in medians.items())
        if "baseline" in medians:
            line += f" ratio={medians['this'] / medians['baseline']:.3f}"
        print(f"{kind:8} {line}")


if __name__ == "__main__":
    main()
