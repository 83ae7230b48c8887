"""Prometheus metrics of ``wenxin serve``, kept and rendered here (no client library).

Theory of operation
===================

Three metric types, each a family of *children*, one per set of label values:

- :class:`Counter` — a value that only goes up (``inc``);
- :class:`Gauge` — a value that goes up and down (``inc``, ``dec``, ``set``);
- :class:`Histogram` — observations counted into buckets with fixed upper bounds, plus their
  sum and count.

The hot path touches only children: :meth:`Counter.labels` finds (or makes) the child for a
tuple of label values with one dict lookup, and :meth:`Metrics` keeps the children of known
label values (``part="upstream"``, …) in attributes, so a call such as
:meth:`Metrics.observe_ttft` is an attribute read, a ``bisect`` into the bucket bounds (a
tuple of floats computed once), and three additions: no allocation beyond the float results
themselves. Buckets are counted *non*-cumulatively; :meth:`Metrics.render` accumulates them,
as Prometheus's ``le`` buckets are cumulative.

Label values come from the server's own vocabulary (route templates, status codes, end
reasons), but a family never grows past ``max_series`` children: further label sets share one
child whose label values are all ``"other"``, so a bug cannot turn the metrics into a memory
leak.

:meth:`Metrics.render` writes the Prometheus text exposition format 0.0.4
(:data:`CONTENT_TYPE`): per family ``# HELP`` and ``# TYPE`` lines, one sample per line,
histograms as ``_bucket{le="…"}`` (ending with ``le="+Inf"``), ``_sum`` and ``_count``; label
values escape ``\\``, ``"`` and newlines, help text ``\\`` and newlines. Values print like Go's
``strconv.FormatFloat(v, 'g', -1, 64)`` (``1``, ``0.25``, ``+Inf``).

Not thread-safe and needs no lock: the server updates and renders metrics from its one event
loop. (Several uvicorn worker processes would each have their own; run one per port.)
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import Any, Generic, Literal, TypeVar

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "GAP_BUCKETS",
    "TTFT_BUCKETS",
    "Counter",
    "FunctionMetric",
    "Gauge",
    "Histogram",
    "Metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of :meth:`Metrics.render`'s output."""

TTFT_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Time-to-first-token bounds (s): sub-millisecond for what the server adds, seconds for
ERNIE's own."""

GAP_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Bounds (s) of the gap between two chunks of one stream."""

DURATION_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
"""Bounds (s) of a whole stream's duration."""

DEFAULT_MAX_SERIES = 1000
"""Most children (label sets) per family; more share one ``"other"`` child."""

END_REASONS = (
    "completed", "length", "content_filtered", "cancelled", "timed_out", "upstream_error",
    "incomplete", "client_disconnected", "server_shutdown",
)  # fmt: skip
"""End reasons (docs/SERVER-API.md) whose counters exist, at zero, from the start."""

ERROR_KINDS = ("upstream", "timeout", "client", "internal")
"""Error kinds whose counters exist from the start."""

C = TypeVar("C")

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def format_value(value: float) -> str:
    """A sample value as Prometheus prints it (Go's shortest ``'g'`` form)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def escape_label_value(value: str) -> str:
    """A label value escaped for the text format (``\\``, ``"``, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Family(Generic[C]):
    """A metric family: name, help, label names and the children by label values."""

    kind: Literal["counter", "gauge", "histogram"]

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_RE.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._max_series = max_series
        self._children: dict[tuple[str, ...], C] = {}

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str) -> C:
        """The child for these label values (in :attr:`labelnames` order), made on first
        use."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")
            if len(self._children) >= self._max_series:
                values = ("other",) * len(self.labelnames)
                child = self._children.get(values)
                if child is not None:
                    return child
            child = self._children[values] = self._new_child()
        return child

    def samples(self) -> Iterable[tuple[str, str, float]]:
        """``(suffix, label text, value)`` of every sample, for rendering."""
        raise NotImplementedError

    def render(self, out: list[str]) -> None:
        """Append this family's lines in the text format to ``out``."""
        out.append(f"# HELP {self.name} {_escape_help(self.help)}\n")
        out.append(f"# TYPE {self.name} {self.kind}\n")
        for suffix, labels, value in self.samples():
            out.append(f"{self.name}{suffix}{labels} {format_value(value)}\n")


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self.value += amount


class _GaugeValue(_Value):
    __slots__ = ()

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        self.value -= amount

    def set(self, value: float) -> None:
        """Set the value."""
        self.value = value


class Counter(_Family[_Value]):
    """A counter family (name it ``…_total``). ``inc`` on an unlabelled counter."""

    kind = "counter"

    def _new_child(self) -> _Value:
        return _Value()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) to the unlabelled counter."""
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        self.labels().value += amount

    def samples(self) -> Iterable[tuple[str, str, float]]:
        """One sample per child."""
        for values, child in self._children.items():
            yield "", _label_text(self.labelnames, values), child.value


class Gauge(_Family[_GaugeValue]):
    """A gauge family; ``inc`` / ``dec`` / ``set`` act on the unlabelled gauge."""

    kind = "gauge"

    def _new_child(self) -> _GaugeValue:
        return _GaugeValue()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self.labels().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        self.labels().dec(amount)

    def set(self, value: float) -> None:
        """Set the value."""
        self.labels().set(value)

    def samples(self) -> Iterable[tuple[str, str, float]]:
        """One sample per child."""
        for values, child in self._children.items():
            yield "", _label_text(self.labelnames, values), child.value


class _Buckets:
    """One histogram child: per-bucket counts (not cumulative), sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation (NaN is ignored)."""
        if value != value:  # NaN
            return
        self.counts[bisect_left(self.bounds, value)] += 1  # first bound >= value: le
        self.sum += value
        self.count += 1


class Histogram(_Family[_Buckets]):
    """A histogram family with the given bucket upper bounds (``+Inf`` is implicit)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
        *,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if not bounds or any(a >= b for a, b in pairwise(bounds)):
            raise ValueError("histogram buckets must be increasing and not empty")
        self.bounds = bounds
        super().__init__(name, help, labelnames, max_series=max_series)

    def _new_child(self) -> _Buckets:
        return _Buckets(self.bounds)

    def observe(self, value: float) -> None:
        """Observe ``value`` in the unlabelled histogram."""
        self.labels().observe(value)

    def samples(self) -> Iterable[tuple[str, str, float]]:
        """Cumulative ``_bucket`` samples, then ``_sum`` and ``_count``, per child."""
        les = [format_value(b) for b in self.bounds] + ["+Inf"]
        names = (*self.labelnames, "le")
        for values, child in self._children.items():
            running = 0
            for le, count in zip(les, child.counts, strict=True):
                running += count
                yield "_bucket", _label_text(names, (*values, le)), running
            labels = _label_text(self.labelnames, values)
            yield "_sum", labels, child.sum
            yield "_count", labels, child.count


class FunctionMetric:
    """A value read when the metrics are rendered (a queue length, a drop count), shown as a
    ``gauge`` or a ``counter``."""

    def __init__(
        self, name: str, help: str, read: Callable[[], float], *, kind: str = "gauge"
    ) -> None:
        if not _NAME_RE.fullmatch(name) or kind not in ("gauge", "counter"):
            raise ValueError(f"invalid metric {name!r} of kind {kind!r}")
        self.name, self.help, self.kind, self._read = name, help, kind, read

    def render(self, out: list[str]) -> None:
        """Append this metric's lines to ``out``."""
        out.append(f"# HELP {self.name} {_escape_help(self.help)}\n")
        out.append(f"# TYPE {self.name} {self.kind}\n")
        out.append(f"{self.name} {format_value(float(self._read()))}\n")


class Metrics:
    """The metrics of docs/SERVER-API.md, with one cheap method per thing the server counts.

    Extra families may be added with :meth:`register`; :meth:`render` writes them all.
    """

    def __init__(self) -> None:
        self.requests = Counter(
            "wenxin_http_requests_total", "HTTP requests answered, by route and status.",
            ("route", "status"),
        )  # fmt: skip
        self.stream_ends = Counter(
            "wenxin_stream_ends_total", "Streams ended, by end reason.", ("reason",)
        )
        self.errors = Counter("wenxin_errors_total", "Errors, by kind.", ("kind",))
        self.in_flight = Gauge("wenxin_streams_in_flight", "Streams open now.")
        self.ttft = Histogram(
            "wenxin_ttft_seconds",
            "Time to first token: ERNIE's (upstream), added by the server (server), total.",
            TTFT_BUCKETS, ("part",),
        )  # fmt: skip
        self.chunk_gap = Histogram(
            "wenxin_chunk_gap_seconds", "Time between two chunks of a stream.", GAP_BUCKETS
        )
        self.duration = Histogram(
            "wenxin_stream_duration_seconds",
            "Stream duration: ERNIE's answer (upstream) and the whole stream (total).",
            DURATION_BUCKETS, ("part",),
        )  # fmt: skip
        self.token_counter = Counter(
            "wenxin_tokens_total", "Tokens used, by type (prompt, completion).", ("type",)
        )
        self.generated = Counter(
            "wenxin_generated_chars_total", "Characters of answers generated by ERNIE."
        )
        self.delivered = Counter(
            "wenxin_delivered_chars_total", "Characters of answers delivered to clients."
        )
        self._families: list[_Family[Any] | FunctionMetric] = []
        for family in (
            self.requests, self.stream_ends, self.errors, self.in_flight, self.ttft,
            self.chunk_gap, self.duration, self.token_counter, self.generated, self.delivered,
        ):  # fmt: skip
            self.register(family)
        # children of known label values, made now: the hot path reads attributes
        for reason in END_REASONS:
            self.stream_ends.labels(reason)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self._ttft = {part: self.ttft.labels(part) for part in ("upstream", "server", "total")}
        self._duration = {part: self.duration.labels(part) for part in ("upstream", "total")}
        self._gap = self.chunk_gap.labels()
        self._prompt = self.token_counter.labels("prompt")
        self._completion = self.token_counter.labels("completion")
        self._generated = self.generated.labels()
        self._delivered = self.delivered.labels()
        self._in_flight = self.in_flight.labels()

    def register(self, family: Counter | Gauge | Histogram | FunctionMetric) -> None:
        """Add a family to :meth:`render`'s output (names must be unique)."""
        if any(f.name == family.name for f in self._families):
            raise ValueError(f"metric {family.name!r} is already registered")
        self._families.append(family)

    def http_request(self, route: str, status: int) -> None:
        """Count an HTTP answer: ``route`` is the route template (not the raw path)."""
        self.requests.labels(route, str(status)).value += 1

    def stream_started(self) -> None:
        """A stream started (in-flight + 1)."""
        self._in_flight.value += 1

    def stream_ended(self, reason: str) -> None:
        """A stream ended with ``reason`` (in-flight - 1)."""
        self._in_flight.value -= 1
        self.stream_ends.labels(reason).value += 1

    def error(self, kind: str) -> None:
        """Count an error of ``kind`` (``upstream``, ``timeout``, ``client``, ``internal``)."""
        self.errors.labels(kind).value += 1

    def observe_ttft(self, part: str, seconds: float) -> None:
        """Observe a time to first token; ``part`` is ``upstream``, ``server`` or ``total``."""
        child = self._ttft.get(part)
        (self.ttft.labels(part) if child is None else child).observe(seconds)

    def observe_chunk_gap(self, seconds: float) -> None:
        """Observe the time between two chunks."""
        self._gap.observe(seconds)

    def observe_duration(self, part: str, seconds: float) -> None:
        """Observe a stream's duration; ``part`` is ``upstream`` or ``total``."""
        child = self._duration.get(part)
        (self.duration.labels(part) if child is None else child).observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        """Count the tokens of one answer's usage."""
        self._prompt.value += prompt
        self._completion.value += completion

    def chars(self, generated: int, delivered: int) -> None:
        """Count the characters one answer generated and delivered."""
        self._generated.value += generated
        self._delivered.value += delivered

    def render(self) -> bytes:
        """Every metric in the Prometheus text format 0.0.4 (:data:`CONTENT_TYPE`)."""
        out: list[str] = []
        for family in self._families:
            family.render(out)
        return "".join(out).encode("utf-8")
