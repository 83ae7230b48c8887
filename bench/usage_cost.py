"""What usage accounting and budgets cost the relay: `wenxin serve`'s CPU per 1,000 chunks with
this tree (a key with day and month budgets: reserve at admission, the SDK's per-request
ledger, usage records stored, metrics, settle) against a baseline tree without them, in one
run, alternating rounds. With ``--gateway`` this tree also serves through one configured
channel (``[[channels]]`` at the same emulator): the router, the breaker and ``FailoverStream``
on every chunk — what issue 13 item 8 bounds, routing and accounting together.

Each round starts nothing new: one emulator (``wenxin emulate --ttft 0 --interval 0
--v2-interval 0``) and two servers (this tree; ``--baseline-src``'s, run with the same
``.venv`` Python and ``PYTHONPATH`` at it) stay up; a round sends ``--answers`` streamed
completions of ``--chunks`` chunks each (the emulator's ``chunks=N`` directive), ``--concurrency``
at a time, to one server, and reads that server's process CPU (``utime + stime`` from
``/proc``) before and after. Rounds alternate between the servers, so a noisy neighbour hits
both alike; the figure is the median per server and their ratio.

Then, in this process, the accounting's own CPU per answer, piece by piece (``--micro``
answers of ``--chunks`` chunks): closing the SDK's per-request ledger (``_close_attempt``:
the text's token estimate), turning it into records and pricing them, the metrics, the
budget's reserve and settle, and storing the records in a real SQLite store (process CPU, the
store's thread included) — expressed against the baseline's relay CPU per answer.

With ``--before-src`` a third server runs another tree *with* the channel and the budgets (say
the commit before a change to the gateway path), in the same alternating rounds: the change's
effect and the bound's in one run. ``--candidate-src`` runs this tree's server from a copy
(so editing the work tree during a long run changes nothing).

    mkdir -p /tmp/base && git archive <ref> src | tar -x -C /tmp/base
    .venv/bin/python bench/usage_cost.py --baseline-src /tmp/base/src
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv" / "bin"
TICKS = os.sysconf("SC_CLK_TCK")
MODEL = "ernie-4.5-21b-a3b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def wenxin(src: Path | None) -> tuple[list[str], dict[str, str]]:
    if src is None:
        return [str(VENV / "wenxin")], {}
    code = "import sys; from wenxin_stream.cli import main; sys.exit(main())"
    return [str(VENV / "python"), "-c", code], {"PYTHONPATH": str(src)}


def start_server(
    tag: str,
    src: Path | None,
    emulator: str,
    work: Path,
    budgets: list[str],
    *,
    gateway: bool = False,
) -> tuple[subprocess.Popen[bytes], str, str]:
    argv, env = wenxin(src)
    data = work / f"{tag}-data"
    data.mkdir()
    config: list[str] = []
    if gateway:  # the same emulator as one configured channel: the router and FailoverStream
        path = work / f"{tag}.toml"
        path.write_text(
            f'[[channels]]\nname = "bench"\nkind = "qianfan-v2"\nbase_url = "{emulator}"\n'
            f'api_key = "bce-v3/ALTAK-bench/x"\nmodels = ["*"]\nemulated = true\n'
        )
        config = ["--config", str(path)]
    env = {**os.environ, **env}
    made = subprocess.run(  # noqa: S603
        [*argv, "keys", "create", "--data-dir", str(data), "--name", "bench", *budgets],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    key = made.stdout.strip().splitlines()[-1]
    port = free_port()
    log = (work / f"{tag}.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603
        [*argv, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data),
         *config],
        stdout=log, stderr=subprocess.STDOUT,
        env={**env, "WENXIN_UPSTREAM_API": "v2", "WENXIN_UPSTREAM_V2_BASE_URL": emulator,
             "WENXIN_UPSTREAM_BEARER_TOKEN": "bce-v3/ALTAK-bench/x"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url, key
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{tag} did not start: see {work / (tag + '.log')}")


def one_answer(url: str, key: str, chunks: int) -> int:
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": f"bench [[wenxin:fault chunks={chunks}]]"}],
    }
    seen = 0
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=body, timeout=60,
        headers={"Authorization": f"Bearer {key}"},
    ) as r:  # fmt: skip
        if r.status_code != 200:
            raise SystemExit(f"{r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if line.startswith("data: {"):
                seen += 1
    return seen


def round_cpu(
    proc: subprocess.Popen[bytes], url: str, key: str, answers: int, chunks: int, conc: int
) -> tuple[float, int]:
    """(server CPU seconds, chunks relayed) of one round."""
    before = cpu_seconds(proc.pid)
    with ThreadPoolExecutor(conc) as pool:
        relayed = sum(pool.map(lambda _: one_answer(url, key, chunks), range(answers)))
    time.sleep(0.3)  # the answers' ends (records, settle) are done by then
    return cpu_seconds(proc.pid) - before, relayed


def micro(answers: int, chunks: int) -> dict[str, float]:
    """CPU µs per answer of each accounting step (see the module docstring)."""
    import asyncio

    from wenxin_stream._clock import FakeClock
    from wenxin_stream._credentials import NoAuth
    from wenxin_stream._events import TextDelta, Usage, UsageEvent
    from wenxin_stream._retry import RetryPolicy
    from wenxin_stream._stream_core import ChatCall, StreamCore
    from wenxin_stream._timeouts import Timeout
    from wenxin_stream.server._budgets import BudgetLimiter, Budgets
    from wenxin_stream.server._metrics import Metrics
    from wenxin_stream.server._store import SQLiteStore
    from wenxin_stream.server._usage import Pricing, usage_records

    text = "流式输出的每一段文字，"
    call = ChatCall(api="v2", model=MODEL, messages=({"role": "user", "content": "你好"},),
                    params={})  # fmt: skip
    cores = []
    for _ in range(answers):
        core = StreamCore(call, base_url="http://x", auth=NoAuth(), retry=RetryPolicy(),
                          timeout=Timeout(), clock=FakeClock())  # fmt: skip
        core.http_request(None, 0.0)
        for _ in range(chunks):
            core._take(TextDelta(text))
        core._take(UsageEvent(Usage(10, chunks * 7, 10 + chunks * 7)))
        cores.append(core)
    out: dict[str, float] = {}
    start = time.process_time()
    for core in cores:
        core.cancel()  # closes the attempt: the ledger's entry
    out["ledger_us"] = (time.process_time() - start) / answers * 1e6
    pricing, metrics = Pricing(), Metrics()
    start = time.process_time()
    batches = []
    for i, core in enumerate(cores):
        ledger = [("default", attempt) for attempt in core.attempt_usages]
        records = usage_records(ledger, key_id="k", model=MODEL, stream_id=f"s_{i}",
                                now=time.time(), pricing=pricing)  # fmt: skip
        for r in records:
            metrics.usage(r.model, r.channel, r.prompt_tokens, r.completion_tokens,
                          r.cost_nano, estimated=r.estimated)  # fmt: skip
        batches.append(records)
    out["records_and_metrics_us"] = (time.process_time() - start) / answers * 1e6

    async def store_and_budgets() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            async with SQLiteStore(Path(tmp) / "u.db") as store:
                limiter = BudgetLimiter(store.spent_since)
                budgets = Budgets(tokens_day=10**12, nano_month=10**15)
                await limiter.reserve("k", budgets, 1, 1)  # the period's counters loaded once
                start = time.process_time()
                for records in batches:
                    hold = await limiter.reserve("k", budgets, 4096, 10**6)
                    hold.settle(sum(r.total_tokens for r in records), 1)  # type: ignore[union-attr]
                budget_us = (time.process_time() - start) / answers * 1e6
                start = time.process_time()
                await asyncio.gather(*(store.record_usage(records) for records in batches))
                return budget_us, (time.process_time() - start) / answers * 1e6

    out["budget_us"], out["store_us"] = asyncio.run(store_and_budgets())
    out["total_us"] = sum(out.values())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument(
        "--candidate-src", type=Path, help="this tree's src (default: as installed)"
    )
    parser.add_argument(
        "--before-src", type=Path, help="a third server: that tree, configured alike"
    )
    parser.add_argument("--answers", type=int, default=40)
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--micro", type=int, default=2000, help="answers of the in-process part")
    parser.add_argument(
        "--gateway",
        action="store_true",
        help="this tree serves through one configured channel (routing and accounting)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "usage_cost.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="usage-cost-"))
    port = free_port()
    emu = subprocess.Popen(  # noqa: S603
        [str(VENV / "wenxin"), "emulate", "--port", str(port), "--ttft", "0", "--interval", "0",
         "--v2-interval", "0"],
        stdout=(work / "emulator.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    emulator = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = [emu]
    try:
        for _ in range(100):
            try:
                httpx.get(emulator + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        budgets = ["--budget-tokens-day", "1000000000", "--budget-tokens-month", "9000000000",
                   "--budget-cny-day", "100000", "--budget-cny-month", "1000000"]  # fmt: skip
        base = start_server("base", args.baseline_src, emulator, work, [])
        ours = start_server(
            "usage", args.candidate_src, emulator, work, budgets, gateway=args.gateway
        )
        procs += [base[0], ours[0]]
        servers = {"base": base, "usage": ours}
        if args.before_src is not None:
            before = start_server(
                "before", args.before_src, emulator, work, budgets, gateway=args.gateway
            )
            procs.append(before[0])
            servers["before"] = before
        for proc, url, key in servers.values():  # warm-up, not counted
            round_cpu(proc, url, key, args.concurrency, args.chunks, args.concurrency)
        per_k: dict[str, list[float]] = {name: [] for name in servers}
        names = list(servers)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]  # each goes first in turn
            if r % 2:
                order.reverse()
            for name in order:
                proc, url, key = servers[name]
                cpu, relayed = round_cpu(
                    proc, url, key, args.answers, args.chunks, args.concurrency
                )
                per_k[name].append(cpu / relayed * 1000)
                print(f"round {r} {name}: {cpu:.3f} s CPU, {relayed} chunks, "
                      f"{per_k[name][-1] * 1000:.2f} ms per 1,000 chunks", flush=True)  # fmt: skip
        usage = httpx.get(
            ours[1] + "/api/usage", headers={"Authorization": f"Bearer {ours[2]}"}
        ).json()
        medians = {name: statistics.median(v) for name, v in per_k.items()}
        ratio = medians["usage"] / medians["base"]
        # each round's own ratio against the baseline round next to it: the spread
        pairs = [u / b for u, b in zip(per_k["usage"], per_k["base"], strict=True)]
        steps = micro(args.micro, args.chunks)
        relay_us = medians["base"] * args.chunks / 1000 * 1e6  # the baseline's CPU per answer
        result: dict[str, Any] = {
            "answers_per_round": args.answers,
            "chunks_per_answer": args.chunks,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "gateway": args.gateway,
            "ms_per_1000_chunks": {k: [round(x * 1000, 3) for x in v] for k, v in per_k.items()},
            "median_ms_per_1000_chunks": {k: round(v * 1000, 3) for k, v in medians.items()},
            "ratio": round(ratio, 4),
            "round_ratios": [round(x, 4) for x in pairs],
            "before_ratio": (
                round(medians["before"] / medians["base"], 4) if "before" in medians else None
            ),
            "usage_records_seen": usage["totals"]["requests"],
            "per_answer_us": {k: round(v, 1) for k, v in steps.items()},
            "per_answer_share_of_relay": round(steps["total_us"] / relay_us, 4),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"accounting: ×{ratio:.3f} relay CPU per 1,000 chunks (median of {args.rounds}); "
              f"its own steps {steps['total_us']:.0f} µs per answer = "
              f"{steps['total_us'] / relay_us:.1%} of the relay's CPU per answer")  # fmt: skip
        return 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
