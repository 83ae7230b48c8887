"""The soak: ``wenxin serve`` under a steady crowd of ERNIE-paced streams for a long time, its
memory, descriptors, tasks and store sampled each minute (by hand, not in CI).

Theory of operation
===================

The script starts the emulator (``wenxin emulate``) and ``wenxin serve`` as subprocesses on
loopback, the server pinned to one CPU with ``taskset`` when there is one. Every question
carries ERNIE's pace as a fault directive (TTFT 500 ms, 12 chunks 400 ms apart: the
"ERNIE-paced" suite of ``bench/compare.py``), so an answer streams for about 5 s.

``--streams`` client tasks run for ``--minutes``; each asks one question after another, and
draws for each what it does (:data:`BEHAVIOURS`): read a native SSE answer to its end, cancel
it, break the connection and resume with ``Last-Event-ID`` (checking that no event is lost or
repeated), or vanish (close the socket mid-stream, never come back); the same on the WebSocket
and the OpenAI route. A fraction ``--fault-rate`` of the questions also carries a fault
(:data:`FAULTS`): a cut, ERNIE's error in the stream, malformed JSON, an overload. Every
outcome is counted by kind: ``ok``, ``injected`` (the failure the fault asked for, ended the
way ``docs/ERRORS.md`` says) and ``unexpected`` (anything else, with its description).

Every ``--sample`` seconds (default 60) the sampler reads the server's RSS and open descriptors
from ``/proc``, the event loop's task count and the streams in flight from ``/metrics``
(``wenxin_asyncio_tasks``, ``wenxin_streams_in_flight``), and the store's size (SQLite file,
WAL and shared memory). When the load ends it waits for the server to settle (the resume
grace, then every stream ended) and samples once more.

Targets (``check``): RSS growth under 5 % from the end of the warm-up (``--warmup``, 5 min,
counted from the first sample at which the streams in flight reached 90 % of their median
under load: a starved load generator ramps slowly; the growth from minute 5 is reported
beside it) to the end; no descriptor or task growth (the last sample under load within 5 % +
20 of the warm-up's, and after the load both back within 20 of the idle baseline); no
unexpected error.
Results go to ``bench/results/soak-<stamp>/``: ``soak.json`` (every sample and count),
``soak.svg`` (the plot) and ``summary.md``.

    .venv/bin/python bench/soak.py --minutes 3 --streams 200     # a quick check
    nohup .venv/bin/python bench/soak.py > /tmp/soak.log 2>&1 &   # 30 min, 1,000 streams
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from wenxin_stream import SSEDecoder
from wenxin_stream.bench._svg import PALETTE, Guide, Panel, Series, render
from wenxin_stream.bench._system import raise_fd_limit, read_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACE = "ttft=0.5;interval=0.4;chunks=12"
QUESTIONS = ("介绍一下长城", "讲讲黄河的故事", "解释量子计算的基本原理", "推荐三本中文小说")
FAULTS = ("cut_after=3", "error=336003;error_after=2", "malformed_after=2", "error=336100")
"""Injected faults: each ends a stream with an error the client can tell (none pauses the
server's upstream client, as ERNIE's rate limits would, for every client)."""
BEHAVIOURS: tuple[tuple[str, float], ...] = (
    ("sse", 0.35),
    ("sse_cancel", 0.08),
    ("sse_resume", 0.10),
    ("sse_vanish", 0.07),
    ("ws", 0.15),
    ("ws_vanish", 0.05),
    ("openai", 0.15),
    ("openai_vanish", 0.05),
)
CUT_ENDS = {"incomplete", "upstream_error"}
STEADY = 0.9
"""The warm-up starts when the streams in flight first reach this share of their median under
load (see :func:`check`)."""
MIN_AFTER_WARM = 3
"""Samples under load from the end of the warm-up on, at least, for the RSS target to count."""
RESUME_GRACE = 5.0
"""The server's ``--resume-grace`` (its default): a resume later than this is too late."""


@dataclass
class Sample:
    minute: float
    rss_mb: float
    fds: int
    tasks: float
    in_flight: float
    store_mb: float
    streams_done: int
    upstream_sockets: int = 0
    client_lag_ms: float = 0.0
    phase: str = "load"
    gc_s: float = 0.0
    """The server's full collections so far, seconds (``wenxin_gc_pause_seconds``)."""
    trim_s: float = 0.0
    """The server's C heap trims so far, seconds (``wenxin_heap_trim_seconds``)."""


@dataclass
class Tally:
    """Outcomes by kind; ``unexpected`` keeps a few examples of each description."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def ok(self, what: str) -> None:
        self.counts[f"ok:{what}"] += 1

    def injected(self, what: str) -> None:
        self.counts[f"injected:{what}"] += 1

    def late(self, what: str) -> None:
        """The client itself came back after the resume grace: the server's documented
        answer (404, or the answer ended ``client_disconnected``), not a server error."""
        self.counts[f"late:{what}"] += 1

    def unexpected(self, what: str, detail: str) -> None:
        self.counts[f"unexpected:{what}"] += 1
        self.examples.setdefault(what, detail[:300])

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def unexpected_total(self) -> int:
        return sum(n for k, n in self.counts.items() if k.startswith("unexpected:"))


# -- processes ---------------------------------------------------------------------------------


def _start(
    args: list[str], log: Path, pattern: str, cpu: str | None, env: dict[str, str]
) -> tuple[Any, str]:
    """Start ``args`` (pinned to ``cpu`` if given and ``taskset`` exists) with only ``env``
    of ours in its environment; its process and the URL its log line names."""
    cmd = [*(["taskset", "-c", cpu] if cpu and shutil.which("taskset") else []), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QIANFAN_", "WENXIN_"))} | env
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"{args[:2]} exited: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{args[:2]} did not start: {log.read_text()[-2000:]}")


def _stop(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- clients -----------------------------------------------------------------------------------


class Load:
    """The crowd of clients of one soak."""

    def __init__(self, url: str, fault_rate: float, seed: int, deadline: float) -> None:
        self.url, self.fault_rate, self.deadline = url, fault_rate, deadline
        self.rng = random.Random(seed)  # noqa: S311 (the load's choices, not secrets)
        self.tally = Tally()
        self.names = [name for name, _ in BEHAVIOURS]
        self.weights = [weight for _, weight in BEHAVIOURS]

    def _question(self) -> tuple[str, str | None]:
        fault = self.rng.choice(FAULTS) if self.rng.random() < self.fault_rate else None
        spec = PACE + (f";{fault}" if fault else "")
        return f"{self.rng.choice(QUESTIONS)} [[wenxin:fault {spec}]]", fault

    async def client(self, session: aiohttp.ClientSession, n: int) -> None:
        await asyncio.sleep(self.rng.random() * 5)  # a ramp over the first 5 s
        while time.monotonic() < self.deadline:
            behaviour = self.rng.choices(self.names, self.weights)[0]
            question, fault = self._question()
            route = behaviour.split("_")[0]
            try:
                await getattr(self, f"_{route}")(session, behaviour, question, fault)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                self.tally.unexpected(f"{behaviour}:{type(exc).__name__}", repr(exc))

    def _judge(self, behaviour: str, fault: str | None, end: str | None, detail: str) -> None:
        """Count an answer that ended with ``end`` (None: no terminal event)."""
        if fault is not None and end in CUT_ENDS:
            self.tally.injected(f"{behaviour}:{fault}")
        elif fault is None and end in ("completed", "cancelled"):
            self.tally.ok(behaviour)
        else:
            self.tally.unexpected(f"{behaviour}:end={end}:fault={fault}", detail)

    async def _sse(
        self, s: aiohttp.ClientSession, behaviour: str, question: str, fault: str | None
    ) -> None:
        async with s.post(f"{self.url}/api/conversations", json={}) as r:
            cid = (await r.json())["id"]
        stop_after = self.rng.randint(1, 8)
        decoder, seqs, end, sid = SSEDecoder(), [], None, None
        post = s.post(f"{self.url}/api/conversations/{cid}/messages", json={"content": question})
        async with post as r:
            if r.status != 200:
                self.tally.unexpected(f"{behaviour}:status={r.status}", await r.text())
                return
            async for chunk in r.content.iter_any():
                for event in decoder.feed(chunk):
                    data = json.loads(event.data)
                    seqs.append(int(event.id.rsplit(":", 1)[1]))
                    if event.event == "start":
                        sid = data["stream_id"]
                    elif event.event == "end":
                        end = data["end_reason"]
                if end is not None or (behaviour != "sse" and len(seqs) > stop_after):
                    break
            if end is None and behaviour == "sse_vanish":  # leaving unread closes the socket
                self.tally.ok(behaviour)
                return
        if end is None and behaviour == "sse_cancel" and sid is not None:
            async with s.post(f"{self.url}/api/streams/{sid}/cancel") as r:
                if r.status not in (202, 404):  # 404: it had just ended
                    self.tally.unexpected(f"{behaviour}:cancel={r.status}", await r.text())
                    return
            self.tally.ok(behaviour)
            return
        if end is None and behaviour == "sse_resume" and sid is not None:
            end = await self._resume(s, sid, seqs, behaviour, time.monotonic())
            if end in ("lost", "late"):
                return
        self._judge(behaviour, fault, end, f"seqs={seqs[-3:]}")

    async def _resume(
        self, s: aiohttp.ClientSession, sid: str, seqs: list[int], behaviour: str, left: float
    ) -> str | None:
        """Reconnect with ``Last-Event-ID``; the end reason (``lost``: an event lost or twice;
        ``late``: the client came back after the resume grace, and was told so)."""
        await asyncio.sleep(self.rng.random())
        headers = {"Last-Event-ID": f"{sid}:{seqs[-1]}"}
        decoder, end = SSEDecoder(), None
        async with s.get(f"{self.url}/api/streams/{sid}", headers=headers) as r:
            late = time.monotonic() - left > RESUME_GRACE  # the response's head, not the ask
            if r.status == 404 and late:
                self.tally.late(f"{behaviour}:resume=404")
                return "late"
            if r.status != 200:
                self.tally.unexpected(f"{behaviour}:resume={r.status}", await r.text())
                return "lost"
            async for chunk in r.content.iter_any():
                for event in decoder.feed(chunk):
                    seq = int(event.id.rsplit(":", 1)[1])
                    if seq != seqs[-1] + 1:
                        self.tally.unexpected(f"{behaviour}:gap", f"{seqs[-3:]} then {seq}")
                        return "lost"
                    seqs.append(seq)
                    if event.event == "end":
                        end = json.loads(event.data)["end_reason"]
        if end == "client_disconnected" and late:
            self.tally.late(f"{behaviour}:end=client_disconnected")
            return "late"
        return end

    async def _ws(
        self, s: aiohttp.ClientSession, behaviour: str, question: str, fault: str | None
    ) -> None:
        stop_after, deltas, end = self.rng.randint(1, 8), 0, None
        async with s.ws_connect(self.url.replace("http://", "ws://") + "/api/ws") as ws:
            await ws.send_json({"type": "ask", "id": "a", "content": question})
            async for message in ws:
                frame = json.loads(message.data)
                if frame["type"] == "delta":
                    deltas += 1
                    if behaviour == "ws_vanish" and deltas >= stop_after:
                        break
                elif frame["type"] == "end":
                    end = frame["end_reason"]
                    break
                elif frame["type"] == "error" and "id" not in frame:
                    break
        if behaviour == "ws_vanish" and end is None:
            self.tally.ok(behaviour)
            return
        self._judge(behaviour, fault, end, f"deltas={deltas}")

    async def _openai(
        self, s: aiohttp.ClientSession, behaviour: str, question: str, fault: str | None
    ) -> None:
        body = {
            "model": "ernie-lite-8k",
            "stream": True,
            "messages": [{"role": "user", "content": question}],
        }
        stop_after, events = self.rng.randint(1, 8), 0
        decoder, finish, error, done = SSEDecoder(), None, None, False
        async with s.post(f"{self.url}/v1/chat/completions", json=body) as r:
            if r.status != 200:
                text = await r.text()
                if fault is not None and r.status in (400, 502, 503):
                    self.tally.injected(f"{behaviour}:{fault}:status")
                else:
                    self.tally.unexpected(f"{behaviour}:status={r.status}", text)
                return
            async for chunk in r.content.iter_any():
                for event in decoder.feed(chunk):
                    events += 1
                    if event.data == "[DONE]":
                        done = True
                        continue
                    data = json.loads(event.data)
                    error = data.get("error", error)
                    for choice in data.get("choices", ()):
                        finish = choice.get("finish_reason") or finish
                if behaviour == "openai_vanish" and events >= stop_after and not done:
                    self.tally.ok(behaviour)
                    return
        if fault is None and finish == "stop" and done and error is None:
            self.tally.ok(behaviour)
        elif fault is not None and error is not None and finish is None and done:
            self.tally.injected(f"{behaviour}:{fault}")
        else:
            detail = f"finish={finish} done={done} error={error}"
            self.tally.unexpected(f"{behaviour}:fault={fault}:finish={finish}", detail)


# -- sampling ----------------------------------------------------------------------------------


async def _watch_lag(worst: list[float]) -> None:
    """Keep in ``worst[0]`` the longest the load generator's own event loop was late waking
    up (a starved client is late to read and to resume, whatever the server does)."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.1)
        worst[0] = max(worst[0], time.monotonic() - before - 0.1)


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def upstream_sockets(pid: int, port: int) -> int:
    """The server's TCP sockets to ``port`` (the emulator: its upstream pool, idle or busy)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if int(cols[2].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                    count += 1
    return count


def _store_mb(data_dir: Path) -> float:
    files = [data_dir / f"wenxin.db{suffix}" for suffix in ("", "-wal", "-shm")]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


UPSTREAM_PORT = 0
"""The emulator's port (set once it has started)."""


async def sample(
    session: aiohttp.ClientSession, url: str, pid: int, data_dir: Path, t0: float, done: int
) -> Sample:
    async with session.get(f"{url}/metrics") as r:
        text = await r.text()
    return Sample(
        minute=round((time.monotonic() - t0) / 60, 3),
        rss_mb=round(read_rss_bytes(pid) / 1e6, 2),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        tasks=_metric(text, "wenxin_asyncio_tasks"),
        in_flight=_metric(text, "wenxin_streams_in_flight"),
        store_mb=round(_store_mb(data_dir), 2),
        streams_done=done,
        upstream_sockets=upstream_sockets(pid, UPSTREAM_PORT),
        gc_s=round(_metric(text, "wenxin_gc_pause_seconds"), 4),
        trim_s=round(_metric(text, "wenxin_heap_trim_seconds"), 4),
    )


async def _probes(
    pid: int, work: Path, t0: float, minutes: list[float], out: list[dict[str, Any]]
) -> None:
    """At each of ``minutes``, ask the server (under ``memory.py --child``) for a probe of its
    heap and keep it in ``out``, with the minute it was asked at."""
    for minute in sorted(minutes):
        await asyncio.sleep(max(0.0, t0 + minute * 60 - time.monotonic()))
        label = f"m{minute:g}"
        (work / "label").write_text(label)
        target = work / f"probe-{label}.json"
        asked = time.monotonic()
        os.kill(pid, signal.SIGUSR1)
        while time.monotonic() - asked < 120:
            await asyncio.sleep(0.2)
            try:
                probe = json.loads(target.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # not there yet, or still being written
            probe["minute"] = round((asked - t0) / 60, 3)
            out.append(probe)
            print(f"[soak] probe {label}: {probe['gc_tracked']} objects tracked", flush=True)
            break


def type_growth(probes: list[dict[str, Any]], top: int = 25) -> list[tuple[str, list[int]]]:
    """The types whose object count grew most from the first probe to any later one, with
    their count at every probe."""
    if len(probes) < 2:
        return []
    counts = [dict(p.get("types", ())) for p in probes]
    names = set().union(*counts)
    rows = [(name, [c.get(name, 0) for c in counts]) for name in names]
    rows.sort(key=lambda row: max(row[1][1:]) - row[1][0], reverse=True)
    return rows[:top]


# -- the run -----------------------------------------------------------------------------------


def _settled(load: list[Sample]) -> Sample | None:
    """The first sample from which every later one under load stays within 5 % of its RSS
    (``None``: none does, or only the last)."""
    for i, s in enumerate(load[:-1]):
        if max(x.rss_mb for x in load[i:]) < s.rss_mb * 1.05:
            return s
    return None


def check(samples: list[Sample], baseline: Sample, warmup: float, tally: Tally) -> dict[str, Any]:
    """The targets, each with its figures and whether it was met."""
    load = [s for s in samples if s.phase == "load"]
    after = [s for s in samples if s.phase == "after"]
    in_flight = sorted(s.in_flight for s in load)
    median_in_flight = in_flight[len(in_flight) // 2]
    # The warm-up counts from the first sample at which the streams in flight reached their
    # steady level (STEADY of the median under load), not from the start: a load generator
    # that ramps slowly (a busy machine starves it) would otherwise measure the heap still
    # growing with the load. The figure from the start ("by the letter") is kept beside it.
    steady = next((s for s in load if s.in_flight >= STEADY * median_in_flight), load[0])
    warm = next((s for s in load if s.minute >= steady.minute + warmup), load[len(load) // 2])
    letter = next((s for s in load if s.minute >= warmup), load[len(load) // 2])
    last = load[-1]

    def growth(since: Sample) -> float:
        peak = max(s.rss_mb for s in load if s.minute >= since.minute)
        return (peak - since.rss_mb) / since.rss_mb

    rss_growth = growth(warm)
    after_warm = sum(1 for s in load if s.minute >= warm.minute)
    settled = _settled(load)
    out: dict[str, Any] = {
        "rss_growth_after_warmup": {
            "steady_from_minute": steady.minute,
            "from_minute": warm.minute,
            "from_mb": warm.rss_mb,
            "by_the_letter": {
                "from_minute": letter.minute,
                "from_mb": letter.rss_mb,
                "growth": round(growth(letter), 4),
            },
            # not part of the verdict: whether the warm-up sample fell in a dip of the load
            # (the heap then still grows to its working size), and from which sample on RSS
            # stayed within 5 % of its value there
            "in_flight_at_warm": warm.in_flight,
            "median_in_flight": median_in_flight,
            "settled_from_minute": settled.minute if settled else None,
            "settled_mb": settled.rss_mb if settled else None,
            "peak_mb_after": max(s.rss_mb for s in load if s.minute >= warm.minute),
            "last_mb": last.rss_mb,
            "growth": round(rss_growth, 4),
            # a warm-up that ends with the load (a load that reached its level late) proves
            # nothing: at least MIN_AFTER_WARM samples from it on, or the target is missed
            "samples_from_warm": after_warm,
            "met": rss_growth < 0.05 and after_warm >= MIN_AFTER_WARM,
        },
        "fd_growth": {
            "warm": warm.fds,
            "last": last.fds,
            "idle_before": baseline.fds,
            "idle_after": after[-1].fds if after else None,
            "upstream_pool_after": after[-1].upstream_sockets if after else None,
            # under load, per stream in flight (their number differs from sample to sample)
            "per_stream_warm": round(warm.fds / max(warm.in_flight, 1), 3),
            "per_stream_last": round(last.fds / max(last.in_flight, 1), 3),
            "met": last.fds / max(last.in_flight, 1) <= warm.fds / max(warm.in_flight, 1) * 1.05
            and bool(after)
            and after[-1].fds - after[-1].upstream_sockets <= baseline.fds + 20,
        },
        "task_growth": {
            "warm": warm.tasks,
            "last": last.tasks,
            "idle_before": baseline.tasks,
            "idle_after": after[-1].tasks if after else None,
            "per_stream_warm": round(warm.tasks / max(warm.in_flight, 1), 3),
            "per_stream_last": round(last.tasks / max(last.in_flight, 1), 3),
            "met": last.tasks / max(last.in_flight, 1) <= warm.tasks / max(warm.in_flight, 1) * 1.05
            and bool(after)
            and after[-1].tasks <= baseline.tasks + 20,
        },
        "unexpected_errors": {"count": tally.unexpected_total, "met": tally.unexpected_total == 0},
    }
    out["all_met"] = all(v["met"] for v in out.values() if isinstance(v, dict))
    return out


def plot(samples: list[Sample], warmup: float, title: str) -> str:
    def series(attr: str, label: str, color: str) -> Series:
        pts = [(s.minute, float(getattr(s, attr))) for s in samples]
        return Series(label, pts, color=color, markers=True)

    guide = [Guide("x", warmup, "end of warm-up")]
    panels = [
        Panel("Server RSS", "minute", "MB", [series("rss_mb", "RSS", PALETTE[0])], guides=guide),
        Panel(
            "Open fds and loop tasks",
            "minute",
            "count",
            [series("fds", "fds", PALETTE[1]), series("tasks", "asyncio tasks", PALETTE[2])],
            guides=guide,
        ),
        Panel(
            "Store (SQLite + WAL)",
            "minute",
            "MB",
            [series("store_mb", "store", PALETTE[3])],
            guides=guide,
        ),
    ]
    return render(panels, title=title, panel_width=360)


def summary(result: dict[str, Any]) -> str:
    c, cfg = result["check"], result["config"]
    lines = [
        f"# Soak {result['stamp']}",
        "",
        f"`{result['command']}`",
        "",
        f"- {cfg['minutes']} min, {cfg['streams']} concurrent clients, ERNIE pace `{PACE}`, "
        f"fault rate {cfg['fault_rate']}, server pinned to CPU {cfg['server_cpu']}",
        f"- streams finished: {result['tally_total']}; unexpected: "
        f"{c['unexpected_errors']['count']}",
        f"- warm-up: {cfg['warmup']} min from minute "
        f"{c['rss_growth_after_warmup'].get('steady_from_minute', 0)}, when the streams in "
        f"flight first reached {STEADY:.0%} of their median under load; from minute "
        f"{cfg['warmup']} by the letter: "
        f"{c['rss_growth_after_warmup'].get('by_the_letter', {}).get('growth', float('nan')):+.1%}"
        f" (from {c['rss_growth_after_warmup'].get('by_the_letter', {}).get('from_mb')} MB at "
        f"minute {c['rss_growth_after_warmup'].get('by_the_letter', {}).get('from_minute')})",
        f"- RSS: {c['rss_growth_after_warmup']['from_mb']} MB at minute "
        f"{c['rss_growth_after_warmup']['from_minute']} → peak "
        f"{c['rss_growth_after_warmup']['peak_mb_after']} MB "
        f"({c['rss_growth_after_warmup']['growth']:+.1%}, "
        f"{c['rss_growth_after_warmup'].get('samples_from_warm')} samples from there) — "
        f"{'met' if c['rss_growth_after_warmup']['met'] else 'MISSED'}; "
        f"{c['rss_growth_after_warmup'].get('in_flight_at_warm', float('nan')):g} streams in "
        f"flight then (median under load "
        f"{c['rss_growth_after_warmup'].get('median_in_flight', float('nan')):g}); within 5 % "
        f"from minute {c['rss_growth_after_warmup'].get('settled_from_minute')} on "
        f"({c['rss_growth_after_warmup'].get('settled_mb')} MB)",
        f"- fds: idle {c['fd_growth']['idle_before']}, warm {c['fd_growth']['warm']}, last "
        f"{c['fd_growth']['last']}, idle after {c['fd_growth']['idle_after']} (of which "
        f"{c['fd_growth']['upstream_pool_after']} the upstream pool's kept-alive sockets) — "
        f"{'met' if c['fd_growth']['met'] else 'MISSED'}",
        f"- tasks: idle {c['task_growth']['idle_before']}, warm {c['task_growth']['warm']}, "
        f"last {c['task_growth']['last']}, idle after {c['task_growth']['idle_after']} — "
        f"{'met' if c['task_growth']['met'] else 'MISSED'}",
        "",
        "| minute | RSS MB | fds | upstream sockets | tasks | in flight | store MB | done "
        "| client lag ms | gc s | trim s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["samples"]:
        lines.append(
            f"| {s['minute']} {'' if s['phase'] == 'load' else s['phase']} | {s['rss_mb']} | "
            f"{s['fds']} | {s['upstream_sockets']} | {s['tasks']:g} | {s['in_flight']:g} | "
            f"{s['store_mb']} | {s['streams_done']} | {s['client_lag_ms']} | "
            f"{s.get('gc_s', 0):g} | {s.get('trim_s', 0):g} |"
        )
    lines += ["", "| outcome | count |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in sorted(result["tally"].items())]
    probes = result.get("probes") or []
    if probes:
        minutes = [f"{p['minute']:g}" for p in probes]
        lines += [
            "",
            "Heap probes (`--probe-at`; RSS, pymalloc arenas, glibc heap in use / free, objects "
            "the collector tracks):",
            "",
            "| minute | RSS MB | arenas | glibc in use MB | glibc free MB | tracked objects |",
            "|---|---|---|---|---|---|",
        ]
        for p in probes:
            lines.append(
                f"| {p['minute']:g} | {p['status']['VmRSS'] / 1e6:.1f} | "
                f"{p['pymalloc'].get('arenas_current')} | "
                f"{p['malloc']['in_use_bytes'] / 1e6:.1f} | {p['malloc']['free_bytes'] / 1e6:.1f} "
                f"| {p['gc_tracked']} |"
            )
        lines += [
            "",
            "Types that grew most from the first probe to any later one (count at each probe):",
            "",
            f"| type | {' | '.join(minutes)} |",
            f"|---|{'---|' * len(minutes)}",
        ]
        lines += [f"| `{n}` | {' | '.join(map(str, c))} |" for n, c in type_growth(probes)]
    if result["unexpected_examples"]:
        lines += ["", "Unexpected, one example each:", ""]
        lines += [f"- `{k}`: {v}" for k, v in result["unexpected_examples"].items()]
    return "\n".join(lines) + "\n"


async def soak(
    args: argparse.Namespace, url: str, pid: int, data_dir: Path, work: Path
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.monotonic()
        baseline = await sample(session, url, pid, data_dir, t0, 0)
        baseline.phase = "idle"
        samples = [baseline]
        load = Load(url, args.fault_rate, args.seed, t0 + args.minutes * 60)
        clients = [asyncio.create_task(load.client(session, n)) for n in range(args.streams)]
        lag = [0.0]
        watch = asyncio.create_task(_watch_lag(lag))
        probes: list[dict[str, Any]] = []
        prober = asyncio.create_task(_probes(pid, work, t0, args.probe_at, probes))
        while time.monotonic() < load.deadline:
            await asyncio.sleep(min(args.sample, max(0.0, load.deadline - time.monotonic())))
            samples.append(await sample(session, url, pid, data_dir, t0, load.tally.done))
            last = samples[-1]
            last.client_lag_ms, lag[0] = round(lag[0] * 1000, 1), 0.0
            print(
                f"[soak] min {last.minute:6.2f} rss {last.rss_mb} MB fds {last.fds} tasks "
                f"{last.tasks:g} in-flight {last.in_flight:g} store {last.store_mb} MB done "
                f"{last.streams_done} unexpected {load.tally.unexpected_total} client lag "
                f"{last.client_lag_ms} ms",
                flush=True,
            )
            for kind, example in load.tally.examples.items():
                print(f"[soak]   {load.tally.counts[f'unexpected:{kind}']} × {kind}: {example}")
        await asyncio.wait(clients, timeout=60)
        for task in [*clients, watch, prober]:
            task.cancel()
    async with aiohttp.ClientSession() as session:  # settle: the resume grace, then idle
        for _ in range(120):
            await asyncio.sleep(1)
            after = await sample(session, url, pid, data_dir, t0, load.tally.done)
            if after.in_flight == 0:
                break
        await asyncio.sleep(2 + args.linger)  # --linger: past the server's quiet collection
        after = await sample(session, url, pid, data_dir, t0, load.tally.done)
        after.phase = "after"
        samples.append(after)
    return {
        "samples": samples,
        "baseline": baseline,
        "tally": load.tally,
        "probes": probes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes before RSS counts")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="one more flag for wenxin serve"
    )
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one more environment variable for wenxin serve only (e.g. PYTHONMALLOC=malloc)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="seconds to wait once idle before the last sample (35: past a quiet collection)",
    )
    parser.add_argument(
        "--probe-at",
        type=float,
        action="append",
        default=[],
        metavar="MINUTE",
        help="probe the server's heap then (objects by type, pymalloc, glibc; the server runs "
        "under bench/memory.py --child); repeatable",
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="with --probe-at: tracemalloc snapshots too"
    )
    parser.add_argument("--server-cpu", default="0", help="taskset CPU list ('' = not pinned)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--report",
        type=Path,
        help="recompute the check, summary and plot of a finished run from its soak.json",
    )
    args = parser.parse_args()
    if args.report is not None:
        return report(args.report)
    raise_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out / f"soak-{stamp}"
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="wenxin-soak-"))
    data_dir = work / "data"
    emulate, emu_url = _start(
        [str(BIN / "wenxin"), "emulate", "--port", "0", "--seed", str(args.seed)],
        work / "emulator.log",
        r"listening on (http://127\.0\.0\.1:\d+)",
        None,
        {},
    )
    global UPSTREAM_PORT
    UPSTREAM_PORT = int(emu_url.rsplit(":", 1)[1])
    try:
        serve_env = dict(item.split("=", 1) for item in args.serve_env)
        child = [*(["--tracemalloc"] if args.tracemalloc else [])] if args.probe_at else None
        serve, url = _start_serve(
            work, data_dir, args.server_cpu or None, emu_url, args.serve_arg, serve_env, child
        )
    except BaseException:
        _stop(emulate)
        raise
    try:
        run = asyncio.run(soak(args, url, serve.pid, data_dir, work))
    finally:
        _stop(serve)
        _stop(emulate)
    samples: list[Sample] = run["samples"]
    tally: Tally = run["tally"]
    result = {
        "stamp": stamp,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": {**{k: str(v) for k, v in vars(args).items()}, "pace": PACE},
        "samples": [asdict(s) for s in samples],
        "tally": dict(tally.counts),
        "tally_total": tally.done,
        "unexpected_examples": tally.examples,
        "probes": run["probes"],
        "check": check(samples, run["baseline"], args.warmup, tally),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
    }
    (out / "soak.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    title = f"wenxin serve soak: {args.streams} ERNIE-paced clients, {args.minutes:g} min"
    (out / "soak.svg").write_text(plot(samples, args.warmup, title))
    (out / "summary.md").write_text(summary(result))
    print(summary(result))
    print(f"[soak] results in {out}")
    return 0 if result["check"]["all_met"] else 1


def report(out: Path) -> int:
    """The check, ``summary.md`` and ``soak.svg`` of the run in ``out`` again, from its
    ``soak.json`` (after a change to :func:`check`; every figure is the run's own)."""
    result = json.loads((out / "soak.json").read_text())
    samples = [Sample(**s) for s in result["samples"]]
    tally = Tally(counts=Counter(result["tally"]), examples=result["unexpected_examples"])
    warmup = float(result["config"]["warmup"])
    result["check"] = check(samples, samples[0], warmup, tally)
    (out / "soak.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    cfg = result["config"]
    title = (
        f"wenxin serve soak: {cfg['streams']} ERNIE-paced clients, {float(cfg['minutes']):g} min"
    )
    (out / "soak.svg").write_text(plot(samples, warmup, title))
    (out / "summary.md").write_text(summary(result))
    print(summary(result))
    return 0 if result["check"]["all_met"] else 1


SERVE_ARGS = ("--max-connections-per-ip", "0", "--max-connections", "0")
"""Every client is on 127.0.0.1: the per-address cap (1,000) would refuse the crowd."""


def _start_serve(
    work: Path,
    data_dir: Path,
    cpu: str | None,
    upstream: str,
    extra: list[str],
    serve_env: dict[str, str],
    child: list[str] | None = None,
) -> tuple[Any, str]:
    env = {
        "WENXIN_UPSTREAM_API": "v2",
        "WENXIN_UPSTREAM_V2_BASE_URL": upstream,
        "WENXIN_UPSTREAM_BEARER_TOKEN": "bce-v3/ALTAK-soak/x",
        "WENXIN_UPSTREAM_EMULATED": "true",
        **serve_env,
    }
    command = [str(BIN / "wenxin"), "serve"]
    if child is not None:  # wenxin serve with memory.py's probe handlers (SIGUSR1)
        memory = ROOT / "bench" / "memory.py"
        command = [sys.executable, str(memory), "--child", str(work), *child, "--"]
    return _start(
        [
            *command,
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            *SERVE_ARGS,
            *extra,
        ],
        work / "serve.log",
        r"wenxin serve on (http://\S+)",
        cpu,
        env,
    )


if __name__ == "__main__":
    raise SystemExit(main())
