"""Prometheus metrics: the text exposition format is parsed back and checked value by value."""

from __future__ import annotations

import math
import re
import time

import pytest

from wenxin_stream.server._metrics import (
    CONTENT_TYPE,
    TTFT_BUCKETS,
    Counter,
    FunctionMetric,
    Gauge,
    Histogram,
    Metrics,
    escape_label_value,
    format_value,
)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')

Labels = frozenset[tuple[str, str]]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), value)


def parse(text: str) -> tuple[dict[str, str], dict[str, str], dict[tuple[str, Labels], float]]:
    """A strict reader of format 0.0.4: HELP and TYPE by family, samples by (name, labels)."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: dict[tuple[str, Labels], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in helps
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram")
            assert name in helps
            types[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"bad line {line!r}"
            name, label_text, value = match.groups()
            labels: Labels = frozenset()
            if label_text:
                inner = label_text[1:-1]
                pairs = _LABEL.findall(inner)
                assert "".join(f'{k}="{v}",' for k, v in pairs).rstrip(",") == inner
                labels = frozenset((k, _unescape(v)) for k, v in pairs)
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in types or family in types, f"sample {name} before its TYPE"
            assert (name, labels) not in samples
            samples[name, labels] = float(value.replace("+Inf", "inf"))
    return helps, types, samples


def lab(**labels: str) -> Labels:
    return frozenset(labels.items())


def test_metrics_of_the_contract_render_and_parse_back() -> None:
    m = Metrics()
    m.http_request("/api/conversations", 200)
    m.http_request("/api/conversations", 200)
    m.http_request("/v1/chat/completions", 429)
    m.stream_started()
    m.stream_started()
    m.stream_ended("completed")
    m.error("upstream")
    m.observe_ttft("server", 0.0004)
    m.observe_ttft("server", 0.0005)  # on a bound: counted in that bucket (le is inclusive)
    m.observe_ttft("server", 0.003)
    m.observe_ttft("upstream", 0.7)
    m.observe_ttft("total", 99.0)  # above every bound: only +Inf
    m.observe_chunk_gap(0.02)
    m.observe_duration("total", 3.5)
    m.tokens(4, 113)
    m.tokens(6, 7)
    m.chars(120, 100)
    helps, types, s = parse(m.render().decode())

    assert types == {
        "wenxin_http_requests_total": "counter",
        "wenxin_stream_ends_total": "counter",
        "wenxin_errors_total": "counter",
        "wenxin_streams_in_flight": "gauge",
        "wenxin_ttft_seconds": "histogram",
        "wenxin_chunk_gap_seconds": "histogram",
        "wenxin_stream_duration_seconds": "histogram",
        "wenxin_tokens_total": "counter",
        "wenxin_generated_chars_total": "counter",
        "wenxin_delivered_chars_total": "counter",
    }
    assert all(helps[name] for name in types)
    assert s["wenxin_http_requests_total", lab(route="/api/conversations", status="200")] == 2
    assert s["wenxin_http_requests_total", lab(route="/v1/chat/completions", status="429")] == 1
    assert s["wenxin_streams_in_flight", lab()] == 1
    assert s["wenxin_stream_ends_total", lab(reason="completed")] == 1
    assert s["wenxin_stream_ends_total", lab(reason="server_shutdown")] == 0  # pre-made
    assert s["wenxin_errors_total", lab(kind="upstream")] == 1
    assert s["wenxin_errors_total", lab(kind="internal")] == 0
    assert s["wenxin_tokens_total", lab(type="prompt")] == 10
    assert s["wenxin_tokens_total", lab(type="completion")] == 120
    assert s["wenxin_generated_chars_total", lab()] == 120
    assert s["wenxin_delivered_chars_total", lab()] == 100

    def bucket(part: str, le: str) -> float:
        return s["wenxin_ttft_seconds_bucket", lab(part=part, le=le)]

    assert bucket("server", "0.0005") == 2
    assert bucket("server", "0.001") == 2
    assert bucket("server", "0.005") == 3
    assert bucket("server", "+Inf") == 3
    assert s["wenxin_ttft_seconds_count", lab(part="server")] == 3
    assert s["wenxin_ttft_seconds_sum", lab(part="server")] == pytest.approx(0.0039)
    assert bucket("upstream", "0.5") == 0
    assert bucket("upstream", "1") == 1
    assert bucket("total", "10") == 0
    assert bucket("total", "+Inf") == 1
    # buckets are cumulative and end at the count, for every child of every histogram
    for (name, labels), value in s.items():
        if name.endswith("_bucket"):
            rest = frozenset(kv for kv in labels if kv[0] != "le")
            family = name.removesuffix("_bucket")
            assert value <= s[f"{family}_count", rest]
    les = [format_value(b) for b in TTFT_BUCKETS] + ["+Inf"]
    counts = [bucket("server", le) for le in les]
    assert counts == sorted(counts)
    assert s["wenxin_chunk_gap_seconds_bucket", lab(le="0.025")] == 1
    assert s["wenxin_chunk_gap_seconds_bucket", lab(le="0.01")] == 0
    assert s["wenxin_stream_duration_seconds_count", lab(part="total")] == 1
    assert s["wenxin_stream_duration_seconds_count", lab(part="upstream")] == 0
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_label_values_and_help_are_escaped() -> None:
    m = Metrics()
    nasty = 'a\\b"c\nd'
    m.http_request(nasty, 500)
    m.stream_ended("new_reason")
    m.observe_ttft("other_part", 0.1)  # unknown parts still work
    m.observe_duration("odd", 1.0)
    counter = Counter("x_total", 'help with \\ and\nnewline and "quotes"', ("l",))
    counter.labels("v").inc()
    m.register(counter)
    text = m.render().decode()
    assert '\\\\b\\"c\\nd' in text
    assert '# HELP x_total help with \\\\ and\\nnewline and "quotes"' in text
    _, _, s = parse(text)
    assert s["wenxin_http_requests_total", lab(route=nasty, status="500")] == 1
    assert s["wenxin_stream_ends_total", lab(reason="new_reason")] == 1
    assert s["wenxin_ttft_seconds_count", lab(part="other_part")] == 1
    assert s["wenxin_stream_duration_seconds_count", lab(part="odd")] == 1
    assert s["x_total", lab(l="v")] == 1
    assert escape_label_value("plain") == "plain"


def test_format_value() -> None:
    assert [format_value(v) for v in (0.0, 1.0, 2.5, 0.0005, 1e-7, -3.0, 1e20)] == [
        "0", "1", "2.5", "0.0005", "1e-07", "-3", "1e+20"
    ]  # fmt: skip
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"


def test_series_are_bounded() -> None:
    counter = Counter("c_total", "c", ("id",), max_series=3)
    for i in range(100):
        counter.labels(str(i)).inc()
    _, _, s = parse(_render(counter))
    assert len(s) == 4  # three real children and the shared overflow child
    assert s["c_total", lab(id="other")] == 97


def test_plain_families_and_gauge_functions() -> None:
    gauge = Gauge("g", "a gauge")
    gauge.set(5)
    gauge.inc(2)
    gauge.dec(0.5)
    counter = Counter("n_total", "a counter")
    counter.inc(3)
    with pytest.raises(ValueError, match="decrease"):
        counter.inc(-1)
    hist = Histogram("h_seconds", "a histogram", [1, 2, math.inf])
    hist.observe(1.5)
    hist.observe(math.nan)  # ignored
    hist.observe(-1)  # below every bound: the first bucket
    queued = [1, 2, 3]
    fn = FunctionMetric("q_depth", "queue depth", lambda: len(queued))
    fn_counter = FunctionMetric("drops_total", "drops", lambda: 7, kind="counter")
    text = "".join(_render(f) for f in (gauge, counter, hist, fn, fn_counter))
    _, types, s = parse(text)
    assert s["g", lab()] == 6.5
    assert s["n_total", lab()] == 3
    assert s["h_seconds_bucket", lab(le="1")] == 1
    assert s["h_seconds_bucket", lab(le="2")] == 2
    assert s["h_seconds_bucket", lab(le="+Inf")] == 2
    assert s["h_seconds_count", lab()] == 2
    assert s["h_seconds_sum", lab()] == 0.5
    assert s["q_depth", lab()] == 3
    assert types["drops_total"] == "counter"


def test_invalid_definitions() -> None:
    with pytest.raises(ValueError, match="metric name"):
        Counter("1bad", "x")
    for label in ("le", "__x", "a-b"):
        with pytest.raises(ValueError, match="label name"):
            Counter("ok_total", "x", (label,))
    with pytest.raises(ValueError, match="increasing"):
        Histogram("h", "x", [2, 1])
    with pytest.raises(ValueError, match="increasing"):
        Histogram("h", "x", [])
    with pytest.raises(ValueError, match="labels"):
        Counter("ok_total", "x", ("a",)).labels("1", "2")
    with pytest.raises(ValueError, match="invalid metric"):
        FunctionMetric("ok", "x", lambda: 1, kind="summary")
    m = Metrics()
    with pytest.raises(ValueError, match="already registered"):
        m.register(Counter("wenxin_errors_total", "dup"))


def test_observe_is_cheap() -> None:
    m = Metrics()
    n = 100_000
    start = time.perf_counter()
    for _ in range(n):
        m.observe_chunk_gap(0.0123)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 5e-6  # measured about 0.15 µs; generous for slow CI machines
    _, _, s = parse(m.render().decode())
    assert s["wenxin_chunk_gap_seconds_count", lab()] == n


def _render(family: Counter | Gauge | Histogram | FunctionMetric) -> str:
    out: list[str] = []
    family.render(out)
    return "".join(out)
