"""``bench/soak.py``'s verdicts (the soak itself runs by hand): where the warm-up starts, and
that the growth from minute 5 by the letter stays reported beside the verdict."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_soak", SOAK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


soak = _load()


def _samples(rows: list[tuple[float, float, float]]) -> list[Any]:
    """(minute, RSS MB, streams in flight) under load, after an idle baseline and before an
    idle sample after the load."""
    idle = soak.Sample(0.0, 60.0, 19, 4, 0, 0.1, 0, phase="idle")
    load = [soak.Sample(m, rss, 2000, 4 * n, n, 1.0, 0) for m, rss, n in rows]
    after = soak.Sample(rows[-1][0] + 1, 100.0, 19, 4, 0, 1.0, 0, phase="after")
    return [idle, *load, after]


def test_the_warm_up_counts_from_when_the_load_reached_its_steady_level() -> None:
    # a load generator that reaches its ~1,000 streams only at minute 3: the heap grows with
    # it until minute 8, then stays flat
    rows = [(1.0, 100.0, 300), (2.0, 110.0, 600), (3.0, 140.0, 950), (4.0, 150.0, 1000)]
    rows += [(5.0, 155.0, 1000), (6.0, 160.0, 1000), (7.0, 165.0, 1000), (8.0, 170.0, 1000)]
    rows += [(9.0, 171.0, 1000), (10.0, 171.5, 990), (11.0, 171.0, 1000), (12.0, 172.0, 1000)]
    tally = soak.Tally()
    samples = _samples(rows)
    rss = soak.check(samples, samples[0], 5.0, tally)["rss_growth_after_warmup"]
    assert rss["steady_from_minute"] == 3.0
    assert rss["from_minute"] == 8.0
    assert rss["growth"] == round((172.0 - 170.0) / 170.0, 4)
    assert rss["met"]
    assert rss["by_the_letter"] == {"from_minute": 5.0, "from_mb": 155.0, "growth": 0.1097}


def test_growth_after_a_steady_load_is_still_missed() -> None:
    # steady from the first minute: the warm-up ends at minute 6 and the growth after it counts
    rows = [(float(m), 150.0 + 4 * m, 1000) for m in range(1, 13)]
    tally = soak.Tally()
    samples = _samples(rows)
    rss = soak.check(samples, samples[0], 5.0, tally)["rss_growth_after_warmup"]
    assert rss["steady_from_minute"] == 1.0
    assert rss["from_minute"] == 6.0
    assert not rss["met"]


def test_a_warm_up_that_ends_with_the_load_proves_nothing() -> None:
    # the load reaches its level at minute 5 of 11: two samples after the warm-up are no
    # evidence that RSS stays flat
    rows = [(float(m), 150.0, 100 if m < 5 else 1000) for m in range(1, 12)]
    tally = soak.Tally()
    samples = _samples(rows)
    rss = soak.check(samples, samples[0], 5.0, tally)["rss_growth_after_warmup"]
    assert rss["growth"] == 0.0
    assert rss["samples_from_warm"] < 3
    assert not rss["met"]
