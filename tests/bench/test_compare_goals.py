"""bench/compare's relay-cost and memory goals (issue 15): the per-step CPU each find-max row
keeps, the same-load ratios read from it, and the after-peak figures of ``bench/memory.py``.

What compare measures is exercised by running it (``bench/RESULTS.md``); these tests pin the
arithmetic and the verdicts the published table depends on.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from test_compare_baseline import compare  # the script, loaded once from its path


def _result(relay_cpu: float, chunks_per_s: float = 1000.0) -> dict[str, Any]:
    return {
        "streams_completed": 10,
        "lateness_ms": {"p50": 1.0, "p99": 2.0},
        "ttft_ms": {"p50": 200.0, "p99": 210.0},
        "throughput": {"chunks_per_s": chunks_per_s},
        "client": {"cpu_percent": 5.0},
        "lateness_method": "schedule",
        "processes": [
            {"label": "relay", "cpu_mean": relay_cpu, "cpu_max": relay_cpu, "rss_max_mb": 9.0},
            {"label": "emulator", "cpu_mean": 30.0, "cpu_max": 30.0, "rss_max_mb": 9.0},
        ],
    }


def _step(concurrency: int, passed: bool, relay_cpu: float, attempt: int = 0) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "attempt": attempt,
        "passed": passed,
        "violations": [] if passed else ["p99 lateness 60.0 ms ≥ 50 ms"],
        "result": _result(relay_cpu),
    }


def test_a_find_max_row_keeps_the_cpu_of_each_passed_step() -> None:
    doc = {
        "find_max": {
            "best_concurrency": 250,
            "first_failing_concurrency": 500,
            "limit": 9500,
            "limit_reason": "",
            "steps": [
                _step(125, True, 5.0),
                _step(250, False, 9.0),
                _step(250, True, 8.0, attempt=1),  # a re-run's last attempt decides
                _step(500, False, 20.0),
                _step(375, False, 15.0),
            ],
        },
        "result": _result(8.0),
    }
    row = compare.summarize_find_max(doc, "serve")
    # CPU % × 10,000 / chunks per second: 5 % at 1,000 chunks/s is 50 ms per 1,000 chunks
    assert row["step_cpu_ms_per_1k"] == {"125": 50.0, "250": 80.0}
    assert row["relay_cpu_ms_per_1k"] == 80.0


def test_same_step_is_the_largest_concurrency_both_passed() -> None:
    serve = {"step_cpu_ms_per_1k": {"125": 90.0, "250": 75.0, "281": 74.0}}
    nginx = {"step_cpu_ms_per_1k": {"125": 30.0, "187": 26.0, "250": 25.0}}
    assert compare.same_step(serve, nginx) == (250, 75.0, 25.0)
    assert compare.same_step(serve, {"step_cpu_ms_per_1k": {"62": 1.0}}) is None
    assert compare.same_step(serve, {}) is None  # a row from before the per-step figures


def _suites(*, ernie_best: tuple[int, int]) -> dict[str, Any]:
    def row(best: int, at_max: float, steps: dict[str, float]) -> dict[str, Any]:
        return {"best": best, "relay_cpu_ms_per_1k": at_max, "step_cpu_ms_per_1k": steps}

    return {
        "fast": {
            "targets": {
                "nginx": row(234, 23.0, {"125": 30.0, "234": 23.0}),
                "serve": row(281, 74.0, {"125": 84.0, "250": 76.0, "281": 74.0}),
                "serve-native": row(250, 92.0, {"125": 100.0, "250": 88.0}),
            }
        },
        "ernie": {
            "targets": {
                "nginx": row(ernie_best[1], 28.0, {}),  # no step in common: the maxima decide
                "serve": row(ernie_best[0], 131.0, {"1500": 140.0}),
                "serve-native": row(1500, 223.0, {"1500": 150.0}),
            }
        },
    }


def test_relay_cost_goals_prefer_the_same_load_and_show_the_maxima_beside() -> None:
    goals = {g: (m, v) for g, m, v in compare.relay_cost_goals(
        {"suites": _suites(ernie_best=(3000, 3500))})}  # fmt: skip
    fast_nginx = goals["fast: OpenAI route's relay CPU / 1k chunks ≤ 3× nginx's"]
    assert fast_nginx == (
        "84.0 / 30.0 ms = 2.8× (same load, 125 streams); 3.2× each at its maximum",
        "✅ met",
    )
    fast_native = goals["fast: native route's relay CPU / 1k chunks ≤ 1.10× the OpenAI route's"]
    assert fast_native == (
        "88.0 / 76.0 ms = ×1.16 (same load, 250 streams); ×1.24 each at its maximum",
        "❌ missed",
    )
    ernie_nginx = goals["ERNIE-paced: OpenAI route's relay CPU / 1k chunks ≤ 3× nginx's"]
    assert ernie_nginx == ("4.7× each at its maximum", "❌ missed")
    ernie_native = goals[
        "ERNIE-paced: native route's relay CPU / 1k chunks ≤ 1.10× the OpenAI route's"
    ]
    assert ernie_native[1] == "✅ met"  # 150 / 140 = ×1.07 at 1,500 streams
    assert goals["ERNIE-paced: OpenAI route's max streams ≥ 80 % of nginx's"] == (
        "3,000 / 3,500 = 86%",
        "✅ met",
    )
    lower = {g: v for g, _, v in compare.relay_cost_goals(
        {"suites": _suites(ernie_best=(2500, 3500))})}  # fmt: skip
    assert lower["ERNIE-paced: OpenAI route's max streams ≥ 80 % of nginx's"] == "❌ missed"


def test_without_nginx_or_the_native_route_there_is_no_relay_cost_goal() -> None:
    suites = {"fast": {"targets": {"serve": {"best": 281, "relay_cpu_ms_per_1k": 74.0}}}}
    assert compare.relay_cost_goals({"suites": suites}) == []


def _memory_json(idle: float, after: float, later: float) -> dict[str, Any]:
    def probe(mib: float) -> dict[str, Any]:
        return {"status": {"VmRSS": int(mib * 2**20)}}

    return {
        "error_count": 0,
        "probes": {"idle": probe(idle), "after": probe(after), "later": probe(later)},
    }


def test_after_peak_figures_and_their_verdict() -> None:
    peak = compare.after_peak_figures(_memory_json(70.0, 94.0, 83.0), 2000)
    assert peak["streams"] == 2000
    assert (peak["idle_mib"], peak["after_mib"], peak["later_mib"]) == (70.0, 94.0, 83.0)
    assert peak["later_ratio"] == pytest.approx(83.0 / 70.0)
    peak["summary"] = "memory-peak/memory-1/summary.md"
    memory = {
        "idle_mib": 72.0,
        "levels": [{"streams": 1000, "open": 1000, "rss_mib": 118.0, "kib_per_stream": 47.0}],
        "marginal_kib_per_stream": 24.0,
        "flat": {"runs": 5, "growth_mib": 0.5, "tolerance_mib": 3.0},
        "after_peak": peak,
    }
    goals = {g: (m, v) for g, m, v in compare.targets_check({"memory": memory})}
    assert goals["RSS per open stream ≤ 25 KB"] == ("47.0 KiB (worst of the measures)", "❌ missed")
    assert goals["after a peak: RSS within 20 % of idle"] == (
        "83.0 / 70.0 MiB = +18.6% a minute after 2,000 streams ended (`bench/memory.py`)",
        "✅ met",
    )
    memory["after_peak"] = compare.after_peak_figures(_memory_json(70.0, 94.0, 87.0), 2000)
    goals = {g: v for g, _, v in compare.targets_check({"memory": memory})}
    assert goals["after a peak: RSS within 20 % of idle"] == "❌ missed"  # +24.3 %
    memory["after_peak"] = None  # memory.py wrote nothing: no verdict, not a pass
    assert "after a peak: RSS within 20 % of idle" not in {
        g for g, _, _ in compare.targets_check({"memory": memory})
    }


def test_the_peak_is_rendered_with_the_memory_section() -> None:
    peak = compare.after_peak_figures(_memory_json(70.0, 94.0, 83.0), 2000)
    peak["summary"] = "memory-peak/memory-20261205-050000/summary.md"
    summary = {
        "run": "20261205-050000",
        "profile": "full",
        "started_at": "2026-12-05T05:00:00+0000",
        "elapsed_s": 10.0,
        "errors": [],
        "machine": {},
        "versions": {},
        "memory": {
            "idle_mib": 72.0,
            "levels": [{"streams": 1000, "open": 1000, "rss_mib": 118.0, "kib_per_stream": 47.0}],
            "marginal_kib_per_stream": None,
            "flat": {
                "runs": 5,
                "streams": 1000,
                "duration_s": 10.0,
                "rss_after_mib": [80.0, 81.0],
                "growth_mib": 1.0,
                "tolerance_mib": 2.0,
            },
            "after_peak": peak,
        },
    }
    text = compare.render(summary, "results/run/", argparse.Namespace(publish=True))
    assert "a minute after the end 83.0 MiB (**+18.6%**)" in text
    assert "(results/run/memory-peak/memory-20261205-050000/summary.md)" in text
    assert "| after a peak: RSS within 20 % of idle |" in text
