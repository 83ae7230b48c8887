"""``wenxin keys``: create, list, update and revoke the API keys of ``wenxin serve``.

Theory of operation
===================

The keys live in the server's database, found as ``wenxin serve`` finds it: ``--database-url``
(or ``$WENXIN_DATABASE_URL``) if given, else ``<data dir>/wenxin.db`` (``--data-dir``, default
``$WENXIN_DATA_DIR`` or ``./data``). It is reached through
:class:`~wenxin_stream.server._store.SyncKeyAdmin`: its own connection, safe while a server
runs on the same database (SQLite: WAL mode and a busy timeout; PostgreSQL: ``postgresql://…``
URLs, shown with their password masked). A running server notices a new or
revoked key within its key cache TTL (``--key-cache-ttl``, 5 s by default).

- ``create`` prints the new key alone on stdout (so ``KEY=$(wenxin keys create …)`` works)
  and, on stderr, its id and the reminder that it cannot be shown again: only its SHA-256 is
  stored. Names are unique among active keys (the store refuses a second ``alice``). The
  **first** active key ends dev mode: a server on this database then refuses requests
  without a key (within its key cache TTL), and the conversations made in dev mode (owner
  ``local``) are no longer shown to anyone. ``create`` says so, with how many there are;
  ``--adopt-local`` hands them to the new key in the same transaction that creates it.
- ``list`` prints one line per key (``--json``: a JSON array) — id, name, display prefix,
  created, revoked, limits, budgets — and never a secret (there is none to print).
- Budgets (``create`` and ``update``): ``--budget-tokens-day N``, ``--budget-tokens-month N``,
  ``--budget-cny-day AMOUNT``, ``--budget-cny-month AMOUNT`` (CNY, e.g. ``2.50``) per Beijing
  day / month (``server._budgets``: a request that would exceed one is refused 429
  ``budget_exceeded`` before it reaches ERNIE). ``update KEY`` changes limits and budgets of
  an existing key (``none`` unsets one); a running server applies it within its key cache
  TTL.
- ``revoke`` takes a key id (``k_…``), its name, the display prefix (``wx-abcd1234``, 4+
  characters) or the full key; a name or prefix that matches several keys is an error listing
  them; revoking a revoked key is not an error. With ``redis_url`` configured (``--redis-url``,
  ``$WENXIN_REDIS_URL`` or ``--config``, as ``wenxin serve`` reads it) the revocation is
  announced to every instance at once (``server._revocations``); if Redis cannot be reached
  that is a warning — the instances' key caches expire within their TTL anyway.

``list`` and ``revoke`` never create a database that does not exist. Failures are one line
(``wenxin: error: …``): 1 for a missing key or database, 2 for invalid input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import CommandError

if TYPE_CHECKING:
    from ..server._keys import KeyRecord
    from ..server._store import SyncKeyAdmin

DB_NAME = "wenxin.db"
"""The database file inside the data directory."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


_UNSET = -1
"""``none`` given for a limit or budget of ``keys update``: unset it."""


def _limit_or_none(text: str) -> int:
    return _UNSET if text.strip().lower() == "none" else _positive_int(text)


def _cny_or_none(text: str) -> int:
    from ..server._usage import nano_from_cny

    if text.strip().lower() == "none":
        return _UNSET
    try:
        return nano_from_cny(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _budget_options(parser: argparse.ArgumentParser) -> None:
    for period in ("day", "month"):
        parser.add_argument(
            f"--budget-tokens-{period}",
            type=_limit_or_none,
            metavar="N",
            help=f"total tokens per Beijing {period} ('none' unsets)",
        )
        parser.add_argument(
            f"--budget-cny-{period}",
            type=_cny_or_none,
            metavar="CNY",
            help=f"spend in CNY per Beijing {period}, e.g. 2.50 ('none' unsets)",
        )


def _budget_changes(args: argparse.Namespace) -> dict[str, int | None]:
    """The budget fields the options set (``None``: unset), by ``KeyRecord`` field."""
    changes: dict[str, int | None] = {}
    for option, field in (
        ("budget_tokens_day", "budget_tokens_day"),
        ("budget_tokens_month", "budget_tokens_month"),
        ("budget_cny_day", "budget_nano_day"),
        ("budget_cny_month", "budget_nano_month"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            changes[field] = None if value == _UNSET else value
    return changes


def database_options() -> argparse.ArgumentParser:
    """The options that name the server's database (``--data-dir``, ``--database-url``), as
    a parent parser for the subcommands that open it (``keys``, ``db``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the server's data directory (default: $WENXIN_DATA_DIR or ./data)",
    )
    common.add_argument(
        "--database-url",
        metavar="URL",
        help="the server's database, postgresql://… or sqlite:///PATH (default: "
        "$WENXIN_DATABASE_URL, else DIR/wenxin.db)",
    )
    return common


def register(subparsers: Any) -> None:
    """Add the ``keys`` subcommand (``create``, ``list``, ``update``, ``revoke``) to
    ``wenxin``."""
    common = database_options()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keys",
        help="create, list and revoke API keys of `wenxin serve`",
        description="Manage the API keys of `wenxin serve` (works while the server runs).",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION")

    create = actions.add_parser("create", parents=[common], help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="what the key is for (shown in listings)")
    create.add_argument("--rpm", type=_positive_int, help="requests per minute (server default)")
    create.add_argument("--tpm", type=_positive_int, help="tokens per minute (server default)")
    create.add_argument(
        "--max-streams", type=_positive_int, help="concurrent streams (server default)"
    )
    _budget_options(create)
    create.add_argument(
        "--adopt-local",
        action="store_true",
        help="hand the conversations made in dev mode (no keys; owner 'local') to this key",
    )
    create.set_defaults(handler=run_create)

    listing = actions.add_parser("list", parents=[common], help="list keys (never secrets)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=run_list)

    update = actions.add_parser("update", parents=[common], help="change a key's limits or budgets")
    update.add_argument(
        "key", metavar="KEY", help="key id, name, display prefix (wx-abcd…) or the key itself"
    )
    for flag, what in (("--rpm", "requests per minute"), ("--tpm", "tokens per minute"),
                       ("--max-streams", "concurrent streams")):  # fmt: skip
        update.add_argument(
            flag, type=_limit_or_none, metavar="N", help=f"{what} ('none': the server default)"
        )
    _budget_options(update)
    update.set_defaults(handler=run_update)

    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument(
        "key", metavar="KEY", help="key id, name, display prefix (wx-abcd…) or the key itself"
    )
    revoke.add_argument(
        "--redis-url",
        metavar="URL",
        help="announce the revocation to every instance through this Redis "
        "(default: $WENXIN_REDIS_URL, or redis_url in --config)",
    )
    revoke.add_argument("--config", metavar="FILE", help="wenxin serve's TOML file (WENXIN_CONFIG)")
    revoke.set_defaults(handler=run_revoke)

    parser.set_defaults(handler=lambda _args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def database_path(data_dir: str | None, database_url: str | None = None) -> Path:
    """The database file, as ``wenxin serve`` chooses it: ``database_url`` (else
    ``$WENXIN_DATABASE_URL``) if set, else ``<data dir>/wenxin.db`` with ``data_dir``, else
    ``$WENXIN_DATA_DIR``, else ``./data``.

    Raises:
        CommandError: the database URL is not a SQLite one (status 2).
    """
    from ..server._store import StoreConfigurationError, sqlite_path

    url = database_url or os.environ.get("WENXIN_DATABASE_URL")
    if url:
        try:
            return Path(sqlite_path(url)).expanduser()
        except StoreConfigurationError as exc:
            raise CommandError(str(exc), 2) from None
    chosen = data_dir or os.environ.get("WENXIN_DATA_DIR") or "data"
    return Path(chosen).expanduser() / DB_NAME


def database_target(data_dir: str | None, database_url: str | None = None) -> str | Path:
    """The database as ``wenxin serve`` chooses it: a PostgreSQL URL (``--database-url`` or
    ``$WENXIN_DATABASE_URL``) as it is, else the SQLite file (:func:`database_path`)."""
    from ..server._postgres import is_postgres_url

    url = database_url or os.environ.get("WENXIN_DATABASE_URL")
    if url and is_postgres_url(url):
        return url.strip()
    return database_path(data_dir, database_url)


def shown(target: str | Path) -> str:
    """``target`` for messages (a URL's password masked)."""
    from ..server._config import mask_url_password

    return mask_url_password(str(target))


def _target(args: argparse.Namespace) -> str | Path:
    return database_target(args.data_dir, args.database_url)


def _exists(target: str | Path) -> bool:
    """Whether the database exists (a PostgreSQL server is assumed to: it says otherwise)."""
    return not isinstance(target, Path) or target.is_file()


def _admin(args: argparse.Namespace, *, create: bool) -> SyncKeyAdmin:
    from ..server._store import StoreError, SyncKeyAdmin

    target = _target(args)
    if not create and not _exists(target):
        raise CommandError(f"no key database at {target} (create a key first, or set --data-dir)")
    try:
        return SyncKeyAdmin(target)
    except StoreError as exc:
        raise CommandError(str(exc)) from None


@contextmanager
def _store_errors() -> Iterator[None]:
    """The store's errors as the command's: a value it refuses (a bad limit, a name matching
    several keys) is a usage error (status 2), a failing store status 1."""
    from ..server._store import StoreError

    try:
        yield
    except ValueError as exc:  # AmbiguousKeyError and StoreConfigurationError are ValueErrors
        raise CommandError(str(exc), 2) from None
    except StoreError as exc:
        raise CommandError(str(exc)) from None


def _no_key(args: argparse.Namespace) -> CommandError:
    return CommandError(f"no key matches {args.key!r} (see `wenxin keys list`)")


def run_create(args: argparse.Namespace) -> int:
    """``wenxin keys create``: the key on stdout, the rest on stderr."""
    from ..server._access import LOCAL_OWNER
    from ..server._budgets import Budgets

    try:
        budgets = Budgets(
            **{k.removeprefix("budget_"): v for k, v in _budget_changes(args).items()}
        )
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    with _admin(args, create=True) as admin, _store_errors():
        first = admin.count_active_keys() == 0
        local = admin.count_conversations(LOCAL_OWNER)
        record, secret = admin.create_key(
            args.name,
            rpm=args.rpm,
            tpm=args.tpm,
            max_streams=args.max_streams,
            adopt_from=LOCAL_OWNER if args.adopt_local else None,
            budgets=budgets,
        )
    print(secret, flush=True)
    notes = [
        f"created key {record.id} ({record.name}, {record.display_prefix}) in "
        f"{shown(_target(args))}.",
        "Store it now: it cannot be shown again.",
    ]
    if first:
        notes.append(
            "This is the first active key: dev mode ends. A server using this database now "
            "refuses requests without a key (within its key cache TTL, 5 s by default); "
            "the web page asks for a key."
        )
    if args.adopt_local and local:
        notes.append(f"Handed the {_conversations(local)} made in dev mode to {record.id}.")
    elif local:
        notes.append(
            f"The {_conversations(local)} made in dev mode (owner 'local') are no longer shown "
            "to anyone while keys are required; `wenxin keys create --adopt-local` hands them "
            "to a new key."
        )
    print("\n".join(notes), file=sys.stderr)
    return 0


def _conversations(count: int) -> str:
    return f"{count} conversation{'' if count == 1 else 's'}"


def _limit(value: int | None) -> str:
    return "default" if value is None else str(value)


def run_list(args: argparse.Namespace) -> int:
    """``wenxin keys list``: one line per key, or ``--json``."""
    from ..server._store import StoreError

    target = _target(args)
    keys: list[KeyRecord] = []
    if _exists(target):
        with _admin(args, create=False) as admin:
            try:
                keys = admin.list_keys()
            except StoreError as exc:
                raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps([asdict(k) for k in keys], ensure_ascii=False, indent=2))
        return 0
    if not keys:
        print(f"no keys in {shown(target)}", file=sys.stderr)
        return 0
    rows = [("ID", "NAME", "PREFIX", "CREATED", "REVOKED", "RPM", "TPM", "STREAMS", "BUDGETS")]
    rows += [
        (k.id, k.name, k.display_prefix, k.created_at[:19] + "Z",
         "-" if k.revoked_at is None else k.revoked_at[:19] + "Z",
         _limit(k.rpm), _limit(k.tpm), _limit(k.max_streams), k.budgets.describe() or "-")
        for k in keys
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_update(args: argparse.Namespace) -> int:
    """``wenxin keys update KEY``: change limits and budgets (``none`` unsets)."""
    changes = _budget_changes(args)
    for field in ("rpm", "tpm", "max_streams"):
        value = getattr(args, field)
        if value is not None:
            changes[field] = None if value == _UNSET else value
    if not changes:
        raise CommandError("nothing to change: give a limit or a budget option", 2)
    with _admin(args, create=False) as admin, _store_errors():
        record = admin.update_key(args.key, changes)
    if record is None:
        raise _no_key(args)
    if not record.active:
        raise CommandError(f"key {record.id} ({record.name}) is revoked: nothing changed")
    budgets = record.budgets.describe() or "no budgets"
    print(
        f"updated key {record.id} ({record.name}): rpm {_limit(record.rpm)}, tpm "
        f"{_limit(record.tpm)}, streams {_limit(record.max_streams)}; {budgets}. Running "
        "servers apply it within their key cache TTL (5 s by default)"
    )
    return 0


def _redis_url(args: argparse.Namespace) -> str | None:
    """``redis_url`` as ``wenxin serve`` reads it: the flag, ``$WENXIN_REDIS_URL``, then the
    TOML file (``--config`` or ``$WENXIN_CONFIG``)."""
    from ..server._config import ServerConfig, ServerConfigError

    try:
        config = ServerConfig.load({"redis_url": args.redis_url}, config_file=args.config)
    except ServerConfigError as exc:
        raise CommandError(str(exc), 2) from None
    return config.redis_url


def _announce(redis_url: str, key_id: str) -> None:
    from ..server._config import mask_url_password
    from ..server._revocations import announce_revocation

    try:
        listeners = announce_revocation(redis_url, key_id)
    except Exception as exc:  # redis-py's errors, or redis-py missing: the TTL still bounds it
        print(
            f"wenxin: warning: could not announce the revocation through "
            f"{mask_url_password(redis_url)} ({type(exc).__name__}); servers refuse the key "
            "within their key cache TTL (5 s by default) anyway",
            file=sys.stderr,
        )
        return
    print(f"announced to {listeners} server instance(s) through Redis", file=sys.stderr)


def run_revoke(args: argparse.Namespace) -> int:
    """``wenxin keys revoke KEY``: by id, name, display prefix or the key itself."""
    redis_url = _redis_url(args)  # a bad setting stops before anything changes
    with _admin(args, create=False) as admin, _store_errors():
        before = admin.resolve_key(args.key)
        record = None if before is None or not before.active else admin.revoke_key(before.id)
    if before is None:
        raise _no_key(args)
    if record is None:
        print(f"key {before.id} ({before.name}) was already revoked at {before.revoked_at}")
        return 0
    print(
        f"revoked key {record.id} ({record.name}); running servers refuse it within "
        "their key cache TTL (5 s by default)"
    )
    if redis_url:
        _announce(redis_url, record.id)
    return 0
