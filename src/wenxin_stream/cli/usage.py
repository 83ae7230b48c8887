"""``wenxin usage``: tokens and spend of ``wenxin serve``'s keys, per key, model and day.

Theory of operation
===================

Reads the server's database as ``wenxin keys`` does (``--data-dir`` / ``--database-url``, or
their ``WENXIN_*`` variables; SQLite or PostgreSQL, safe while the server runs) — the table
of usage records, one per upstream request (``server._usage``). It never creates a database.

- ``--from`` / ``--to``: Beijing days ``YYYY-MM-DD`` (both included; Baidu's billing day);
  default the current Beijing month up to today.
- ``--key``: one key (id, name, display prefix or the key itself); default every key.
- ``--by``: the grouping, a comma-separated subset of ``day``, ``key``, ``model``,
  ``channel`` (default ``day,key,model``); ``--by key`` is the per-key total.
- ``--json``: a JSON object (``from``, ``to``, ``by``, ``rows``, ``totals``) instead of the
  table. Costs are CNY as exact decimal strings.

Requests counts upstream requests (a retry or a continuation is one more), answers the
distinct answers, ``est`` the requests whose usage the upstream did not report (estimated).
Failures are one line (``wenxin: error: …``): 1 for a missing database or key, 2 for bad
input.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from . import CommandError
from .keys import _admin, _exists, _target, database_options, shown

if TYPE_CHECKING:
    from ..server._usage_sql import UsageRow

GROUPS = ("day", "key", "model", "channel")
"""What ``--by`` may group by."""

_SUMS = ("answers", "requests", "estimated", "prompt_tokens", "completion_tokens",
         "reasoning_tokens", "total_tokens")  # fmt: skip


def _day(text: str) -> str:
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {text!r}") from None


def _groups(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [g for g in chosen if g not in GROUPS]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(
            f"--by takes a comma-separated subset of {', '.join(GROUPS)}, got {text!r}"
        )
    return tuple(g for g in GROUPS if g in chosen)


def register(subparsers: Any) -> None:
    """Add the ``usage`` subcommand to ``wenxin``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "usage",
        parents=[database_options()],
        help="tokens and spend of `wenxin serve` per key, model and day",
        description="Report the usage recorded by `wenxin serve` (Beijing days).",
    )
    parser.add_argument(
        "--from", dest="first", type=_day, metavar="DAY",
        help="first Beijing day, YYYY-MM-DD (default: the 1st of this month)",
    )  # fmt: skip
    parser.add_argument(
        "--to", dest="last", type=_day, metavar="DAY",
        help="last Beijing day, YYYY-MM-DD (default: today)",
    )  # fmt: skip
    parser.add_argument("--key", metavar="KEY", help="only this key (id, name or prefix)")
    parser.add_argument(
        "--by", type=_groups, default=("day", "key", "model"), metavar="LIST",
        help="group by a comma-separated subset of day,key,model,channel "
        "(default: day,key,model)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=run_usage)


def group_rows(rows: list[UsageRow], by: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows summed per ``by`` group (in the order first seen; rows come sorted)."""
    from ..server._usage import cny_from_nano

    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        ident = {"day": row.day, "key": row.key_id, "model": row.model, "channel": row.channel}
        label = tuple(ident[g] for g in by)
        entry = groups.get(label)
        if entry is None:
            entry = groups[label] = {g: ident[g] for g in by}
            if "key" in by:
                entry["key_name"] = row.key_name
            entry.update(dict.fromkeys(_SUMS, 0))
            entry["cost_nano"] = 0
        for field in _SUMS:
            entry[field] += getattr(row, field)
        entry["cost_nano"] += row.cost_nano or 0
    out = []
    for entry in groups.values():
        entry["cost_cny"] = cny_from_nano(entry.pop("cost_nano"))
        out.append(entry)
    return out


def run_usage(args: argparse.Namespace) -> int:
    """``wenxin usage``: the table, or ``--json``."""
    from ..server._store import AmbiguousKeyError, StoreError
    from ..server._usage import beijing_day, period_start

    now = time.time()
    first = args.first or period_start("month", now)
    last = args.last or beijing_day(now)
    if first > last:
        raise CommandError(f"--from {first} is after --to {last}", 2)
    target = _target(args)
    if not _exists(target):
        raise CommandError(f"no database at {shown(target)} (set --data-dir or --database-url)")
    key_id = None
    with _admin(args, create=False) as admin:
        try:
            if args.key is not None:
                record = admin.resolve_key(args.key)
                if record is None:
                    raise CommandError(f"no key matches {args.key!r} (see `wenxin keys list`)")
                key_id = record.id
            rows = admin.usage_rows(first, last, key_id)
        except AmbiguousKeyError as exc:
            raise CommandError(str(exc), 2) from None
        except StoreError as exc:
            raise CommandError(str(exc)) from None
    grouped = group_rows(rows, args.by)
    totals = group_rows(rows, ())
    total = totals[0] if totals else {**dict.fromkeys(_SUMS, 0), "cost_cny": "0.00"}
    if args.json:
        body = {"from": first, "to": last, "by": list(args.by), "rows": grouped, "totals": total}
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    _print_table(grouped, total, args.by, first, last)
    return 0


def _print_table(
    grouped: list[dict[str, Any]], total: dict[str, Any], by: tuple[str, ...], first: str,
    last: str,
) -> None:  # fmt: skip
    heads = [g.upper() for g in by] + ["ANSWERS", "REQUESTS", "EST", "PROMPT", "COMPLETION",
                                       "TOTAL", "CNY"]  # fmt: skip

    def cells(entry: dict[str, Any], labels: list[str]) -> list[str]:
        numbers = [f"{entry[f]:,}" for f in ("answers", "requests", "estimated", "prompt_tokens",
                                             "completion_tokens", "total_tokens")]  # fmt: skip
        return labels + numbers + [entry["cost_cny"]]

    table = [heads]
    for entry in grouped:
        labels = []
        for g in by:
            value = str(entry[g])
            if g == "key" and entry.get("key_name"):
                value += f" ({entry['key_name']})"
            labels.append(value)
        table.append(cells(entry, labels))
    table.append(cells(total, ["total"] + [""] * (len(by) - 1) if by else ["total"]))
    widths = [max(len(row[i]) for row in table) for i in range(len(heads))]
    numeric = len(by)
    print(f"usage from {first} to {last} (Beijing days)")
    for row in table:
        print("  ".join(
            cell.rjust(w) if i >= numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip())  # fmt: skip
