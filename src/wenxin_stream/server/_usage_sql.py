"""The usage table and its statements: portable SQL for SQLite and PostgreSQL.

``usage_records`` holds one row per upstream request (``_usage.UsageRecord``), keyed by
``(stream_id, attempt)``: an answer's request can be recorded once only — a second insert of
the same request is refused by the database, so no code path can count it twice. Reports
group by Beijing ``day`` (stored with each row, so grouping is plain SQL on both backends),
key, model and channel; budgets sum a key's rows since the first day of a period.
Token and cost sums are ``BIGINT`` (PostgreSQL's ``SUM`` of them is ``numeric``: converted
back to ``int`` here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._sql import Db
from ._usage import UsageRecord

__all__ = [
    "USAGE_STEP",
    "UsageRow",
    "insert_taken_over",
    "insert_usage",
    "spent_since",
    "usage_rows",
]

USAGE_STEP: tuple[str, ...] = (
    """CREATE TABLE usage_records (
        stream_id TEXT NOT NULL, attempt INTEGER NOT NULL, key_id TEXT NOT NULL,
        model TEXT NOT NULL, channel TEXT NOT NULL, at TEXT NOT NULL, day TEXT NOT NULL,
        kind TEXT NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
        total_tokens BIGINT NOT NULL, reasoning_tokens BIGINT, cost_nano BIGINT,
        estimated INTEGER NOT NULL, PRIMARY KEY (stream_id, attempt))""",
    "CREATE INDEX usage_by_key_day ON usage_records (key_id, day)",
    "CREATE INDEX usage_by_day ON usage_records (day)",
    "ALTER TABLE api_keys ADD COLUMN budget_tokens_day BIGINT",
    "ALTER TABLE api_keys ADD COLUMN budget_tokens_month BIGINT",
    "ALTER TABLE api_keys ADD COLUMN budget_nano_day BIGINT",
    "ALTER TABLE api_keys ADD COLUMN budget_nano_month BIGINT",
)
"""Schema step 4: the usage table and the keys' budgets (``_schema.MIGRATIONS``)."""

_INSERT = (
    "INSERT INTO usage_records (stream_id, attempt, key_id, model, channel, at, day, kind, "
    "prompt_tokens, completion_tokens, total_tokens, reasoning_tokens, cost_nano, estimated) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_usage(db: Db, records: Sequence[UsageRecord]) -> int:
    """Store ``records`` (one statement per batch); how many."""
    if not records:
        return 0
    return db.run_many(_INSERT, [_row(r) for r in records])


def insert_taken_over(db: Db, estimate: UsageRecord, records: Sequence[UsageRecord]) -> int:
    """Store a taker's rows of an answer (``_usage``: its estimate of what the instances
    before it spent, at the first number of its block, then its own requests); the estimate
    only if no earlier holder stored rows of the answer (numbers below the estimate's): an
    instance that recorded its requests and lost the answer only afterwards counted them
    itself. How many rows."""
    earlier = db.one(
        "SELECT 1 FROM usage_records WHERE stream_id = ? AND attempt < ? LIMIT 1",
        (estimate.stream_id, estimate.attempt),
    )
    rows = list(records) if earlier is not None else [estimate, *records]
    return insert_usage(db, rows)


def _row(r: UsageRecord) -> tuple[Any, ...]:
    return (
        r.stream_id, r.attempt, r.key_id, r.model, r.channel, r.at, r.day, r.kind,
        r.prompt_tokens, r.completion_tokens, r.total_tokens, r.reasoning_tokens,
        r.cost_nano, 1 if r.estimated else 0,
    )  # fmt: skip


def spent_since(db: Db, key_id: str, first_day: str) -> tuple[int, int]:
    """(total tokens, nano-CNY) ``key_id`` spent from Beijing day ``first_day`` on."""
    row = db.one(
        "SELECT COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cost_nano), 0) FROM usage_records "
        "WHERE key_id = ? AND day >= ?",
        (key_id, first_day),
    )
    if row is None:
        return 0, 0
    return int(row[0]), int(row[1])


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group of a usage report: a Beijing ``day``, a key (``key_name`` ``None`` when the
    key is unknown, e.g. dev mode's ``local``), a model and a channel; ``requests`` upstream
    requests of ``answers`` answers (``estimated`` of them without reported usage); tokens;
    cost in nano-CNY (``None`` priced nothing)."""

    day: str
    key_id: str
    key_name: str | None
    model: str
    channel: str
    answers: int
    requests: int
    estimated: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_nano: int | None


_REPORT = (
    "SELECT u.day, u.key_id, k.name, u.model, u.channel, COUNT(DISTINCT u.stream_id), "
    "COUNT(*), SUM(u.estimated), SUM(u.prompt_tokens), SUM(u.completion_tokens), "
    "COALESCE(SUM(u.reasoning_tokens), 0), SUM(u.total_tokens), SUM(u.cost_nano) "
    "FROM usage_records u LEFT JOIN api_keys k ON k.id = u.key_id "
    "WHERE u.day >= ? AND u.day <= ?"
)
_GROUP = " GROUP BY u.day, u.key_id, k.name, u.model, u.channel ORDER BY u.day, u.key_id, u.model"


def usage_rows(db: Db, first_day: str, last_day: str, key_id: str | None = None) -> list[UsageRow]:
    """The usage from Beijing day ``first_day`` to ``last_day`` (both included), grouped by
    day, key, model and channel; only ``key_id``'s when given."""
    params: list[Any] = [first_day, last_day]
    sql = _REPORT
    if key_id is not None:
        sql += " AND u.key_id = ?"
        params.append(key_id)
    rows = db.all(sql + _GROUP, params)
    return [
        UsageRow(
            day=str(r[0]),
            key_id=str(r[1]),
            key_name=None if r[2] is None else str(r[2]),
            model=str(r[3]),
            channel=str(r[4]),
            answers=int(r[5]),
            requests=int(r[6]),
            estimated=int(r[7]),
            prompt_tokens=int(r[8]),
            completion_tokens=int(r[9]),
            reasoning_tokens=int(r[10]),
            total_tokens=int(r[11]),
            cost_nano=None if r[12] is None else int(r[12]),
        )
        for r in rows
    ]
