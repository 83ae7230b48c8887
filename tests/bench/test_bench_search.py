"""--find-max: the search policy on a fake runner, and the pass/fail criteria."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from bench_helpers import fake_result

from wenxin_stream.bench._search import Criteria, MaxSearch, find_max
from wenxin_stream.bench._stats import RunResult, Summary


def drive(search: MaxSearch, capacity: int) -> list[int]:
    tried = []
    while (c := search.next()) is not None:
        tried.append(c)
        search.record(c, c <= capacity)
    return tried


def test_grows_then_bisects_to_the_resolution() -> None:
    search = MaxSearch(100, 20000, resolution=0.05)
    tried = drive(search, 1234)
    assert tried[:5] == [100, 200, 400, 800, 1600]
    assert search.failed_at is not None
    assert search.best <= 1234 < search.failed_at
    assert search.failed_at - search.best <= max(1, int(search.best * 0.05))
    assert len(tried) < 12


def test_exact_with_resolution_zero() -> None:
    search = MaxSearch(1, 1000, resolution=0.0)
    drive(search, 777)
    assert search.best == 777
    assert search.failed_at == 778


def test_limit_passes_and_nothing_passes() -> None:
    top = MaxSearch(100, 500)
    assert drive(top, 10**6) == [100, 200, 400, 500]
    assert top.best == 500
    assert top.failed_at is None
    none = MaxSearch(8, 100, resolution=0.0)
    tried = drive(none, 0)
    assert tried == [8, 4, 2, 1]
    assert none.best == 0


def test_max_steps_bounds_the_search() -> None:
    search = MaxSearch(1, 10**9, resolution=0.0, max_steps=5)
    assert len(drive(search, 10**8)) == 5


def test_search_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MaxSearch(0, 10)
    assert MaxSearch(500, 100).next() == 100  # start capped at the limit


def test_criteria() -> None:
    c = Criteria(max_p99_lateness_ms=50, max_error_rate=0.01)
    assert c.violations(fake_result(10)) == []
    assert c.violations(fake_result(10, p99=None)) == []  # no pacing: lateness not judged
    assert c.violations(fake_result(10, p99=50.0)) == ["p99 lateness 50.0 ms ≥ 50 ms"]
    assert c.violations(fake_result(10, failed=2, completed=98)) == ["error rate 2.00% > 1.00%"]
    assert c.violations(fake_result(10, lost=3)) == ["3 chunks lost"]
    assert "no stream completed" in c.violations(fake_result(10, completed=0))


def test_find_max_with_a_fake_runner() -> None:
    ran: list[int] = []
    steps_seen: list[int] = []

    async def run_at(concurrency: int) -> RunResult:
        ran.append(concurrency)
        # lateness grows with load; beyond 3000 streams p99 passes 50 ms
        return fake_result(concurrency, p99=concurrency / 60)

    result = asyncio.run(
        find_max(
            run_at,
            MaxSearch(250, 20000, resolution=0.02),
            Criteria(),
            on_step=lambda s: steps_seen.append(s.concurrency),
            pause=0,
        )
    )
    assert ran == steps_seen
    assert ran[:5] == [250, 500, 1000, 2000, 4000]
    assert 2900 <= result.best < 3000
    assert all(s.passed == (s.concurrency / 60 < 50) for s in result.steps)
    failed = [s for s in result.steps if not s.passed]
    assert failed[0].violations[0].startswith("p99 lateness")
    assert replace(result, steps=[]).best == result.best


def test_a_failure_is_confirmed_before_it_counts() -> None:
    flaky = {500: 1}  # the first run at 500 is unlucky, the second passes

    async def run_at(concurrency: int) -> RunResult:
        if flaky.get(concurrency, 0) > 0:
            flaky[concurrency] -= 1
            return fake_result(concurrency, p99=999.0)
        return fake_result(concurrency, p99=10.0 if concurrency <= 1000 else 999.0)

    result = asyncio.run(
        find_max(run_at, MaxSearch(250, 1600, resolution=0.5), Criteria(), pause=0)
    )
    runs = [(s.concurrency, s.attempt, s.passed) for s in result.steps]
    assert runs[:5] == [
        (250, 0, True),
        (500, 0, False),
        (500, 1, True),
        (1000, 0, True),
        (1600, 0, False),
    ]
    assert runs[5] == (1600, 1, False)
    assert result.best >= 1000
    never = asyncio.run(
        find_max(
            run_at, MaxSearch(2000, 4000, resolution=0.5), Criteria(), pause=0, confirm_failures=0
        )
    )
    assert [s.attempt for s in never.steps] == [0] * len(never.steps)


def test_ttft_criterion_and_upstream_warning() -> None:
    slow = replace(fake_result(10), ttft_ms=Summary(count=1, p99=9000.0))
    assert Criteria().violations(slow) == []
    assert Criteria(max_p99_ttft_ms=2000).violations(slow) == ["p99 TTFT 9000 ms ≥ 2000 ms"]
    assert slow.upstream_behind == ""  # no schedule data
    behind = replace(slow, behind_schedule_ms=Summary(count=1, p99=3000.0))
    assert "fell behind its schedule" in behind.upstream_behind
    assert "TTFT p99 9,000 ms" in behind.upstream_behind
    assert behind.to_dict()["upstream_behind"] == behind.upstream_behind
    assert replace(behind, lateness_method="schedule").upstream_behind == ""
    close = replace(behind, behind_schedule_ms=Summary(count=1, p99=300.0))
    assert close.upstream_behind == ""
