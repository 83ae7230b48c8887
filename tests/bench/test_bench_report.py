"""Outputs (SVG plots, Markdown, JSON) and the /proc helpers."""

from __future__ import annotations

import json
import os
import resource
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import fake_result

from wenxin_stream.bench._report import (
    build_document,
    find_max_svg,
    latency_cdf_svg,
    markdown,
    write_outputs,
)
from wenxin_stream.bench._search import Criteria, FindMaxResult, Step
from wenxin_stream.bench._stats import ProcessStats, Summary, quantile_points
from wenxin_stream.bench._svg import Guide, Panel, Series, fmt_number, nice_ticks, render
from wenxin_stream.bench._system import (
    ProcSampler,
    concurrency_cap,
    machine_info,
    raise_fd_limit,
)

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ticks() -> None:
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 100) == [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    assert nice_ticks(3, 3)[0] <= 3 <= nice_ticks(3, 3)[-1]
    ticks = nice_ticks(-7, 23)
    assert ticks[0] <= -7
    assert ticks[-1] >= 23
    assert 4 <= len(ticks) <= 9
    assert nice_ticks(float("nan"), 1) == [0.0]


def test_fmt_number() -> None:
    assert [fmt_number(v) for v in (0, 12000, 1500, 2.5, 0.04, 5.0)] == [
        "0",
        "12k",
        "1,500",
        "2.5",
        "0.04",
        "5",
    ]


def test_render_is_valid_xml_with_escaping_and_off_scale_points() -> None:
    panel = Panel(
        "a <title> & more",
        "x",
        "y",
        [
            Series("s1", [(0, 1), (1, 500)], markers=True, hollow=[False, True]),
            Series('s2 "q"', [], dashed=True),
            Series("", [(0, 0)]),
        ],
        ylim=(0, 10),
        guides=[Guide("y", 5, "limit"), Guide("x", 0.5, "mid"), Guide("y", 99, "off")],
        note="n < 1",
        legend_at="top-left",
    )
    svg = render([panel, Panel("empty", "x", "y", [])], title="T & t")
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "a <title> & more" in texts
    assert "← 500" in texts
    assert "limit" in texts
    assert "off" not in texts
    assert len(list(root.iter(f"{SVG}circle"))) == 2
    hollow = [c for c in root.iter(f"{SVG}circle") if c.get("fill") == "white"]
    assert len(hollow) == 1


def full_result() -> dict[str, Any]:
    r = fake_result(100, failed=3, completed=97)
    sample = [0.001 * i for i in range(1, 2001)] + [5.0]
    r = replace(
        r,
        error_samples={"timeout": ["idle | for 30 s"]},
        processes=[
            ProcessStats("nginx", 42, 10, 55.5, 80.0, 12.0, 13.0),
            ProcessStats("gone", 43, 0, None, None, None, None, "process exited"),
        ],
        cdf={"ttft_ms": quantile_points(sample), "lateness_ms": [], "gap_ms": [], "total_ms": []},
    )
    return r.to_dict()


def test_latency_cdf_svg_clips_and_notes_the_max() -> None:
    svg = latency_cdf_svg(full_result(), "title")
    root = ET.fromstring(svg)
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert any(t.startswith("max 5,000 ms") for t in texts)
    assert "no data" in texts
    assert {"p50", "p90", "p99"} <= set(texts)


def test_find_max_svg_and_markdown(tmp_path: Path) -> None:
    steps = [
        Step(100, True, [], fake_result(100, p99=3.0)),
        Step(200, False, ["p99 lateness 900.0 ms ≥ 50 ms"], fake_result(200, p99=900.0)),
        Step(150, True, [], fake_result(150, p99=20.0)),
        Step(175, False, ["no stream completed"], fake_result(175, p99=None, completed=0)),
    ]
    search = FindMaxResult(150, 175, 20000, "--max-concurrency", Criteria(), steps)
    machine = machine_info("asyncio")
    doc = build_document(
        version="9",
        started_at="now",
        config={"target": "openai", "url": "http://x", "pacing": None},
        machine=machine,
        run=steps[2].result,
        search=search,
    )
    svg = ET.fromstring(find_max_svg(doc["find_max"], "t"))
    texts = [t.text or "" for t in svg.iter(f"{SVG}text")]
    assert "max 150" in texts
    assert "← 900" in texts
    md = markdown(doc, ["find_max.svg"])
    assert "**150** (first failure at 175)" in md
    assert "| 2 | 200 | ❌ |" in md
    assert "![find_max.svg](find_max.svg)" in md
    assert "## Best passing step" in md

    doc["result"] = full_result()
    doc["find_max"] = None
    md = markdown(doc)
    assert "| timeout | 3 | idle \\| for 30 s |" in md
    assert "| nginx | 42 | 55.5% | 80.0% | 12.0 MiB | 13.0 MiB |" in md
    assert "gone (process exited)" in md
    paths = write_outputs(tmp_path / "o", doc)
    assert [p.name for p in paths] == ["result.json", "latency_cdf.svg", "report.md"]
    assert json.loads(paths[0].read_text(encoding="utf-8"))["tool"] == "wenxin-stream 9"

    limit = FindMaxResult(400, None, 400, "open-file limit (1024)", Criteria(), steps[:1])
    doc2 = build_document(
        version="9", started_at="now", config=doc["config"], machine=machine, run=None, search=limit
    )
    assert "the search limit, 400: open-file limit (1024)" in markdown(doc2)
    assert [p.name for p in write_outputs(tmp_path / "p", doc2)] == [
        "result.json",
        "find_max.svg",
        "report.md",
    ]


def test_proc_sampler() -> None:
    sampler = ProcSampler(os.getpid(), "me")
    t = time.time()
    sampler.sample(t)
    sum(i * i for i in range(200_000))  # burn a little CPU
    sampler.sample(t + 0.2)
    sampler.sample(t + 0.4)
    stats = sampler.stats(t, t + 1)
    assert stats.samples == 2
    assert stats.cpu_max is not None
    assert stats.cpu_max >= 0
    assert stats.rss_max_mb is not None
    assert stats.rss_max_mb > 1
    assert sampler.stats(t + 5, t + 6).samples == 2  # nothing inside: every sample
    missing = ProcSampler(2**22 + 12345, "ghost")
    missing.sample(t)
    missing.sample(t + 1)
    assert missing.stats(t, t + 1).note == "process not found"
    assert missing.stats(t, t + 1).cpu_mean is None


def test_limits_and_machine_info() -> None:
    soft, hard = raise_fd_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft
    assert soft <= hard
    cap, reason = concurrency_cap()
    assert 1 <= cap < soft
    assert "limit" in reason or "port" in reason
    info = machine_info("uvloop")
    for key in ("cpu_model", "cores", "python", "event_loop", "fd_limit"):
        assert info[key]


@pytest.mark.parametrize("kind", ["x"])
def test_document_without_result(kind: str) -> None:
    doc = build_document(
        version="1",
        started_at="t",
        config={"target": kind, "url": "u"},
        machine=machine_info("asyncio"),
        run=None,
    )
    assert doc["result"] is None
    assert "## Result" in markdown(doc)


def test_raise_fd_limit_lifts_soft_to_hard(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: calls.append(v))
    assert raise_fd_limit() == (4096, 4096)
    assert calls == [(4096, 4096)]
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, resource.RLIM_INFINITY))
    assert raise_fd_limit() == (1 << 20, 1 << 20)


def test_client_health_is_judged_and_reported() -> None:
    base = fake_result(10)
    healthy = replace(base.client, cpu_percent=40.0, loop_lag_max_ms=3.0, cpu_wait_percent=1.0)
    assert healthy.starved_or_saturated == ""
    starved = replace(healthy, cpu_wait_percent=35.0)
    assert "waited for a CPU 35%" in starved.starved_or_saturated
    busy = replace(healthy, cpu_percent=97.0)
    assert "97% of a core" in busy.starved_or_saturated
    laggy = replace(healthy, loop_lag_max_ms=800.0)
    assert "lagged up to 800 ms" in laggy.starved_or_saturated
    doc = build_document(
        version="1",
        started_at="t",
        config={"target": "openai", "url": "u", "pacing": None},
        machine=machine_info("asyncio"),
        run=replace(base, client=starved),
        search=FindMaxResult(
            10, None, 10, "x", Criteria(), [Step(10, True, [], replace(base, client=starved))]
        ),
    )
    md = markdown(doc)
    assert "| ⚠ warning | the load generator waited for a CPU 35%" in md
    assert "| 40% ⚠ |" in md
    behind = replace(
        base,
        lateness_ms=Summary(count=1, p99=5.0),
        behind_schedule_ms=Summary(count=1, p99=4000.0),
    )
    doc["result"] = behind.to_dict()
    doc["find_max"]["steps"][0]["result"] = behind.to_dict()
    md = markdown(doc)
    assert "| ⚠ warning | the paced upstream fell behind its schedule" in md
    assert "⚠ upstream behind schedule |" in md
    assert "| chunk delay behind the paced schedule | 1 |" in md


def test_retried_steps_are_marked() -> None:
    steps = [
        Step(100, False, ["x"], fake_result(100)),
        Step(100, True, [], fake_result(100), attempt=1),
    ]
    doc = build_document(
        version="1",
        started_at="t",
        config={"target": "openai", "url": "u", "pacing": None},
        machine=machine_info("asyncio"),
        run=steps[1].result,
        search=FindMaxResult(100, None, 100, "limit", Criteria(), steps),
    )
    md = markdown(doc)
    assert "| 1 | 100 | ❌ |" in md
    assert "| 2 | 100 again | ✅ |" in md
    assert doc["find_max"]["steps"][1]["attempt"] == 1


def test_markdown_of_an_older_result_without_newer_keys() -> None:
    r = full_result()
    del r["behind_schedule_ms"]
    del r["client"]["loop_lag_max_ms"]
    del r["client"]["cpu_wait_percent"]
    doc = build_document(
        version="1",
        started_at="t",
        config={"target": "openai", "url": "u", "pacing": None},
        machine=machine_info("asyncio"),
        run=None,
    )
    doc["result"] = r
    md = markdown(doc)
    assert "behind the paced schedule" not in md
    assert "event-loop lag ≤ – ms" in md
