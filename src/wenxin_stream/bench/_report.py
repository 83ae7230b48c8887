"""What a run leaves behind: ``result.json``, ``report.md`` and SVG plots.

Theory of operation
===================

:func:`build_document` assembles one JSON-ready dictionary — tool version, start time,
configuration, machine, the run's :class:`~._stats.RunResult` and, for ``--find-max``, every
step — which is written verbatim as ``result.json``. :func:`markdown` renders the same
dictionary as a human-readable report, so the two can never disagree, and the plots are drawn
from it too: :func:`latency_cdf_svg` (TTFT and lateness CDFs side by side, each axis clipped
at p99.9 with the maximum noted) and :func:`find_max_svg` (lateness p50/p99 against
concurrency, failed steps hollow, the criterion and the answer as guide lines).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._search import FindMaxResult
from ._stats import RunResult
from ._svg import PALETTE, Guide, Panel, Series, fmt_number, render

__all__ = [
    "build_document",
    "find_max_svg",
    "latency_cdf_svg",
    "markdown",
    "write_outputs",
]

CDF_PLOT = "latency_cdf.svg"
FIND_MAX_PLOT = "find_max.svg"


def build_document(
    *,
    version: str,
    started_at: str,
    config: dict[str, Any],
    machine: dict[str, Any],
    run: RunResult | None,
    search: FindMaxResult | None = None,
) -> dict[str, Any]:
    """The whole record of a bench invocation (what ``result.json`` holds)."""
    doc: dict[str, Any] = {
        "tool": f"wenxin-stream {version}",
        "started_at": started_at,
        "config": config,
        "machine": machine,
        "result": run.to_dict() if run is not None else None,
    }
    if search is not None:
        doc["find_max"] = {
            "best_concurrency": search.best,
            "first_failing_concurrency": search.failed_at,
            "limit": search.limit,
            "limit_reason": search.limit_reason,
            "criteria": {
                "max_p99_lateness_ms": search.criteria.max_p99_lateness_ms,
                "max_error_rate": search.criteria.max_error_rate,
                "max_chunks_lost": search.criteria.max_chunks_lost,
                "max_p99_ttft_ms": search.criteria.max_p99_ttft_ms,
            },
            "steps": [
                {
                    "concurrency": s.concurrency,
                    "attempt": s.attempt,
                    "passed": s.passed,
                    "violations": s.violations,
                    "result": s.result.to_dict(),
                }
                for s in search.steps
            ],
        }
    return doc


def _v(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _run_section(r: dict[str, Any]) -> list[str]:
    tp = r["throughput"]
    client = r["client"]
    expected = r["chunks_expected_per_stream"]
    tokens = f" · {_v(tp['tokens_per_s'])} tokens/s" if tp["tokens_per_s"] is not None else ""
    lines = [
        "| metric | value |",
        "|---|---|",
        f"| concurrency | {r['concurrency']:,} (max open {client['max_open_streams']:,}) |",
        f"| measured window | {r['window_s']:.1f} s |",
        f"| streams completed / failed | {r['streams_completed']:,} / {r['streams_failed']:,} "
        f"(error rate {r['error_rate']:.2%}) |",
        f"| streams cut at end of run | {r['streams_cut_at_end']:,} |",
        f"| chunks received / lost | {r['chunks_received']:,} / {r['chunks_lost']:,}"
        + (f" ({expected} expected per stream)" if expected else "")
        + " |",
        f"| throughput | {_v(tp['streams_per_s'], 2)} streams/s · "
        f"{_v(tp['chunks_per_s'])} chunks/s{tokens} |",
        f"| load generator ({client['event_loop']}) | {client['cpu_percent']:.1f}% of one core, "
        f"{_v(client['cpu_ms_per_1000_chunks'], 2)} ms CPU per 1,000 chunks; event-loop lag "
        f"≤ {_v(client.get('loop_lag_max_ms'))} ms; waited for a CPU "
        f"{_v(client.get('cpu_wait_percent'))}% of the time |",
    ]
    if client.get("bounded_by"):
        lines.append(
            f"| ⚠ warning | {client['bounded_by']}: results may be bounded by the client |"
        )
    if r.get("upstream_behind"):
        lines.append(f"| ⚠ warning | {r['upstream_behind']} |")
    lines += [
        "",
        "| latency (ms) | n | p50 | p90 | p99 | max |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    rows = [
        ("time to first token", "ttft_ms"),
        (f"chunk lateness ({r['lateness_method']})", "lateness_ms"),
        ("chunk delay behind the paced schedule", "behind_schedule_ms"),
        ("inter-chunk gap", "gap_ms"),
        ("total stream time", "total_ms"),
    ]
    for name, key in rows:
        s = r.get(key)
        if s is None:  # a result.json from an older version
            continue
        lines.append(
            f"| {name} | {s['count']:,} | {_v(s['p50'])} | {_v(s['p90'])} | {_v(s['p99'])} "
            f"| {_v(s['max'])} |"
        )
    if r["failures"]:
        lines += ["", "| failure | streams | example |", "|---|--:|---|"]
        for reason, count in r["failures"].items():
            sample = (r["error_samples"].get(reason) or [""])[0].replace("|", "\\|")
            lines.append(f"| {reason} | {count:,} | {sample[:120]} |")
    if r["processes"]:
        lines += [
            "",
            "| process | pid | CPU mean | CPU max | RSS mean | RSS max |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        for p in r["processes"]:
            note = f" ({p['note']})" if p["note"] else ""
            lines.append(
                f"| {p['label']}{note} | {p['pid']} | {_v(p['cpu_mean'])}% | {_v(p['cpu_max'])}% "
                f"| {_v(p['rss_mean_mb'])} MiB | {_v(p['rss_max_mb'])} MiB |"
            )
    return lines


def _find_max_section(fm: dict[str, Any]) -> list[str]:
    c = fm["criteria"]
    lines = [
        "## Find-max",
        "",
        f"Largest concurrency meeting the criteria: **{fm['best_concurrency']:,}**"
        + (
            f" (first failure at {fm['first_failing_concurrency']:,})"
            if fm["first_failing_concurrency"]
            else f" (the search limit, {fm['limit']:,}: {fm['limit_reason']})"
        )
        + ".",
        "",
        f"Criteria: error rate ≤ {c['max_error_rate']:.2%}, chunks lost ≤ {c['max_chunks_lost']}, "
        f"p99 lateness < {c['max_p99_lateness_ms']:g} ms"
        + (f", p99 TTFT < {c['max_p99_ttft_ms']:g} ms" if c.get("max_p99_ttft_ms") else "")
        + ".",
        "",
        "| step | concurrency | pass | completed | failed | lost | late p50 | late p99 "
        "| TTFT p99 | chunks/s | client CPU | why not / notes |",
        "|--:|--:|:-:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for i, step in enumerate(fm["steps"], 1):
        r = step["result"]
        again = " again" if step.get("attempt") else ""
        notes = list(step["violations"])
        if r.get("upstream_behind"):
            notes.append("⚠ upstream behind schedule")
        lines.append(
            f"| {i} | {step['concurrency']:,}{again} | {'✅' if step['passed'] else '❌'} "
            f"| {r['streams_completed']:,} | {r['streams_failed']:,} | {r['chunks_lost']:,} "
            f"| {_v(r['lateness_ms']['p50'])} | {_v(r['lateness_ms']['p99'])} "
            f"| {_v(r['ttft_ms']['p99'])} | {_v(r['throughput']['chunks_per_s'], 0)} "
            f"| {r['client']['cpu_percent']:.0f}%{' ⚠' if r['client'].get('bounded_by') else ''} "
            f"| {'; '.join(notes)} |"
        )
    return lines


def markdown(doc: dict[str, Any], plots: list[str] | None = None) -> str:
    """``report.md``: the document as tables (latencies in milliseconds)."""
    cfg = doc["config"]
    m = doc["machine"]
    lines = [
        f"# wenxin bench: `{cfg['target']}` at {cfg['url']}",
        "",
        f"{doc['started_at']} · {doc['tool']} · pacing `{cfg.get('pacing') or 'none'}` · "
        f"{m['cpu_model']} ({m['cores']} cores) · Python {m['python']} · {m['event_loop']}",
        "",
    ]
    if doc.get("find_max"):
        lines += [*_find_max_section(doc["find_max"]), ""]
        if doc["result"]:
            lines += ["## Best passing step", ""]
    else:
        lines += ["## Result", ""]
    if doc["result"]:
        lines += _run_section(doc["result"])
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _cdf_panel(title: str, points: list[list[float]], summary: dict[str, Any], color: str) -> Panel:
    if not points:
        return Panel(title, "milliseconds", "fraction of values ≤ x", [], note="no data")
    xs = [p[0] for p in points]
    clip = next((p[0] for p in points if p[1] >= 0.999), xs[-1])
    # Start the axis at 0 unless every value is far from it (a TTFT of ~500 ms).
    low = xs[0] if xs[0] < 0 or xs[0] > 0.25 * clip else 0.0
    high = clip if clip > low else low + 1.0
    shown = [(x, f) for x, f in points if x <= high]
    note = f"max {fmt_number(xs[-1])} ms (axis clipped at p99.9)" if xs[-1] > high else ""
    label = " · ".join(
        f"{name} {fmt_number(summary[name])}"
        for name in ("p50", "p99", "max")
        if summary.get(name) is not None
    )
    guides = [Guide("y", f, name) for f, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"))]
    return Panel(
        title,
        "milliseconds",
        "fraction of values ≤ x",
        [Series(f"{label} ms" if label else title, shown, color)],
        xlim=(low, high),
        ylim=(0.0, 1.0),
        guides=guides,
        note=note,
        yticks=[(f, f"{f:.0%}") for f in (0.0, 0.25, 0.5, 0.75, 1.0)],
    )


def latency_cdf_svg(result: dict[str, Any], title: str) -> str:
    """TTFT and chunk-lateness CDFs of one run, side by side."""
    cdf = result["cdf"]
    method = result["lateness_method"]
    return render(
        [
            _cdf_panel("time to first token", cdf["ttft_ms"], result["ttft_ms"], PALETTE[0]),
            _cdf_panel(
                f"chunk lateness ({method})", cdf["lateness_ms"], result["lateness_ms"], PALETTE[1]
            ),
        ],
        title=title,
    )


def find_max_svg(fm: dict[str, Any], title: str) -> str:
    """Lateness p50 and p99 against concurrency: one point per concurrency tried (its last
    attempt, which decided it)."""
    verdicts = {s["concurrency"]: s for s in fm["steps"]}  # a re-run's last attempt decides
    steps = sorted(verdicts.values(), key=lambda s: s["concurrency"])
    threshold = fm["criteria"]["max_p99_lateness_ms"]
    p50 = [(s["concurrency"], s["result"]["lateness_ms"]["p50"]) for s in steps]
    p99 = [(s["concurrency"], s["result"]["lateness_ms"]["p99"]) for s in steps]
    hollow = [not s["passed"] for s in steps if s["result"]["lateness_ms"]["p99"] is not None]
    p50 = [(float(x), float(y)) for x, y in p50 if y is not None]
    p99 = [(float(x), float(y)) for x, y in p99 if y is not None]
    passing = [y for (x, y), h in zip(p99, hollow, strict=True) if not h]
    top = max([threshold * 1.5, *(y * 1.15 for y in passing)])
    guides = [
        Guide("y", threshold, f"criterion: p99 < {threshold:g} ms", PALETTE[1], label_at="start")
    ]
    if fm["best_concurrency"]:
        guides.append(Guide("x", fm["best_concurrency"], f"max {fm['best_concurrency']:,}"))
    xmax = max([s["concurrency"] for s in steps] or [1]) * 1.05
    panel = Panel(
        "chunk lateness against concurrency",
        "concurrent streams",
        "lateness (ms)",
        [
            Series("p50 lateness", p50, PALETTE[0], markers=True, hollow=hollow),
            Series("p99 lateness", p99, PALETTE[1], markers=True, hollow=hollow),
        ],
        xlim=(0.0, xmax),
        ylim=(0.0, top),
        guides=guides,
        note="hollow markers: steps that failed the criteria",
        legend_at="top-left",
    )
    return render([panel], title=title, panel_width=760)


def write_outputs(out_dir: Path, doc: dict[str, Any]) -> list[Path]:
    """Write ``result.json``, the plots and ``report.md`` into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = doc["config"]
    title = f"wenxin bench · {cfg['target']} · {cfg['url']}"
    plots: dict[str, str] = {}
    if doc["result"]:
        plots[CDF_PLOT] = latency_cdf_svg(
            doc["result"], f"{title} · {doc['result']['concurrency']:,} streams"
        )
    if doc.get("find_max") and doc["find_max"]["steps"]:
        plots[FIND_MAX_PLOT] = find_max_svg(doc["find_max"], title)
    paths = []
    result_path = out_dir / "result.json"
    result_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths.append(result_path)
    for name, svg in plots.items():
        path = out_dir / name
        path.write_text(svg, encoding="utf-8")
        paths.append(path)
    report = out_dir / "report.md"
    report.write_text(markdown(doc, list(plots)), encoding="utf-8")
    paths.append(report)
    return paths
