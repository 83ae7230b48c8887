"""``wenxin db``: the schema of the server's database — ``status`` and ``upgrade``.

Theory of operation
===================

The database is found as ``wenxin serve`` and ``wenxin keys`` find it (``--database-url`` or
``$WENXIN_DATABASE_URL``, else ``<data dir>/wenxin.db``), and reached through
:class:`~wenxin_stream.server._store.SyncDatabase`, which migrates nothing on its own.

- ``status`` prints the database's schema version, this code's, and what an upgrade would do.
  It exits 0 when the schema is current, 1 when steps are pending or the database is newer than
  this code (so a deploy script can test it), and creates no database that does not exist.
- ``upgrade`` applies the pending steps, each in its own transaction, printing each version as
  it commits. Instances starting at the same time are safe: migrations are serialised (an
  advisory lock on PostgreSQL, the write lock on SQLite), so an upgrade that another process
  already applied is simply found done. A database newer than this code is refused.

``wenxin serve`` does the same upgrade at start-up unless ``--migrate off``; then it refuses to
start until ``wenxin db upgrade`` has run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import CommandError
from .keys import database_options, database_target, shown


def register(subparsers: Any) -> None:
    """Add the ``db`` subcommand (``status``, ``upgrade``) to ``wenxin``."""
    common = database_options()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "db",
        help="show or upgrade the schema of the server's database",
        description="The schema of the database of `wenxin serve` (SQLite or PostgreSQL).",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION")
    status = actions.add_parser("status", parents=[common], help="show the schema version")
    status.set_defaults(handler=run_status)
    upgrade = actions.add_parser("upgrade", parents=[common], help="apply pending migrations")
    upgrade.set_defaults(handler=run_upgrade)
    parser.set_defaults(handler=lambda _args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_status(args: argparse.Namespace) -> int:
    """``wenxin db status``: 0 when current, 1 when an upgrade is pending or impossible."""
    from ..server._store import MIGRATIONS, StoreError, SyncDatabase

    target = database_target(args.data_dir, args.database_url)
    latest = len(MIGRATIONS)
    if not isinstance(target, str) and not target.is_file():
        print(f"{target}: no database yet (`wenxin db upgrade` creates it at version {latest})")
        return 1
    try:
        with SyncDatabase(target) as db:
            current = db.schema_version()
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    print(f"{shown(target)}: schema version {current}; this wenxin-stream: {latest}")
    if current == latest:
        print("up to date")
        return 0
    if current > latest:
        print("the database is newer than this wenxin-stream: upgrade wenxin-stream")
    else:
        print(f"{latest - current} step(s) pending: run `wenxin db upgrade`")
    return 1


def run_upgrade(args: argparse.Namespace) -> int:
    """``wenxin db upgrade``: apply every pending step."""
    from ..server._store import MIGRATIONS, StoreError, SyncDatabase

    target = database_target(args.data_dir, args.database_url)
    try:
        with SyncDatabase(target) as db:
            done = db.upgrade(on_step=lambda version: print(f"applied step {version}"))
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    where = shown(target)
    if done:
        print(f"{where}: upgraded to schema version {done[-1]}")
    else:
        print(f"{where}: already at schema version {len(MIGRATIONS)}")
    return 0
