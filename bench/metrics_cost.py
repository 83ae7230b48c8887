"""Per-call cost of every ``Metrics`` method (server/_metrics.py), before and after, one run.

Columns, all in nanoseconds per call (the best of ``--repeat`` timeit runs):

- ``before``: the hand-written implementation at git revision ``--before`` (loaded from git);
- ``after``: today's ``Metrics()``;
- ``after mp``: today's ``Metrics(multiprocess_dir=…)``, its flush thread running;
- ``pc`` / ``pc mp``: the same methods written with prometheus_client's own metric objects
  (children cached as ours are), in this process and in a child process started with
  ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client chooses its file-backed values at import).

The implementations take turns within each repeat (``pc mp`` runs alone, in its child
process). ``render`` is timed with 20 routes, 3 end reasons and every histogram child
observed; ``flush`` (multiprocess mode only) after one change to each child.

    .venv/bin/python bench/metrics_cost.py [--before REV] [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODULE = "src/wenxin_stream/server/_metrics.py"
BEFORE = "4fac57e"
"""The last revision with the hand-written Prometheus implementation."""

CALLS = {
    "http_request": "m.http_request('/v1/chat/completions', 200)",
    "stream_started": "m.stream_started()",
    "stream_ended": "m.stream_ended('completed')",
    "error": "m.error('upstream')",
    "observe_ttft": "m.observe_ttft('server', 0.0123)",
    "observe_chunk_gap": "m.observe_chunk_gap(0.0123)",
    "observe_duration": "m.observe_duration('total', 3.2)",
    "tokens": "m.tokens(10, 100)",
    "chars": "m.chars(100, 90)",
}


class PrometheusClientMetrics:
    """The methods of ``Metrics`` written with prometheus_client's Counter/Gauge/Histogram."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from wenxin_stream.server._metrics import DURATION_BUCKETS, GAP_BUCKETS, TTFT_BUCKETS

        r = self.registry = CollectorRegistry()
        self.requests = Counter("wenxin_http_requests", "h", ("route", "status"), registry=r)
        self.ends = Counter("wenxin_stream_ends", "h", ("reason",), registry=r)
        self.errors = Counter("wenxin_errors", "h", ("kind",), registry=r)
        self.in_flight = Gauge("wenxin_streams_in_flight", "h", registry=r)
        ttft = Histogram("wenxin_ttft_seconds", "h", ("part",), registry=r, buckets=TTFT_BUCKETS)
        self.gap = Histogram("wenxin_chunk_gap_seconds", "h", registry=r, buckets=GAP_BUCKETS)
        duration = Histogram(
            "wenxin_stream_duration_seconds", "h", ("part",), registry=r, buckets=DURATION_BUCKETS
        )
        tokens = Counter("wenxin_tokens", "h", ("type",), registry=r)
        self.generated = Counter("wenxin_generated_chars", "h", registry=r)
        self.delivered = Counter("wenxin_delivered_chars", "h", registry=r)
        self.ttft = {p: ttft.labels(p) for p in ("upstream", "server", "total")}
        self.duration = {p: duration.labels(p) for p in ("upstream", "total")}
        self.prompt, self.completion = tokens.labels("prompt"), tokens.labels("completion")

    def http_request(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()

    def stream_started(self) -> None:
        self.in_flight.inc()

    def stream_ended(self, reason: str) -> None:
        self.in_flight.dec()
        self.ends.labels(reason).inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def observe_ttft(self, part: str, seconds: float) -> None:
        self.ttft[part].observe(seconds)

    def observe_chunk_gap(self, seconds: float) -> None:
        self.gap.observe(seconds)

    def observe_duration(self, part: str, seconds: float) -> None:
        self.duration[part].observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        self.prompt.inc(prompt)
        self.completion.inc(completion)

    def chars(self, generated: int, delivered: int) -> None:
        self.generated.inc(generated)
        self.delivered.inc(delivered)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def populate(m: Any) -> None:
    for i in range(20):
        m.http_request(f"/route/{i}", 200)
    for reason in ("completed", "cancelled", "upstream_error"):
        m.stream_ended(reason)
    for part in ("upstream", "server", "total"):
        m.observe_ttft(part, 0.3)
    for part in ("upstream", "total"):
        m.observe_duration(part, 3.0)
    m.observe_chunk_gap(0.02)


def cost(impls: dict[str, Any], number: int, repeat: int) -> dict[str, dict[str, float]]:
    """ns per call of every method of every implementation; the implementations take turns
    within each repeat, so a burst of load elsewhere on the machine hits them all alike."""
    best: dict[str, dict[str, float]] = {name: {} for name in impls}

    def time(name: str, row: str, timer: timeit.Timer, n: int) -> None:
        ns = timer.timeit(number=n) / n * 1e9
        best[name][row] = min(ns, best[name].get(row, ns))

    for row, stmt in CALLS.items():
        for _ in range(repeat):
            for name, m in impls.items():
                time(name, row, timeit.Timer(stmt, globals={"m": m}), number)
    n = max(1, number // 1000)
    for m in impls.values():
        populate(m)
    for _ in range(repeat):
        for name, m in impls.items():
            time(name, "render", timeit.Timer(m.render), n)
            if getattr(m, "multiprocess_dir", None) is not None:

                def touch_and_flush(m: Any = m) -> None:
                    populate(m)
                    m.flush()

                time(name, "flush", timeit.Timer(touch_and_flush), n)
    return best


def load_before(rev: str, directory: str) -> Any:
    """``Metrics()`` of the module as it was at ``rev`` (written out and imported)."""
    source = subprocess.run(  # noqa: S603
        ["git", "show", f"{rev}:{MODULE}"],  # noqa: S607
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = Path(directory, "metrics_before.py")
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("metrics_before", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Metrics()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="git revision of the old module")
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pc-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pc_only:  # the child process, PROMETHEUS_MULTIPROC_DIR set
        print(json.dumps(cost({"pc mp": PrometheusClientMetrics()}, args.number, args.repeat)))
        return

    from wenxin_stream.server._metrics import Metrics

    with tempfile.TemporaryDirectory() as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        child = [sys.executable, __file__, "--pc-only", f"--number={args.number}"]
        child.append(f"--repeat={args.repeat}")
        out = subprocess.run(child, env=env, capture_output=True, check=True)  # noqa: S603
        pc_mp = json.loads(out.stdout)
    with tempfile.TemporaryDirectory() as directory:
        mp = Metrics(multiprocess_dir=directory)
        impls = {
            "before": load_before(args.before, directory),
            "after": Metrics(),
            "after mp": mp,
            "pc": PrometheusClientMetrics(),
        }
        columns = cost(impls, args.number, args.repeat) | pc_mp
        mp.close()

    rows = [*CALLS, "render", "flush"]
    print(f"{'method':<20}" + "".join(f"{c:>12}" for c in columns))
    for row in rows:
        cells = "".join(
            f"{columns[c][row]:>12,.0f}" if row in columns[c] else f"{'-':>12}" for c in columns
        )
        print(f"{row:<20}{cells}")


if __name__ == "__main__":
    main()
