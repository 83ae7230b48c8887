"""Usage records and key budgets in the store, on both backends (SQLite and PostgreSQL):
schema step 4 over an existing database, one row per upstream request (a second store of the
same request refused), sums beyond 32 bits, the report's grouping, budgets set and read."""

from __future__ import annotations

from pathlib import Path

import pytest

from wenxin_stream._events import Usage
from wenxin_stream._stream_core import AttemptUsage
from wenxin_stream.server import _schema, _usage_sql
from wenxin_stream.server._budgets import Budgets
from wenxin_stream.server._store import (
    PostgresStore,
    SQLiteStore,
    StoreError,
    SyncDatabase,
    SyncKeyAdmin,
    open_store,
)
from wenxin_stream.server._usage import (
    Pricing,
    UsageRecord,
    first_attempt,
    taken_over_record,
    usage_records,
)

Either = SQLiteStore | PostgresStore


def _record(stream: str, attempt: int, key: str = "k_a", **over: object) -> UsageRecord:
    values: dict[str, object] = {
        "key_id": key, "model": "ernie-4.5-21b-a3b", "channel": "default",
        "at": "2026-12-03T04:00:00.000000Z", "day": "2026-12-03", "stream_id": stream,
        "attempt": attempt, "kind": "first", "prompt_tokens": 10, "completion_tokens": 20,
        "total_tokens": 30, "reasoning_tokens": None, "cost_nano": 45_000, "estimated": False,
    }  # fmt: skip
    values.update(over)
    return UsageRecord(**values)  # type: ignore[arg-type]


async def test_usage_records_are_stored_once_and_summed(store: Either) -> None:
    first = [_record("s_1", 1, estimated=True), _record("s_1", 2, kind="continuation")]
    assert await store.record_usage(first) == 2
    with pytest.raises(StoreError):  # the same request again: refused, nothing counted twice
        await store.record_usage([_record("s_1", 2)])
    big = 3 * 2**32  # beyond 32 bits on both backends
    await store.record_usage(
        [_record("s_2", 1, day="2026-12-04", total_tokens=big, cost_nano=big, model="m2"),
         _record("s_3", 1, key="k_b", day="2026-11-30", reasoning_tokens=7)]
    )  # fmt: skip
    assert await store.spent_since("k_a", "2026-12-01") == (60 + big, 90_000 + big)
    assert await store.spent_since("k_a", "2026-12-04") == (big, big)
    assert await store.spent_since("k_b", "2026-12-01") == (0, 0)
    assert await store.spent_since("k_x", "2026-12-01") == (0, 0)
    rows = await store.usage_rows("2026-11-01", "2026-12-31")
    assert [(r.day, r.key_id, r.model, r.answers, r.requests, r.estimated) for r in rows] == [
        ("2026-11-30", "k_b", "ernie-4.5-21b-a3b", 1, 1, 0),
        ("2026-12-03", "k_a", "ernie-4.5-21b-a3b", 1, 2, 1),
        ("2026-12-04", "k_a", "m2", 1, 1, 0),
    ]
    assert rows[0].reasoning_tokens == 7
    assert rows[2].total_tokens == big
    only_b = await store.usage_rows("2026-11-01", "2026-12-31", "k_b")
    assert [r.key_id for r in only_b] == ["k_b"]
    assert await store.usage_rows("2026-12-05", "2026-12-31") == []


async def test_a_taken_over_answers_holders_number_their_requests_apart(store: Either) -> None:
    """The producer, a taker (fencing token 2) and a second taker (token 3) each store their
    own rows of one answer: no key collides, whatever the order; a holder's block stored
    twice is refused (nothing counted twice)."""
    pricing, now = Pricing(), 1_796_272_000.0  # 2026-12-03
    common = {"key_id": "k_t", "model": "ernie-4.5-21b-a3b", "stream_id": "s_t", "now": now,
              "pricing": pricing}  # fmt: skip
    reported = AttemptUsage(1, "first", Usage(10, 20, 30))
    cut = AttemptUsage(2, "retry", None, Usage(10, 5, 15))
    producer = usage_records([("a", reported), ("b", cut)], **common)  # type: ignore[arg-type]
    taker = [
        taken_over_record(Usage(10, 5), channel="a", token=2, **common),  # type: ignore[arg-type]
        *usage_records([("b", AttemptUsage(1, "continuation", Usage(40, 9, 49)))],
                       first=first_attempt(2) + 1, **common),  # type: ignore[arg-type]
    ]  # fmt: skip
    again = [taken_over_record(Usage(10, 14), channel="a", token=3, **common)]  # type: ignore[arg-type]
    assert [r.attempt for r in producer + taker + again] == [1, 2, 200, 201, 300]
    assert [r.kind for r in taker] == ["taken_over", "continuation"]
    assert taker[0].estimated
    assert taker[0].total_tokens == 15
    assert taker[0].cost_nano == pricing.cost("ernie-4.5-21b-a3b", "a", 10, 5)
    for batch in (again, taker, producer):  # any order: the blocks never meet
        await store.record_usage(batch)
    with pytest.raises(StoreError):
        await store.record_usage(taker)
    assert await store.spent_since("k_t", "2026-12-01") == (
        sum(r.total_tokens for r in producer + taker + again),
        sum(r.cost_nano or 0 for r in producer + taker + again),
    )
    assert first_attempt(1) == 1  # the producer (and any answer outside a fleet) from 1


async def test_a_takers_estimate_is_stored_only_if_no_earlier_holder_stored_rows(
    store: Either,
) -> None:
    """A producer that stored its requests' rows and lost the answer only afterwards counted
    them itself: the taker's estimate of that part is left out, its own rows are stored."""
    pricing, now = Pricing(), 1_796_272_000.0  # 2026-12-03
    own = AttemptUsage(1, "continuation", Usage(40, 9, 49))

    def taker(stream: str, token: int) -> tuple[UsageRecord, list[UsageRecord]]:
        common = {"key_id": "k_e", "model": "ernie-4.5-21b-a3b", "stream_id": stream,
                  "now": now, "pricing": pricing}  # fmt: skip
        estimate = taken_over_record(Usage(10, 5), channel="a", token=token, **common)  # type: ignore[arg-type]
        return estimate, usage_records([("a", own)], first=first_attempt(token) + 1, **common)  # type: ignore[arg-type]

    # the producer stored nothing (killed): the estimate and the taker's request
    assert await store.record_taken_over_usage(*taker("s_dead", 2)) == 2
    # the producer stored its request, then lost the answer: only the taker's own request
    await store.record_usage([_record("s_late", 1, key="k_e")])
    assert await store.record_taken_over_usage(*taker("s_late", 2)) == 1
    # a second taker after a first that stored its rows: only its own request
    assert await store.record_taken_over_usage(*taker("s_dead", 3)) == 1
    rows = await store.usage_rows("2026-12-01", "2026-12-31", "k_e")
    assert sum(r.requests for r in rows) == 2 + 2 + 1
    assert sum(r.estimated for r in rows) == 1


async def test_budgets_are_set_updated_and_read_alike(database: str) -> None:
    with SyncKeyAdmin(database) as admin:
        record, secret = admin.create_key(
            "alice", rpm=None, tpm=None, max_streams=None,
            budgets=Budgets(tokens_day=1000, nano_month=5 * 10**12),  # 5,000 CNY: > 32 bits
        )  # fmt: skip
        assert record.budgets == Budgets(tokens_day=1000, nano_month=5 * 10**12)
        updated = admin.update_key("alice", {"budget_tokens_day": None, "rpm": 7})
        assert updated is not None
        assert (updated.rpm, updated.budget_tokens_day, updated.budget_nano_month) == (
            7,
            None,
            5 * 10**12,
        )
        with pytest.raises(ValueError):
            admin.update_key("alice", {"budget_nano_day": 0})
        with pytest.raises(ValueError):
            admin.update_key("alice", {"name": 1})
        assert admin.update_key("nobody", {"rpm": 1}) is None
        rows = admin.usage_rows("2026-01-01", "2026-12-31")
        assert rows == []
    async with open_store(database) as store:
        found = await store.find_key(secret)
        assert found is not None
        assert found.budgets == Budgets(nano_month=5 * 10**12)
        await store.record_usage([_record("s_9", 1, key=found.id)])
        (row,) = await store.usage_rows("2026-12-01", "2026-12-31")
        assert (row.key_id, row.key_name) == (found.id, "alice")


def test_step_4_upgrades_a_database_of_step_3(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SyncDatabase(path) as db:
        for _ in range(3):  # the schema as the previous release left it
            db._run(_schema.migrate_step, write=True)
        db._run(
            lambda d: d.run(
                "INSERT INTO api_keys (id, name, prefix, secret_hash, created_at) "
                "VALUES ('k_old', 'old', 'abcd1234', 'h', '2026-01-01T00:00:00.000000Z')"
            ),
            write=True,
        )
        assert db.schema_version() == 3
        assert db.upgrade() == [4]
    with SyncKeyAdmin(path) as admin:
        (old,) = admin.list_keys()
        assert (old.id, old.budgets.any) == ("k_old", False)
    assert _schema.MIGRATIONS[3] == _usage_sql.USAGE_STEP
