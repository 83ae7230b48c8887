"""Helpers shared by the bench tests."""

from __future__ import annotations

from wenxin_stream.bench._stats import ClientCost, RunResult, Summary, Throughput


def fake_result(
    concurrency: int,
    *,
    p99: float | None = 10.0,
    failed: int = 0,
    lost: int = 0,
    completed: int = 100,
) -> RunResult:
    total = completed + failed
    return RunResult(
        concurrency=concurrency,
        window_s=1.0,
        streams_started=total,
        streams_completed=completed,
        streams_failed=failed,
        streams_cut_at_end=0,
        failures={"timeout": failed} if failed else {},
        error_samples={},
        error_rate=failed / total if total else 0.0,
        chunks_received=completed * 10,
        chunks_expected_per_stream=10,
        chunks_lost=lost,
        streams_with_loss=1 if lost else 0,
        ttft_ms=Summary(),
        lateness_ms=Summary(count=1, p50=1.0, p99=p99),
        lateness_method="stamp",
        lateness_chunks={"stamp": 1, "schedule": 0},
        gap_ms=Summary(),
        total_ms=Summary(),
        behind_schedule_ms=Summary(),
        throughput=Throughput(1.0, 10.0, None),
        client=ClientCost(0.1, 1.0, 10.0, 1.0, "asyncio", concurrency),
        processes=[],
    )
