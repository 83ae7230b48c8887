"""``GET /api/usage``: the caller's own usage, spend and budgets.

Only the caller's key is ever shown (the owner of the request: a key id, or ``local`` in dev
mode); there is no admin role in the server, so the all-keys view is ``wenxin usage``, which
reads the database directly. Query: ``from`` and ``to`` (Beijing days ``YYYY-MM-DD``, both
included; default: the current Beijing month up to today; ``from`` after ``to`` is an empty
range). Any span may be asked for: the rows are the caller's own, one per day and model used.
The body (``docs/SERVER-API.md``): ``key_id``, ``from``, ``to``, ``days`` (one row per day
and model: requests, tokens, cost), ``totals`` and ``budgets`` — each budget of the key with
what is spent in its current period (from the store: the settled usage) and when it resets.
Costs are CNY as decimal strings (exact; nano-CNY behind them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date
from typing import Any

from .._asgi import Receive, Send, send_json
from ._access import Access, Principal
from ._http import Context, HTTPError, Routes
from ._usage import Period, beijing_day, cny_from_nano, period_of, period_start
from ._usage_sql import UsageRow
from ._usage_writer import UsageWriter

__all__ = ["UsageRoutes", "parse_day", "usage_body"]


def parse_day(value: str | None, name: str, default: str) -> str:
    """A Beijing day ``YYYY-MM-DD`` from the query (``default`` when absent; empty is an
    error).

    Raises:
        HTTPError: 400 ``invalid_field`` naming ``name``.
    """
    if value is None:
        return default
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise HTTPError(
            400, "invalid_field", f"'{name}' must be a day as YYYY-MM-DD", param=name
        ) from None


def _cny(nano: int | None) -> str | None:
    return None if nano is None else cny_from_nano(nano)


def usage_body(
    owner: str,
    first: str,
    last: str,
    rows: list[UsageRow],
    spent: dict[Period, tuple[int, int]],
    principal: Principal,
    now: float,
) -> dict[str, Any]:
    """The JSON body of ``GET /api/usage`` (see the module docstring)."""
    days: dict[tuple[str, str], dict[str, Any]] = {}
    totals = {"requests": 0, "answers": 0, "prompt_tokens": 0, "completion_tokens": 0,
              "total_tokens": 0, "cost_nano": 0}  # fmt: skip
    for r in rows:
        entry = days.setdefault(
            (r.day, r.model),
            {"day": r.day, "model": r.model, "requests": 0, "answers": 0, "prompt_tokens": 0,
             "completion_tokens": 0, "total_tokens": 0, "cost_nano": 0, "estimated": 0},
        )  # fmt: skip
        for field in ("requests", "answers", "prompt_tokens", "completion_tokens", "total_tokens"):
            entry[field] += getattr(r, field)
            totals[field] += getattr(r, field)
        entry["estimated"] += r.estimated
        entry["cost_nano"] += r.cost_nano or 0
        totals["cost_nano"] += r.cost_nano or 0
    out_days = []
    for entry in days.values():
        entry["cost_cny"] = cny_from_nano(entry.pop("cost_nano"))
        out_days.append(entry)
    totals_out: dict[str, Any] = dict(totals)
    totals_out["cost_cny"] = cny_from_nano(totals_out.pop("cost_nano"))
    budgets = []
    key_budgets = principal.budgets
    if key_budgets is not None:
        for period in key_budgets.periods():
            tokens, nano = spent.get(period, (0, 0))
            label, reset_at = period_of(period, now)
            budgets.append(
                {
                    "period": period,
                    "label": label,
                    "tokens_limit": key_budgets.limit("tokens", period),
                    "tokens_spent": tokens,
                    "cny_limit": _cny(key_budgets.limit("nano", period)),
                    "cny_spent": cny_from_nano(nano),
                    "resets_at": int(reset_at),
                }
            )
    return {
        "object": "usage",
        "key_id": owner,
        "from": first,
        "to": last,
        "days": out_days,
        "totals": totals_out,
        "budgets": budgets,
    }


class UsageRoutes:
    """``GET /api/usage`` (see the module docstring)."""

    def __init__(
        self, *, access: Access, usage: UsageWriter, clock: Callable[[], float] = time.time
    ) -> None:
        self.access = access
        self.records = usage
        """The store's usage, read after the pending records are written (``_usage_writer``)."""
        self._clock = clock

    def routes(self) -> Routes:
        """This module's routes: path template → method → handler."""
        return {"/api/usage": {"GET": self.usage}}

    async def usage(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /api/usage``: the caller's own usage (never another key's)."""
        principal = await self.access.principal(ctx)
        now = self._clock()
        today = beijing_day(now)
        query = ctx.request.query_value
        first = parse_day(query("from"), "from", period_start("month", now))
        last = parse_day(query("to"), "to", today)
        owner = principal.owner
        rows = [] if first > last else await self.records.usage_rows(first, last, owner)
        spent: dict[Period, tuple[int, int]] = {}
        if principal.budgets is not None:
            for period in principal.budgets.periods():
                spent[period] = await self.records.spent_since(owner, period_start(period, now))
        await send_json(send, 200, usage_body(owner, first, last, rows, spent, principal, now))
