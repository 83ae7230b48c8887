"""Prometheus metrics of ``wenxin serve``: cheap in-process values, exposed through
prometheus_client (a registry of our own per :class:`Metrics`, and its multiprocess mode).

Theory of operation
===================

Three metric types, each a family of *children*, one per set of label values:

- :class:`Counter` — a value that only goes up (``inc``);
- :class:`Gauge` — a value that goes up and down (``inc``, ``dec``, ``set``);
- :class:`Histogram` — observations counted into buckets with fixed upper bounds, plus their
  sum and count.

The hot path touches only children, which are plain Python objects of ours, not
prometheus_client's: :meth:`Counter.labels` finds (or makes) the child for a tuple of label
values with one dict lookup, and :meth:`Metrics` keeps the children of known label values
(``part="upstream"``, …) in attributes, so a call such as :meth:`Metrics.observe_chunk_gap` is
an attribute read, a ``bisect`` into the bucket bounds (a tuple of floats computed once), and
three additions: no lock, no allocation beyond the float results. prometheus_client's own
``Histogram.observe`` takes a lock per bucket update and walks the bounds linearly, and its
``labels()`` converts and locks on every call; in multiprocess mode each update is also an
mmap write. Measured per call (``bench/metrics_cost.py``, one run on the shared 2-core dev
machine, ns; *mp*: multiprocess mode, its flush thread running; *pc*: the same methods written
with prometheus_client's objects, children cached as ours are; *pc mp*: those with
``PROMETHEUS_MULTIPROC_DIR`` set):

=================  ======  =====  =====  ======  ======
method             before  after  mp     pc      pc mp
=================  ======  =====  =====  ======  ======
http_request          356    361    356   2,045   4,431
stream_started         81     85     85     856   1,517
stream_ended          244    252    272   2,615   7,390
error                 230    213    206   1,884   5,236
observe_ttft          273    284    280   1,181   2,766
observe_chunk_gap     241    240    238   1,079   2,819
observe_duration      280    278    275   1,234   3,146
tokens                115    118    121   1,033   3,324
chars                 115    119    115   1,006   2,721
render (µs)           362    708  1,847   1,719   1,660
flush (µs)              -      -    100       -       -
=================  ======  =====  =====  ======  ======

The per-call code is the same as before prometheus_client came in, and so is its cost.
``render`` (once per scrape) now goes through the registry's ``Metric`` objects: about twice
the old cost in one process; in multiprocess mode it reads and merges every process's files.
``flush`` is one pass of the thread after changes to 29 children (20 routes, 3 end reasons,
every histogram child): it writes only the values that changed, so an idle second costs less.

prometheus_client does the rest (:attr:`Metrics.registry`, a ``CollectorRegistry`` per
instance, never the global one: tests make many servers in one process):

- **one process** — every family is a prometheus_client *collector* registered in the
  registry; its ``collect()`` turns the children into ``Metric`` families when scraped, so
  prometheus_client's own exporters work on :attr:`Metrics.registry` too;
- **several processes** (``Metrics(multiprocess_dir=…)``) — each process copies its values
  into files of its own in that directory and the registry holds prometheus_client's
  ``MultiProcessCollector``, which reads every process's files: counters and histograms are
  summed over the workers, gauges combined by the mode each chose (``wenxin_streams_in_flight``
  is ``livesum``: the streams open in live workers). See :mod:`._metrics_files` for when the
  copies are made (at render, every ``flush_interval``, at exit) and what that means.

Multiprocess mode is an explicit argument, never read from the environment here (tests make
many ``Metrics`` in one process; a variable set in a developer's shell must not make them
share files). The place to honour prometheus_client's conventional ``PROMETHEUS_MULTIPROC_DIR``
is the settings layer, which reads the environment once, at the edge; nothing maps it yet.
(prometheus_client switches its *own* metric objects to files when that variable is set at
import; we make none, so the variable alone changes nothing here.)

Label values come from the server's own vocabulary (route templates, status codes, end
reasons), but a family never grows past ``max_series`` children (per process): further label
sets share one child whose label values are all ``"other"``, so a bug cannot turn the metrics
into a memory leak.

:meth:`Metrics.render` writes the Prometheus text format 0.0.4 (:data:`CONTENT_TYPE`) of
what the registry collects with our own writer (:mod:`._metrics_text`: prometheus_client's
would rename the documented counter ``wenxin_gc_pause_seconds``), so the exposition is byte
for byte what it was before prometheus_client came in.

Updates and renders come from the server's one event loop; no lock is needed for them. In
multiprocess mode a thread also reads the values (see :mod:`._metrics_files`).
"""

from __future__ import annotations

import math
import os
import re
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ._metrics_files import FLUSH_INTERVAL, FileSample, ProcessFiles, collector
from ._metrics_files import mark_process_dead as mark_process_dead
from ._metrics_text import format_value, text_format

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "GAP_BUCKETS",
    "GAUGE_MODES",
    "TTFT_BUCKETS",
    "USAGE_MAX_SERIES",
    "Counter",
    "FunctionMetric",
    "Gauge",
    "Histogram",
    "Metrics",
    "mark_process_dead",
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
USAGE_MAX_SERIES = 200
"""Label sets of each usage family (models × channels × types): beyond them, ``other``."""
"""Most children (label sets) per family; more share one ``"other"`` child."""

GAUGE_MODES = ("all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum")
"""How a gauge combines over processes in multiprocess mode (prometheus_client's modes;
``live…`` ones forget a process once it is marked dead). ``all`` (the default, as in
prometheus_client) keeps one series per process, labelled ``pid``. The ``mostrecent`` modes
are left out: our values are copied into the files later than they are set."""

END_REASONS = (
    "completed", "length", "content_filtered", "cancelled", "timed_out", "upstream_error",
    "incomplete", "client_disconnected", "server_shutdown", "server_crashed",
    "interrupted", "taken_over",
)  # fmt: skip
"""End reasons (docs/SERVER-API.md) whose counters exist, at zero, from the start."""

ERROR_KINDS = ("upstream", "timeout", "client", "internal")
"""Error kinds whose counters exist from the start."""

C = TypeVar("C")

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Series = tuple[str, tuple[str, ...], tuple[str, ...], float]
"""``(sample name, label names, label values, value)``."""


def _metric_name(name: str, kind: str) -> str:
    # prometheus_client names a counter family without its samples' "_total"
    return name.removesuffix("_total") if kind == "counter" else name


class _Family(Collector, Generic[C]):
    """A metric family: name, help, label names and the children by label values; a
    prometheus_client collector of itself."""

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
        self.metric_name = _metric_name(name, self.kind)
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

    def series(self) -> Iterator[Series]:
        """Every sample as the text format shows it."""
        raise NotImplementedError

    def file_samples(self) -> Iterator[FileSample]:
        """Every sample as the multiprocess files hold it."""
        return self.series()

    @property
    def file_type(self) -> str:
        """The kind of multiprocess file the samples go to."""
        return self.kind

    def describe(self) -> list[Metric]:
        """This family without samples (for the registry's name check)."""
        return [Metric(self.metric_name, self.help, self.kind)]

    def collect(self) -> list[Metric]:
        """This family and its samples, read now."""
        metric = Metric(self.metric_name, self.help, self.kind)
        for name, labelnames, values, value in self.series():
            metric.add_sample(name, dict(zip(labelnames, values, strict=True)), value)
        return [metric]


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

    def series(self) -> Iterator[Series]:
        """One sample per child."""
        for values, child in list(self._children.items()):
            yield self.name, self.labelnames, values, child.value


class Gauge(_Family[_GaugeValue]):
    """A gauge family; ``inc`` / ``dec`` / ``set`` act on the unlabelled gauge.
    ``multiprocess_mode`` is one of :data:`GAUGE_MODES`."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        multiprocess_mode: str = "all",
    ) -> None:
        if multiprocess_mode not in GAUGE_MODES:
            raise ValueError(f"invalid multiprocess mode {multiprocess_mode!r}")
        self.multiprocess_mode = multiprocess_mode
        super().__init__(name, help, labelnames, max_series=max_series)

    @property
    def file_type(self) -> str:
        """``gauge_<mode>``."""
        return f"gauge_{self.multiprocess_mode}"

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

    def series(self) -> Iterator[Series]:
        """One sample per child."""
        for values, child in list(self._children.items()):
            yield self.name, self.labelnames, values, child.value


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
        self._les = (*(format_value(b) for b in bounds), "+Inf")
        super().__init__(name, help, labelnames, max_series=max_series)
        self._bucket_names = (*self.labelnames, "le")

    def _new_child(self) -> _Buckets:
        return _Buckets(self.bounds)

    def observe(self, value: float) -> None:
        """Observe ``value`` in the unlabelled histogram."""
        self.labels().observe(value)

    def series(self) -> Iterator[Series]:
        """Cumulative ``_bucket`` samples, then ``_sum`` and ``_count``, per child."""
        bucket, names = f"{self.name}_bucket", self._bucket_names
        for values, child in list(self._children.items()):
            running = 0
            for le, count in zip(self._les, list(child.counts), strict=True):
                running += count
                yield bucket, names, (*values, le), running
            yield f"{self.name}_sum", self.labelnames, values, child.sum
            yield f"{self.name}_count", self.labelnames, values, child.count

    def file_samples(self) -> Iterator[FileSample]:
        """Per-bucket counts (prometheus_client's files keep them apart) and the sum; the
        reader adds the buckets up and derives ``_count`` from them."""
        bucket, names = f"{self.name}_bucket", self._bucket_names
        for values, child in list(self._children.items()):
            for le, count in zip(self._les, list(child.counts), strict=True):
                yield bucket, names, (*values, le), count
            yield f"{self.name}_sum", self.labelnames, values, child.sum


class FunctionMetric(Collector):
    """A value read when the metrics are rendered (a queue length, a drop count), shown as a
    ``gauge`` or a ``counter``. In multiprocess mode it is read when the process flushes
    (also from the flush thread, so ``read`` must be safe to call from any thread): a counter
    is summed over the processes, a gauge combined by its ``multiprocess_mode``."""

    labelnames: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        help: str,
        read: Callable[[], float],
        *,
        kind: str = "gauge",
        multiprocess_mode: str = "all",
    ) -> None:
        if not _NAME_RE.fullmatch(name) or kind not in ("gauge", "counter"):
            raise ValueError(f"invalid metric {name!r} of kind {kind!r}")
        if multiprocess_mode not in GAUGE_MODES:
            raise ValueError(f"invalid multiprocess mode {multiprocess_mode!r}")
        self.name, self.help, self.kind, self._read = name, help, kind, read
        self.metric_name = _metric_name(name, kind)
        self.file_type = "counter" if kind == "counter" else f"gauge_{multiprocess_mode}"

    def series(self) -> Iterator[Series]:
        """The one sample, read now."""
        yield self.name, (), (), float(self._read())

    def file_samples(self) -> Iterator[FileSample]:
        """The one sample, read now."""
        return self.series()

    def describe(self) -> list[Metric]:
        """This metric without samples."""
        return [Metric(self.metric_name, self.help, self.kind)]

    def collect(self) -> list[Metric]:
        """This metric, read now."""
        metric = Metric(self.metric_name, self.help, self.kind)
        metric.add_sample(self.name, {}, float(self._read()))
        return [metric]


class Metrics:
    """The metrics of docs/SERVER-API.md, with one cheap method per thing the server counts.

    Extra families may be added with :meth:`register`; :meth:`render` writes them all.
    With ``multiprocess_dir``, this process's values are copied into files of its own there
    every ``flush_interval`` seconds (and at render and close), and :meth:`render` answers
    for every process writing to that directory (one ``Metrics`` per process per directory).
    """

    def __init__(
        self,
        *,
        multiprocess_dir: str | os.PathLike[str] | None = None,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.registry = CollectorRegistry()
        """prometheus_client's registry of these metrics (in multiprocess mode: of every
        process's, as of their last flush)."""
        self.requests = Counter(
            "wenxin_http_requests_total", "HTTP requests answered, by route and status.",
            ("route", "status"),
        )  # fmt: skip
        self.stream_ends = Counter(
            "wenxin_stream_ends_total", "Streams ended, by end reason.", ("reason",)
        )
        self.errors = Counter("wenxin_errors_total", "Errors, by kind.", ("kind",))
        self.in_flight = Gauge(
            "wenxin_streams_in_flight", "Streams open now.", multiprocess_mode="livesum"
        )
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
        self.usage_tokens = Counter(
            "wenxin_usage_tokens_total",
            "Tokens of upstream requests as accounted (usage records), by model, channel and "
            "type (prompt, completion).",
            ("model", "channel", "type"), max_series=USAGE_MAX_SERIES,
        )  # fmt: skip
        self.usage_cost = Counter(
            "wenxin_usage_cost_cny_total",
            "Cost of upstream requests in CNY at the catalogue's (or channel's) prices, by "
            "model and channel.",
            ("model", "channel"), max_series=USAGE_MAX_SERIES,
        )  # fmt: skip
        self.usage_requests = Counter(
            "wenxin_usage_requests_total",
            "Upstream requests accounted, by model, channel and source (reported: the "
            "upstream's usage; estimated: it reported none).",
            ("model", "channel", "source"), max_series=USAGE_MAX_SERIES,
        )  # fmt: skip
        self.overlaps = Counter(
            "wenxin_admission_overlaps_total",
            "Starts whose upstream request went out while their admission was decided "
            "(a fleet's shared limits), by decision (admitted, refused: the request was cut).",
            ("decision",),
        )
        self._families: list[_Family[Any] | FunctionMetric] = []
        self._files: ProcessFiles | None = None
        self.multiprocess_dir: Path | None = None
        """The shared directory in multiprocess mode, else ``None``."""
        if multiprocess_dir is not None:
            files = ProcessFiles(multiprocess_dir, self._families, flush_interval=flush_interval)
            self._files, self.multiprocess_dir = files, files.directory
            self.registry.register(collector(files.directory))
            # the last flush when this object goes away or the interpreter exits
            self._close = weakref.finalize(self, files.close)
        for family in (
            self.requests, self.stream_ends, self.errors, self.in_flight, self.ttft,
            self.chunk_gap, self.duration, self.token_counter, self.generated, self.delivered,
            self.usage_tokens, self.usage_cost, self.usage_requests, self.overlaps,
        ):  # fmt: skip
            self.register(family)
        # children of known label values, made now: the hot path reads attributes
        for reason in END_REASONS:
            self.stream_ends.labels(reason)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self._overlaps = {d: self.overlaps.labels(d) for d in ("admitted", "refused")}
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
        if self._files is None:
            self.registry.register(family)
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

    def streams_crashed(self, count: int) -> None:
        """``count`` streams of a previous run were cut by its crash (found at start-up:
        counted as ends with ``server_crashed``, never in flight here)."""
        self.stream_ends.labels("server_crashed").value += count

    def error(self, kind: str) -> None:
        """Count an error of ``kind`` (``upstream``, ``timeout``, ``client``, ``internal``)."""
        self.errors.labels(kind).value += 1

    def admission_overlapped(self, admitted: bool) -> None:
        """A start's upstream request went out before its admission was decided; the
        decision (``False``: refused, the request was cut)."""
        self._overlaps["admitted" if admitted else "refused"].value += 1

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

    def usage(
        self, model: str, channel: str, prompt: int, completion: int, nano: int | None,
        *, estimated: bool,
    ) -> None:  # fmt: skip
        """Count one upstream request's accounted usage (per answer, never per chunk)."""
        self.usage_tokens.labels(model, channel, "prompt").value += prompt
        self.usage_tokens.labels(model, channel, "completion").value += completion
        if nano:
            self.usage_cost.labels(model, channel).value += nano / 1e9
        source = "estimated" if estimated else "reported"
        self.usage_requests.labels(model, channel, source).value += 1

    def chars(self, generated: int, delivered: int) -> None:
        """Count the characters one answer generated and delivered."""
        self._generated.value += generated
        self._delivered.value += delivered

    def flush(self) -> None:
        """In multiprocess mode, copy this process's values into its files now."""
        if self._files is not None:
            self._files.flush()

    def close(self) -> None:
        """In multiprocess mode, stop the flush thread after a last flush (also done when
        this object is collected or the interpreter exits); safe to call again."""
        if self._files is not None:
            self._close()

    def render(self) -> bytes:
        """Every metric in the Prometheus text format 0.0.4 (:data:`CONTENT_TYPE`): of this
        process, or in multiprocess mode of every process (this one's flushed first)."""
        self.flush()
        return text_format(self._families, self.registry.collect())
