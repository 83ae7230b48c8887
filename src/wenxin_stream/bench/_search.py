"""``--find-max``: the largest concurrency whose run meets the criteria.

Theory of operation
===================

:class:`MaxSearch` is a pure policy: it proposes the next concurrency and is told whether a
run at that concurrency passed. It grows exponentially (start, 2×start, 4×start … capped at
``limit``) until a step fails, then bisects between the largest passing and the smallest failing
concurrency until they are within ``resolution`` (a fraction of the passing value, at least 1)
of each other. It stops early when ``limit`` itself passes, and after ``max_steps`` steps
whatever happens. The answer is :attr:`MaxSearch.best`, 0 when nothing passed. (:func:`find_max`
re-runs a failing concurrency before reporting the failure, so that one noisy run does not end
the growth early; the policy only sees the verdict.)

:class:`Criteria` decides pass or fail from a :class:`~._stats.RunResult` and says why in
words. :func:`find_max` drives a search with any async ``run_at(concurrency)``, so tests use a
fake runner and no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ._stats import RunResult

__all__ = ["Criteria", "FindMaxResult", "MaxSearch", "Step", "find_max"]


@dataclass(frozen=True, slots=True)
class Criteria:
    """What a step must achieve to pass."""

    max_p99_lateness_ms: float = 50.0
    max_error_rate: float = 0.0
    max_chunks_lost: int = 0
    max_p99_ttft_ms: float | None = None

    def violations(self, result: RunResult) -> list[str]:
        """Why ``result`` fails the criteria (empty: it passes)."""
        out = []
        if result.streams_completed == 0:
            out.append("no stream completed")
        if result.error_rate > self.max_error_rate:
            out.append(f"error rate {result.error_rate:.2%} > {self.max_error_rate:.2%}")
        if result.chunks_lost > self.max_chunks_lost:
            out.append(f"{result.chunks_lost} chunks lost")
        p99 = result.lateness_ms.p99
        if p99 is not None and p99 >= self.max_p99_lateness_ms:
            out.append(f"p99 lateness {p99:.1f} ms ≥ {self.max_p99_lateness_ms:g} ms")
        ttft = result.ttft_ms.p99
        if self.max_p99_ttft_ms is not None and ttft is not None and ttft >= self.max_p99_ttft_ms:
            out.append(f"p99 TTFT {ttft:.0f} ms ≥ {self.max_p99_ttft_ms:g} ms")
        return out


@dataclass(slots=True)
class MaxSearch:
    """Exponential growth, then bisection (see the module docstring)."""

    start: int
    limit: int
    resolution: float = 0.05
    max_steps: int = 24
    best: int = 0
    failed_at: int | None = None
    steps: int = 0
    _grow_to: int = 0

    def __post_init__(self) -> None:
        if self.start < 1 or self.limit < 1:
            raise ValueError("start and limit must be at least 1")
        self._grow_to = min(self.start, self.limit)

    def next(self) -> int | None:
        """The next concurrency to try, or ``None`` when the search is over."""
        if self.steps >= self.max_steps:
            return None
        if self.failed_at is None:
            return None if self.best >= self.limit else self._grow_to
        if self.failed_at - self.best <= max(1, int(self.best * self.resolution)):
            return None
        return (self.best + self.failed_at) // 2

    def record(self, concurrency: int, passed: bool) -> None:
        """Report the outcome of a run at ``concurrency``."""
        self.steps += 1
        if passed:
            self.best = max(self.best, concurrency)
            if self.failed_at is None:
                self._grow_to = min(concurrency * 2, self.limit)
        elif self.failed_at is None or concurrency < self.failed_at:
            self.failed_at = concurrency


@dataclass(frozen=True, slots=True)
class Step:
    """One run of the search."""

    concurrency: int
    passed: bool
    violations: list[str]
    result: RunResult
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class FindMaxResult:
    """The outcome of ``--find-max``."""

    best: int
    failed_at: int | None
    limit: int
    limit_reason: str
    criteria: Criteria
    steps: list[Step] = field(default_factory=list)


async def find_max(
    run_at: Callable[[int], Awaitable[RunResult]],
    search: MaxSearch,
    criteria: Criteria,
    *,
    limit_reason: str = "",
    on_step: Callable[[Step], None] | None = None,
    pause: float = 1.0,
    confirm_failures: int = 1,
) -> FindMaxResult:
    """Run steps as ``search`` proposes until it is done; ``pause`` seconds between steps.

    A failing concurrency is run again up to ``confirm_failures`` times and counts as failed
    only if every attempt fails, so one noisy run (another job stealing the CPU) cannot cut
    the search short; every attempt is kept in :attr:`FindMaxResult.steps`.
    """
    steps: list[Step] = []
    while (concurrency := search.next()) is not None:
        for attempt in range(confirm_failures + 1):
            if steps and pause:
                await asyncio.sleep(pause)
            result = await run_at(concurrency)
            violations = criteria.violations(result)
            step = Step(concurrency, not violations, violations, result, attempt)
            steps.append(step)
            if on_step is not None:
                on_step(step)
            if step.passed:
                break
        search.record(concurrency, step.passed)
    return FindMaxResult(search.best, search.failed_at, search.limit, limit_reason, criteria, steps)
