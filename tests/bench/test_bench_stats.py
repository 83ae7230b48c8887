"""Percentile math (nearest rank), summaries and CDF points."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wenxin_stream.bench._stats import (
    Collector,
    lateness_method,
    percentile,
    quantile_points,
    summarize,
)


def test_nearest_rank_definition() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]  # the textbook example
    assert percentile(values, 5) == 15.0
    assert percentile(values, 30) == 20.0
    assert percentile(values, 40) == 20.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 0) == 15.0


def test_percentiles_of_1_to_100() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_properties(values: list[float], p: float) -> None:
    ordered = sorted(values)
    result = percentile(ordered, p)
    assert result in ordered
    # at least p% of the values are <= the result, and fewer than p% are strictly below it
    at_or_below = sum(1 for v in ordered if v <= result)
    below = sum(1 for v in ordered if v < result)
    assert at_or_below >= p / 100 * len(ordered) - 1e-9
    assert below < max(p / 100 * len(ordered), 1)


def test_summarize_converts_seconds_to_ms() -> None:
    s = summarize(array("d", [0.001 * i for i in range(1, 1001)]))
    assert s.count == 1000
    assert s.min == 1.0
    assert s.p50 == 500.0
    assert s.p90 == 900.0
    assert s.p99 == 990.0
    assert s.p999 == 999.0
    assert s.max == 1000.0
    assert s.mean == pytest.approx(500.5)
    empty = summarize([])
    assert empty.count == 0
    assert empty.p99 is None


def test_quantile_points() -> None:
    assert quantile_points([]) == []
    points = quantile_points([float(i) / 1000 for i in range(1, 1001)], points=100)
    assert points[0] == [1.0, 0.001]
    assert points[-1] == [1000.0, 1.0]
    assert 95 <= len(points) <= 102
    fractions = [f for _, f in points]
    assert fractions == sorted(fractions)
    assert quantile_points([0.002]) == [[2.0, 1.0]]


def test_collector_failures_and_samples() -> None:
    col = Collector()
    for i in range(5):
        col.fail("http_500", f"boom {i}", measured=True)
    col.fail("timeout", "", measured=True)
    col.fail("incomplete", "warm", measured=False)
    assert col.failures == {"http_500": 5, "timeout": 1}
    assert col.error_samples["http_500"] == ["boom 0", "boom 1", "boom 2"]
    assert col.error_samples["timeout"] == []
    assert col.failed == 6
    assert col.all_failed == 7


def test_lateness_method_names() -> None:
    assert lateness_method(1, 0) == "stamp"
    assert lateness_method(0, 2) == "schedule"
    assert lateness_method(1, 2) == "stamp+schedule"
    assert lateness_method(0, 0) == "none"
