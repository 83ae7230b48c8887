"""Per-key budgets (``_budgets``) and the usage arithmetic (``_usage``): exact under racing
requests in one process and in Redis, periods that roll over on Beijing's clock (injected),
the spend of a period loaded from the store, Redis gone → 503."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services import Service, redis_server
from wenxin_stream._events import Usage
from wenxin_stream._models import PriceTier
from wenxin_stream._stream_core import AttemptUsage
from wenxin_stream.server._budgets import BudgetHold, BudgetLimiter, Budgets, SharedBudgets
from wenxin_stream.server._leases import Leases
from wenxin_stream.server._limits import Rejection
from wenxin_stream.server._redis import SharedRedis
from wenxin_stream.server._usage import (
    Pricing,
    beijing_day,
    cny_from_nano,
    cost_nano,
    nano_from_cny,
    period_of,
    usage_records,
)

_prefixes = itertools.count()


def _t(text: str) -> float:
    """POSIX time of a UTC ISO time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Spent:
    """The store's ``spent_since`` as a table: (key, first day) → (tokens, nano)."""

    def __init__(self, table: dict[tuple[str, str], tuple[int, int]] | None = None) -> None:
        self.table = table or {}
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, key_id: str, first_day: str) -> tuple[int, int]:
        self.calls.append((key_id, first_day))
        await asyncio.sleep(0.01)  # a real trip to the store: other requests run meanwhile
        return self.table.get((key_id, first_day), (0, 0))


def _held(result: BudgetHold | Rejection) -> BudgetHold:
    assert isinstance(result, BudgetHold), result
    return result


def _refused(result: BudgetHold | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


# -- _usage: periods and prices --------------------------------------------------------------


def test_beijing_days_and_months_and_their_resets() -> None:
    # 15:59:59 UTC is 23:59:59 in Beijing; a second later the Beijing day (and month) turns
    before = _t("2026-11-30T15:59:59")
    assert beijing_day(before) == "2026-11-30"
    assert beijing_day(before + 1) == "2026-12-01"
    assert period_of("day", before) == ("2026-11-30", before + 1)
    assert period_of("month", before) == ("2026-11", before + 1)
    assert period_of("month", _t("2026-12-15T00:00:00")) == ("2026-12", _t("2026-12-31T16:00:00"))


def test_costs_are_exact_nano_cny() -> None:
    tiers = (PriceTier(0.8, 3.2, up_to=1000), PriceTier(1.1, 4.4))
    assert cost_nano(tiers, 3, 7) == (3 * 800 + 7 * 3200)  # 0.8 CNY/M = 800 nano per token
    assert cost_nano(tiers, 1001, 1) == 1001 * 1100 + 4400  # the tier by the prompt's size
    assert cost_nano((PriceTier(0.8, 3.2, up_to=10),), 11, 0) is None
    assert cost_nano((), 5, 5) is None
    assert nano_from_cny("2.50") == 2_500_000_000
    assert cny_from_nano(2_500_000_000) == "2.50"
    assert cny_from_nano(1355000) == "0.001355"
    for bad in ("0", "-1", "abc", "1e-12", "nan"):
        with pytest.raises(ValueError):
            nano_from_cny(bad)


def test_pricing_channel_overrides_and_unknown_models() -> None:
    pricing = Pricing({"cheap": {"ERNIE-4.5-21B-A3B": [PriceTier(0.1, 0.2)]}})
    assert pricing.cost("ernie-4.5-21b-a3b", "default", 10, 10) == 10 * 500 + 10 * 2000
    assert pricing.cost("ernie-4.5-21b-a3b", "cheap", 10, 10) == 10 * 100 + 10 * 200
    assert pricing.cost("no-such-model", "default", 10, 10) is None
    assert pricing.estimate("no-such-model", "default", 10, 10) == 0


MODEL_45 = "ernie-4.5-21b-a3b"


def test_records_one_per_request_reported_or_estimated() -> None:
    attempts = [
        ("default", AttemptUsage(1, "first", None, Usage(20, 30, 50))),  # cut before its usage
        ("default", AttemptUsage(2, "continuation", Usage(40, 12, 52), Usage(38, 10, 48))),
        ("cheap", AttemptUsage(1, "continuation", Usage(60, 5, 65))),  # on another channel
    ]
    pricing = Pricing({"cheap": {MODEL_45: [PriceTier(0.1, 0.2)]}})
    records = usage_records(
        attempts, key_id="k", model=MODEL_45, stream_id="s_1",
        now=_t("2026-12-03T17:00:00"), pricing=pricing,
    )  # fmt: skip
    assert [(r.attempt, r.channel, r.kind, r.estimated, r.total_tokens) for r in records] == [
        (1, "default", "first", True, 50),
        (2, "default", "continuation", False, 52),
        (3, "cheap", "continuation", False, 65),
    ]
    assert records[2].cost_nano == 60 * 100 + 5 * 200
    assert records[0].day == "2026-12-04"  # 17:00 UTC is 01:00 the next day in Beijing
    assert records[1].cost_nano == 40 * 500 + 12 * 2000


# -- in one process ----------------------------------------------------------------------------


async def test_racing_requests_never_pass_a_budget_only_k_fit_in() -> None:
    spent = Spent()
    limiter = BudgetLimiter(spent, clock=Clock(_t("2026-12-03T04:00:00")))
    budgets = Budgets(tokens_day=1000)
    results = await asyncio.gather(*(limiter.reserve("k", budgets, 300, 0) for _ in range(10)))
    held = [r for r in results if isinstance(r, BudgetHold)]
    refused = [r for r in results if isinstance(r, Rejection)]
    assert (len(held), len(refused)) == (3, 7)  # 3 × 300 ≤ 1000 < 4 × 300
    assert spent.calls == [("k", "2026-12-03")]  # one store read for all ten
    assert {r.code for r in refused} == {"budget_exceeded"}
    assert "daily token budget" in refused[0].message
    # each used less than reserved: settling frees room for exactly what is left
    for hold in held:
        hold.settle(200, 0)
    assert len([await limiter.reserve("k", budgets, 100, 0) for _ in range(4)]) == 4
    _refused(await limiter.reserve("k", budgets, 1, 0))  # 600 + 4 × 100 = 1000: spent


async def test_the_period_rolls_over_at_beijing_midnight_with_retry_after_until_then() -> None:
    clock = Clock(_t("2026-12-03T15:59:00"))  # 23:59 in Beijing
    limiter = BudgetLimiter(Spent(), clock=clock)
    budgets = Budgets(tokens_day=100, tokens_month=150)
    _held(await limiter.reserve("k", budgets, 100, 0)).settle(100, 0)
    refused = _refused(await limiter.reserve("k", budgets, 1, 0))
    assert refused.retry_after_header == "60"  # until 00:00 Beijing time
    assert "2026-12-04 00:00 Beijing time" in refused.message
    clock.now += 60  # a new Beijing day: the daily budget is whole again, the month is not
    _held(await limiter.reserve("k", budgets, 40, 0)).settle(40, 0)
    refused = _refused(await limiter.reserve("k", budgets, 11, 0))  # the day has room
    assert "monthly token budget" in refused.message
    assert refused.retry_after > 27 * 86_400  # the 1st of January, Beijing time
    _held(await limiter.reserve("k", budgets, 10, 0))


async def test_the_spend_so_far_comes_from_the_store_and_cny_budgets_count() -> None:
    now = _t("2026-12-03T04:00:00")
    spent = Spent({("k", "2026-12-01"): (0, 900), ("k", "2026-12-03"): (0, 400)})
    limiter = BudgetLimiter(spent, clock=Clock(now))
    budgets = Budgets(nano_day=500, nano_month=1000)
    refused = _refused(await limiter.reserve("k", budgets, 0, 101))
    assert "daily CNY budget" in refused.message  # 400 + 101 > 500 (the month: 900 + 101)
    hold = _held(await limiter.reserve("k", budgets, 0, 100))
    _refused(await limiter.reserve("k", budgets, 0, 1))  # the month is full: 900 + 100
    hold.release()  # never sent: the whole estimate is free again
    _held(await limiter.reserve("k", budgets, 0, 100))
    assert sorted(spent.calls) == [("k", "2026-12-01"), ("k", "2026-12-03")]


async def test_keys_without_budgets_touch_nothing() -> None:
    spent = Spent()
    limiter = BudgetLimiter(spent)
    hold = _held(await limiter.reserve("k", Budgets(), 10**9, 10**9))
    hold.settle(5, 5)
    assert (spent.calls, len(limiter)) == ([], 0)


def test_budgets_are_checked() -> None:
    for bad in (0, -1, True, 2**63):
        with pytest.raises(ValueError):
            Budgets(tokens_day=bad)
    assert Budgets(tokens_day=5, nano_month=2 * 10**9).describe() == (
        "daily token budget 5 tokens, monthly CNY budget 2.00 CNY"
    )


# -- in Redis ------------------------------------------------------------------------------------


@pytest.fixture
async def shared(redis_service: Service) -> AsyncIterator[SharedRedis]:
    redis = SharedRedis(redis_service.url, timeout=2.0, prefix=f"bud{next(_prefixes)}:")
    await redis.open()
    yield redis
    await redis.close()


def _shared(redis: SharedRedis, spent: Spent, clock: Clock, name: str = "a") -> SharedBudgets:
    return SharedBudgets(Leases(redis, instance_id=name, ttl=10.0), spent, clock=clock)


async def test_a_fleet_never_passes_a_budget_only_k_fit_in(shared: SharedRedis) -> None:
    clock = Clock(_t("2026-12-03T04:00:00"))
    spent = Spent({("k", "2026-12-03"): (100, 0)})  # spent before the fleet's counter existed
    a, b = _shared(shared, spent, clock, "a"), _shared(shared, spent, clock, "b")
    budgets = Budgets(tokens_day=1000, tokens_month=10_000)
    results = await asyncio.gather(*(inst.reserve("k", budgets, 300, 0) for inst in (a, b) * 5))
    held = [r for r in results if isinstance(r, BudgetHold)]
    refused = [r for r in results if isinstance(r, Rejection)]
    assert (len(held), len(refused)) == (3, 7)  # 100 + 3 × 300 ≤ 1000 < 100 + 4 × 300
    assert refused[0].code == "budget_exceeded"
    assert 0 < refused[0].retry_after <= 86_400
    for hold in held:
        hold.settle(100, 0)  # 300 reserved, 100 used: 600 tokens come back
    for _ in range(50):  # the settlements run in the background
        counters = await shared.client.hgetall(a.budget_key("k", "day", "2026-12-03"))
        if counters.get(b"t") == b"400":
            break
        await asyncio.sleep(0.02)
    assert counters[b"t"] == b"400"
    assert len([_held(await b.reserve("k", budgets, 300, 0)) for _ in range(2)]) == 2
    _refused(await a.reserve("k", budgets, 300, 0))


async def test_a_fleet_rolls_over_with_the_period(shared: SharedRedis) -> None:
    clock = Clock(_t("2026-12-03T15:59:30"))
    budgets = _shared(shared, Spent(), clock)
    _held(await budgets.reserve("k", Budgets(tokens_day=10), 10, 0))
    refused = _refused(await budgets.reserve("k", Budgets(tokens_day=10), 1, 0))
    assert refused.retry_after_header == "30"
    clock.now += 30
    _held(await budgets.reserve("k", Budgets(tokens_day=10), 10, 0))


async def test_redis_gone_is_503_never_admitted_locally() -> None:
    with redis_server() as service:  # a Redis of its own, stopped while we use it
        redis = SharedRedis(service.url, timeout=0.3)
        await redis.open()
        budgets = _shared(redis, Spent(), Clock(_t("2026-12-03T04:00:00")))
        _held(await budgets.reserve("k", Budgets(tokens_day=10), 1, 0))
    rejection = _refused(await budgets.reserve("k", Budgets(tokens_day=10), 1, 0))
    assert (rejection.status, rejection.code) == (503, "shared_state_unavailable")
    await redis.close()


def test_a_spent_budget_is_answered_like_a_spent_quota() -> None:
    """``budget_exceeded`` follows the error table's ``quota`` row: 429, ``insufficient_quota``,
    ``x-should-retry: false``; ``Retry-After`` until the period resets; documented."""
    from pathlib import Path

    from wenxin_stream.server._answers import rejection_error
    from wenxin_stream.server._budgets import budget_exceeded
    from wenxin_stream.server._errors import ROWS

    (quota,) = [row for row in ROWS if row.name == "quota"]
    now = _t("2026-12-03T12:00:00")
    _, reset_at = period_of("day", now)
    error = rejection_error(budget_exceeded("nano", "day", 10**9, 10**9, 5, reset_at, now))
    assert (error.status, error.type, error.code) == (quota.status, quota.type, "budget_exceeded")
    headers = dict(error.headers)
    assert headers[b"x-should-retry"] == b"false"
    assert headers[b"retry-after"] == b"14400"  # 20:00 → 24:00 Beijing time
    assert "daily CNY budget of this API key (1.00 CNY)" in error.message
    docs = Path(__file__).parents[2] / "docs" / "ERRORS.md"
    assert "| 429 | insufficient_quota | `budget_exceeded` |" in docs.read_text("utf-8")
