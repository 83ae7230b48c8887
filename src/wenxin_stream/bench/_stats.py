"""Percentiles, the measurements of one run, and the result model.

Theory of operation
===================

During a run every per-chunk measurement is appended to an ``array('d')`` of seconds held by
one :class:`Collector` (8 bytes a value, an append costs about as much as an attribute
store); per-stream values (TTFT, total latency) are added when a stream ends. Nothing is
sorted until the run is over. Streams that started before the measurement window (ramp,
warm-up) append to separate "warm" arrays, which only the live progress line reads.

Counters named ``all_*`` count every stream and chunk whatever the window; the runner takes
snapshots of them at the start and end of the measurement window, and throughput is their
difference over the window's length.

:func:`percentile` uses the nearest-rank definition: the p-th percentile of n sorted values is
the value at rank ⌈p/100 × n⌉ (1-based), so it is always one of the measured values, p100 is
the maximum, and p0 the minimum. :func:`summarize` turns a sample into a :class:`Summary`
in milliseconds; :func:`quantile_points` thins a sample to a fixed number of (value, fraction)
points for plots and ``result.json``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ClientCost",
    "Collector",
    "ProcessStats",
    "RunResult",
    "Summary",
    "Throughput",
    "percentile",
    "quantile_points",
    "summarize",
]

MAX_SAMPLES_PER_REASON = 3
"""How many error messages are kept per failure reason."""


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 ≤ p ≤ 100) of already sorted values.

    Raises:
        ValueError: no values, or ``p`` out of range.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of an empty sample")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], not {p}")
    rank = math.ceil(round(p * n / 100, 9))  # round: 99.9 × 1000 / 100 is 999.0000000000001
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Distribution of one measurement, in milliseconds (``None`` fields: no values)."""

    count: int = 0
    mean: float | None = None
    min: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None


def _ms(value: float) -> float:
    return round(value * 1000.0, 3)


def summarize(values: Sequence[float] | array[float]) -> Summary:
    """Summarise a sample given in seconds as a :class:`Summary` in milliseconds."""
    if not values:
        return Summary()
    ordered = sorted(values)
    return Summary(
        count=len(ordered),
        mean=_ms(math.fsum(ordered) / len(ordered)),
        min=_ms(ordered[0]),
        p50=_ms(percentile(ordered, 50)),
        p90=_ms(percentile(ordered, 90)),
        p99=_ms(percentile(ordered, 99)),
        p999=_ms(percentile(ordered, 99.9)),
        max=_ms(ordered[-1]),
    )


def quantile_points(values: Sequence[float] | array[float], points: int = 200) -> list[list[float]]:
    """``[[value_ms, fraction], …]``: the empirical CDF thinned to about ``points`` points
    (always including the minimum and the maximum)."""
    if not values:
        return []
    ordered = sorted(values)
    n = len(ordered)
    step = max(1, n // points)
    ranks = list(range(step, n, step))
    if not ranks or ranks[-1] != n:
        ranks.append(n)
    out = [[_ms(ordered[0]), round(1 / n, 6)]]
    out += [[_ms(ordered[r - 1]), round(r / n, 6)] for r in ranks if r > 1]
    return out


@dataclass(slots=True)
class Collector:
    """Everything one run measures (seconds); filled by the stream recorders."""

    ttft: array[float] = field(default_factory=lambda: array("d"))
    lateness: array[float] = field(default_factory=lambda: array("d"))
    gaps: array[float] = field(default_factory=lambda: array("d"))
    total: array[float] = field(default_factory=lambda: array("d"))
    warm_lateness: array[float] = field(default_factory=lambda: array("d"))
    behind: array[float] = field(default_factory=lambda: array("d"))
    warm_behind: array[float] = field(default_factory=lambda: array("d"))
    warm_gaps: array[float] = field(default_factory=lambda: array("d"))
    started: int = 0
    completed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    error_samples: dict[str, list[str]] = field(default_factory=dict)
    cut_at_end: int = 0
    chunks: int = 0
    chunks_lost: int = 0
    streams_with_loss: int = 0
    tokens: int = 0
    streams_with_usage: int = 0
    late_by_stamp: int = 0
    late_by_schedule: int = 0
    all_chunks: int = 0
    all_completed: int = 0
    all_failed: int = 0
    all_tokens: int = 0

    def fail(self, reason: str, detail: str, *, measured: bool) -> None:
        """Count a failed stream (measured or not) and keep a sample of its message."""
        self.all_failed += 1
        if not measured:
            return
        self.failures[reason] = self.failures.get(reason, 0) + 1
        samples = self.error_samples.setdefault(reason, [])
        if len(samples) < MAX_SAMPLES_PER_REASON and detail:
            samples.append(detail[:300])

    @property
    def failed(self) -> int:
        """Measured streams that failed."""
        return sum(self.failures.values())


@dataclass(frozen=True, slots=True)
class Throughput:
    """Rates over the measurement window, counted by arrival time inside the window."""

    streams_per_s: float
    chunks_per_s: float
    tokens_per_s: float | None


@dataclass(frozen=True, slots=True)
class ClientCost:
    """The load generator's own cost over the measurement window."""

    cpu_s: float
    wall_s: float
    cpu_percent: float
    cpu_ms_per_1000_chunks: float | None
    event_loop: str
    max_open_streams: int
    loop_lag_max_ms: float | None = None
    cpu_wait_percent: float | None = None

    @property
    def starved_or_saturated(self) -> str:
        """Why the client may have bounded the results (empty when it did not)."""
        if self.cpu_wait_percent is not None and self.cpu_wait_percent > 10:
            return (
                f"the load generator waited for a CPU {self.cpu_wait_percent:.0f}% of the time "
                "(the machine is oversubscribed)"
            )
        if self.cpu_percent > 90:
            return f"the load generator used {self.cpu_percent:.0f}% of a core"
        if self.loop_lag_max_ms is not None and self.loop_lag_max_ms > 200:
            return f"the load generator's event loop lagged up to {self.loop_lag_max_ms:.0f} ms"
        return ""


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """CPU (% of one core) and RSS (MiB) of a target process sampled from /proc."""

    label: str
    pid: int
    samples: int
    cpu_mean: float | None
    cpu_max: float | None
    rss_mean_mb: float | None
    rss_max_mb: float | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one run at one concurrency."""

    concurrency: int
    window_s: float
    streams_started: int
    streams_completed: int
    streams_failed: int
    streams_cut_at_end: int
    failures: dict[str, int]
    error_samples: dict[str, list[str]]
    error_rate: float
    chunks_received: int
    chunks_expected_per_stream: int | None
    chunks_lost: int
    streams_with_loss: int
    ttft_ms: Summary
    lateness_ms: Summary
    lateness_method: str
    lateness_chunks: dict[str, int]
    gap_ms: Summary
    total_ms: Summary
    behind_schedule_ms: Summary
    throughput: Throughput
    client: ClientCost
    processes: list[ProcessStats]
    cdf: dict[str, list[list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of everything (with ``client.bounded_by``: why the client
        may have bounded the results, ``""`` when it did not)."""
        out = asdict(self)
        out["client"]["bounded_by"] = self.client.starved_or_saturated
        out["upstream_behind"] = self.upstream_behind
        return out

    @property
    def upstream_behind(self) -> str:
        """A warning when the paced upstream fell behind its own schedule while the stamped
        lateness stayed low: then the upstream (one emulator process), not the target, is the
        bottleneck. Empty otherwise."""
        late, behind = self.lateness_ms.p99, self.behind_schedule_ms.p99
        if self.lateness_method != "stamp" or late is None or behind is None:
            return ""
        if behind - late < 500:
            return ""
        return (
            f"the paced upstream fell behind its schedule (p99 {behind:,.0f} ms behind, TTFT "
            f"p99 {self.ttft_ms.p99 or 0:,.0f} ms) while stamped lateness stayed at p99 "
            f"{late:,.1f} ms: the upstream, not the target, is the bottleneck"
        )


def lateness_method(by_stamp: int, by_schedule: int) -> str:
    """``stamp``, ``schedule``, ``stamp+schedule`` or ``none``: how lateness was measured."""
    if by_stamp and by_schedule:
        return "stamp+schedule"
    if by_stamp:
        return "stamp"
    if by_schedule:
        return "schedule"
    return "none"
