"""Prometheus metrics: the text exposition format is parsed back and checked value by value,
in one process and with several processes sharing a multiprocess directory."""

from __future__ import annotations

import gc
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wenxin_stream.server._metrics import (
    CONTENT_TYPE,
    DEFAULT_MAX_SERIES,
    END_REASONS,
    TTFT_BUCKETS,
    USAGE_MAX_SERIES,
    Counter,
    FunctionMetric,
    Gauge,
    Histogram,
    Metrics,
    mark_process_dead,
)
from wenxin_stream.server._metrics_files import ProcessFiles
from wenxin_stream.server._metrics_text import escape_label_value, format_value, text_format

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
    m.admission_overlapped(True)
    m.admission_overlapped(True)
    m.admission_overlapped(False)
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
    m.usage("ernie-x", "default", 3, 5, 2_500_000_000, estimated=False)
    m.usage("ernie-x", "default", 1, 2, None, estimated=True)
    helps, types, s = parse(m.render().decode())

    assert types == {
        "wenxin_http_requests_total": "counter",
        "wenxin_stream_ends_total": "counter",
        "wenxin_errors_total": "counter",
        "wenxin_admission_overlaps_total": "counter",
        "wenxin_streams_in_flight": "gauge",
        "wenxin_ttft_seconds": "histogram",
        "wenxin_chunk_gap_seconds": "histogram",
        "wenxin_stream_duration_seconds": "histogram",
        "wenxin_tokens_total": "counter",
        "wenxin_generated_chars_total": "counter",
        "wenxin_delivered_chars_total": "counter",
        "wenxin_usage_tokens_total": "counter",
        "wenxin_usage_cost_cny_total": "counter",
        "wenxin_usage_requests_total": "counter",
    }
    assert all(helps[name] for name in types)
    usage = {"model": "ernie-x", "channel": "default"}
    assert s["wenxin_usage_tokens_total", lab(**usage, type="prompt")] == 4
    assert s["wenxin_usage_tokens_total", lab(**usage, type="completion")] == 7
    assert s["wenxin_usage_cost_cny_total", lab(**usage)] == 2.5
    assert s["wenxin_usage_requests_total", lab(**usage, source="reported")] == 1
    assert s["wenxin_usage_requests_total", lab(**usage, source="estimated")] == 1
    assert s["wenxin_http_requests_total", lab(route="/api/conversations", status="200")] == 2
    assert s["wenxin_http_requests_total", lab(route="/v1/chat/completions", status="429")] == 1
    assert s["wenxin_streams_in_flight", lab()] == 1
    assert s["wenxin_stream_ends_total", lab(reason="completed")] == 1
    assert s["wenxin_stream_ends_total", lab(reason="server_shutdown")] == 0  # pre-made
    assert s["wenxin_errors_total", lab(kind="upstream")] == 1
    assert s["wenxin_errors_total", lab(kind="internal")] == 0
    assert s["wenxin_admission_overlaps_total", lab(decision="admitted")] == 2
    assert s["wenxin_admission_overlaps_total", lab(decision="refused")] == 1
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


def test_many_observations_are_all_counted() -> None:
    # The per-call cost is a benchmark's business (bench/metrics_cost.py), not a timed test's.
    m = Metrics()
    n = 100_000
    for _ in range(n):
        m.observe_chunk_gap(0.0123)
    _, _, s = parse(m.render().decode())
    assert s["wenxin_chunk_gap_seconds_count", lab()] == n
    assert s["wenxin_chunk_gap_seconds_bucket", lab(le="0.025")] == n
    assert s["wenxin_chunk_gap_seconds_bucket", lab(le="0.01")] == 0


def _render(family: Counter | Gauge | Histogram | FunctionMetric) -> str:
    return text_format([family], family.collect()).decode()


# --- the series cap, the registry, prometheus_client's own reader -------------------------


def test_every_family_is_capped_and_the_overflow_child_is_shared() -> None:
    hist = Histogram("h_seconds", "h", [1.0], ("id",), max_series=2)
    gauge = Gauge("g", "g", ("id",), max_series=2)
    for i in range(10):
        hist.labels(str(i)).observe(0.5)
        gauge.labels(str(i)).inc()
    assert hist.labels("other") is hist.labels("11") is hist.labels("12")
    _, _, s = parse(_render(hist) + _render(gauge))
    assert s["h_seconds_count", lab(id="0")] == 1
    assert s["h_seconds_count", lab(id="other")] == 8
    assert s["h_seconds_bucket", lab(id="other", le="1")] == 8
    assert s["g", lab(id="other")] == 8
    assert {labels for name, labels in s if name == "g"} == {
        lab(id="0"),
        lab(id="1"),
        lab(id="other"),
    }
    m = Metrics()
    for i in range(DEFAULT_MAX_SERIES + 5):
        m.http_request(f"/route/{i}", 200)
    _, _, s = parse(m.render().decode())
    requests = {
        labels: v for (name, labels), v in s.items() if name == "wenxin_http_requests_total"
    }
    assert len(requests) == DEFAULT_MAX_SERIES + 1  # and the overflow child
    assert requests[lab(route="other", status="other")] == 5


def test_each_instance_has_its_own_registry_and_prometheus_client_reads_the_output() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    one, two = Metrics(), Metrics()
    assert one.registry is not two.registry
    one.http_request("/x", 200)
    one.observe_ttft("server", 0.003)
    one.register(Counter("wenxin_gc_pause_seconds", "A counter named without _total."))
    one.register(FunctionMetric("q_depth", "A queue's length.", lambda: 2))
    assert 'route="/x"' in one.render().decode()
    assert 'route="/x"' not in two.render().decode()
    theirs = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(one.render().decode())
        for sample in family.samples
    }
    _, _, ours = parse(one.render().decode())
    assert theirs == ours
    # prometheus_client's own exporter works on the registry (it names counters its way)
    exported = generate_latest(one.registry).decode()
    assert 'wenxin_http_requests_total{route="/x",status="200"} 1.0' in exported
    assert 'wenxin_ttft_seconds_bucket{le="0.005",part="server"} 1.0' in exported
    assert "q_depth 2.0" in exported


def test_import_wenxin_stream_does_not_import_prometheus_client() -> None:
    code = "import sys, wenxin_stream; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_invalid_multiprocess_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiprocess mode"):
        Gauge("g", "x", multiprocess_mode="mostrecent")
    with pytest.raises(ValueError, match="multiprocess mode"):
        FunctionMetric("f", "x", lambda: 1, multiprocess_mode="sideways")
    with pytest.raises(ValueError, match="flush_interval"):
        Metrics(multiprocess_dir=tmp_path, flush_interval=0)
    single = Metrics()
    single.flush()  # nothing to do without a directory
    single.close()
    assert single.multiprocess_dir is None


# --- multiprocess mode -------------------------------------------------------------------

WORKER = """
import sys
from wenxin_stream.server._gc import Collector
from wenxin_stream.server._metrics import Metrics

directory, requests, left_open, stay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
m = Metrics(multiprocess_dir=directory, flush_interval=0.02)
Collector(m, lambda: 0).collect()  # one full garbage collection, counted
for _ in range(requests):
    m.http_request("/v1/chat/completions", 200)
    m.observe_chunk_gap(0.02)
for _ in range(left_open):
    m.stream_started()
m.stream_started()
m.stream_ended("completed")
print("counted", flush=True)
if stay == "stay":
    sys.stdin.read()  # until the test closes our stdin; the flush thread writes meanwhile
"""
"""A worker process: counts, then exits at once (its last flush is the one at exit) or stays
until its stdin closes (only the flush thread writes its values)."""


def _worker(directory: Path, requests: int, left_open: int, stay: bool) -> subprocess.Popen[str]:
    argv = [str(directory), str(requests), str(left_open), "stay" if stay else "exit"]
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_two_processes_count_and_one_render_shows_the_sum(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    exiting = _worker(tmp_path, requests=3, left_open=2, stay=False)
    assert exiting.wait(timeout=30) == 0
    staying = _worker(tmp_path, requests=5, left_open=4, stay=True)
    here = Metrics(multiprocess_dir=tmp_path)
    try:
        assert staying.stdout is not None
        assert staying.stdout.readline() == "counted\n"
        here.http_request("/v1/chat/completions", 200)  # this process counts too
        deadline = time.monotonic() + 20
        key = ("wenxin_http_requests_total", lab(route="/v1/chat/completions", status="200"))
        expected = {  # every process's values, summed
            key: 9,
            ("wenxin_chunk_gap_seconds_count", lab()): 8,
            ("wenxin_chunk_gap_seconds_bucket", lab(le="0.025")): 8,
            ("wenxin_chunk_gap_seconds_bucket", lab(le="0.01")): 0,
            ("wenxin_chunk_gap_seconds_sum", lab()): pytest.approx(0.16),
            ("wenxin_stream_ends_total", lab(reason="completed")): 2,
            ("wenxin_streams_in_flight", lab()): 2 + 4,  # livesum: summed, no pid label
            ("wenxin_gc_collections_total", lab()): 2,
        }
        while True:  # the staying worker's values arrive with its flush thread, which writes
            # one sample after another: a render may see a flush half done, so wait for all
            helps, types, s = parse(here.render().decode())
            if all(s.get(k) == v for k, v in expected.items()) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        for sample, value in expected.items():
            assert s.get(sample) == value, sample
        assert s["wenxin_stream_ends_total", lab(reason="cancelled")] == 0
        # the workers' garbage collectors are families this process never declared: they
        # still show, with their names, summed
        assert types["wenxin_gc_collections_total"] == "counter"
        assert types["wenxin_gc_pause_seconds"] == "counter"
        assert s["wenxin_gc_pause_seconds", lab()] > 0
        assert list(types)[:10] == [  # declared families first, in their order, as ever
            "wenxin_http_requests_total", "wenxin_stream_ends_total", "wenxin_errors_total",
            "wenxin_streams_in_flight", "wenxin_ttft_seconds", "wenxin_chunk_gap_seconds",
            "wenxin_stream_duration_seconds", "wenxin_tokens_total",
            "wenxin_generated_chars_total", "wenxin_delivered_chars_total",
        ]  # fmt: skip
        assert all(helps[name] for name in types)
        text = here.render().decode()
        assert sum(1 for _ in text_string_to_metric_families(text)) == len(types)

        # the exited worker is reaped: its open streams go, its counts stay
        mark_process_dead(exiting.pid, tmp_path)
        _, _, s = parse(here.render().decode())
        assert s["wenxin_streams_in_flight", lab()] == 4
        assert s[key] == 9
    finally:
        if staying.stdin is not None:
            staying.stdin.close()
        staying.wait(timeout=30)
        here.close()


def test_a_process_continues_the_totals_in_files_of_its_pid(tmp_path: Path) -> None:
    first = Metrics(multiprocess_dir=tmp_path)
    with pytest.raises(ValueError, match="one Metrics per process"):
        Metrics(multiprocess_dir=tmp_path)
    first.error("upstream")
    first.stream_started()
    first.observe_duration("total", 2.0)
    first.close()
    first.close()  # again: nothing more
    assert first.render()  # still reads the files
    second = Metrics(multiprocess_dir=tmp_path)  # the same pid, as after a pid is reused
    try:
        second.error("upstream")
        _, _, s = parse(second.render().decode())
        assert s["wenxin_errors_total", lab(kind="upstream")] == 2  # counters continue
        assert s["wenxin_stream_duration_seconds_count", lab(part="total")] == 1
        assert s["wenxin_streams_in_flight", lab()] == 0  # gauges start afresh
    finally:
        second.close()


def test_gauges_keep_their_mode_and_functions_are_read_at_flush(tmp_path: Path) -> None:
    m = Metrics(multiprocess_dir=tmp_path)
    try:
        queue = [1, 2]
        m.register(FunctionMetric("q_depth", "queue", lambda: len(queue)))  # "all": per pid
        m.register(FunctionMetric("drops_total", "drops", lambda: 7, kind="counter"))
        peak = Gauge("peak", "peak", ("pool",), multiprocess_mode="max")
        peak.labels("a").set(3)
        m.register(peak)
        queue.append(3)
        _, types, s = parse(m.render().decode())
        pid = str(os.getpid())
        assert s["q_depth", lab(pid=pid)] == 3
        assert s["drops_total", lab()] == 7
        assert types["drops_total"] == "counter"
        assert s["peak", lab(pool="a")] == 3
        assert f'q_depth{{pid="{pid}"}} 3\n' in m.render().decode()
    finally:
        m.close()


def test_the_flush_thread_logs_a_failure_and_render_raises_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failing = [True]

    def queue_depth() -> float:
        if failing[0]:
            raise OSError("disk on fire")
        return 1

    m = Metrics(multiprocess_dir=tmp_path, flush_interval=0.01)
    m.register(FunctionMetric("q_depth", "a queue that cannot be read", queue_depth))
    try:

        def logged() -> list[str]:
            return [r.getMessage() for r in caplog.records if "metrics" in r.getMessage()]

        deadline = time.monotonic() + 10
        while not logged() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert logged()[0].startswith("could not write the metrics to ")
        with pytest.raises(OSError, match="disk on fire"):
            m.render()
    finally:
        failing[0] = False
        m.close()


def test_files_belong_to_the_process_that_opened_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = Metrics(multiprocess_dir=tmp_path)
    m.error("client")
    m.flush()
    m.error("client")
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # as in a forked child
    with pytest.raises(RuntimeError, match="belong to process"):
        m.render()
    m.close()  # closes without writing the parent's files
    monkeypatch.undo()
    reader = Metrics(multiprocess_dir=tmp_path)
    try:
        _, _, s = parse(reader.render().decode())
        assert s["wenxin_errors_total", lab(kind="client")] == 1  # the second never written
    finally:
        reader.close()


def test_process_files_close_once_and_flush_nothing_after(tmp_path: Path) -> None:
    counter = Counter("late_total", "counted after close")
    files = ProcessFiles(tmp_path, [counter])
    files.close()
    files.close()
    counter.inc()
    files.flush()
    assert list(tmp_path.iterdir()) == []  # nothing was ever written


def test_metrics_collected_as_garbage_flush_and_stop(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    m = Metrics(multiprocess_dir=tmp_path, flush_interval=60)
    (flusher,) = (t for t in set(threading.enumerate()) - before if t.name.startswith("wenxin"))
    m.tokens(5, 6)
    del m
    gc.collect()
    assert not flusher.is_alive()
    reader = Metrics(multiprocess_dir=tmp_path)  # the directory is free again
    try:
        _, _, s = parse(reader.render().decode())
        assert s["wenxin_tokens_total", lab(type="prompt")] == 5  # the last flush wrote it
    finally:
        reader.close()


def test_every_end_reason_is_documented_and_labelled_on_the_page() -> None:
    root = Path(__file__).parents[2]
    doc = (root / "docs" / "SERVER-API.md").read_text("utf-8")
    strings = (root / "src" / "wenxin_stream" / "server" / "static" / "i18n.js").read_text("utf-8")
    for reason in END_REASONS:
        assert f"`{reason}`" in doc, reason
        if reason != "completed":  # the page flags only answers that did not complete
            assert strings.count(f'\n    "end.{reason}": ') == 2, reason  # in zh and in en


def test_usage_label_sets_are_bounded() -> None:
    """Model names come from requests: past USAGE_MAX_SERIES label sets, they count as other."""
    m = Metrics()
    for i in range(300):
        m.usage(f"model-{i}", "default", 1, 1, 1000, estimated=False)
    _, _, s = parse(m.render().decode())
    requests = {
        labels: v for (name, labels), v in s.items() if name == "wenxin_usage_requests_total"
    }
    assert len(requests) == USAGE_MAX_SERIES + 1  # and the one "other"
    other = lab(model="other", channel="other", source="other")
    assert requests[other] == 300 - USAGE_MAX_SERIES
    assert sum(requests.values()) == 300
