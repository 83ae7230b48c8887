"""API keys of ``wenxin serve``: their format, their hash, and the cache that checks them.

Theory of operation
===================

A key is ``wx-`` followed by 40 url-safe characters from :mod:`secrets` (240 bits).
``wenxin keys create`` prints it once; the database keeps only its SHA-256
(:func:`hash_key`), its display :func:`key_prefix` (the 8 characters after ``wx-``), a
name and optional per-key limits (:class:`KeyRecord`). A plain hash is enough: a slow KDF
(bcrypt, scrypt, Argon2) exists to make *guessing* low-entropy passwords expensive, and
nobody can enumerate 2**240 random keys, so a fast hash loses nothing and keeps each check
at about a microsecond.

:class:`KeyCache` sits in front of the store's ``find_key`` so that authenticating a request
does not touch the disk on the hot path. It maps the SHA-256 of a presented key to what the
store said about it (a record, or ``None``) for ``ttl`` seconds, negative answers included,
so a client hammering with a wrong key costs one lookup per ``ttl``. A key revoked by
``wenxin keys revoke`` (another process, same database) therefore stops working within
``ttl`` seconds; keys rotate without downtime by creating the new key, switching clients,
then revoking the old one (both are valid in between). Concurrent misses for the same key
share one store lookup. The cache is bounded (``max_entries``; the oldest entry is dropped
first), so a flood of random keys cannot grow it.

**Comparisons.** The cache and the database index are keyed by the SHA-256 of the presented key,
never by the key itself, so whatever timing a dict or B-tree lookup leaks is about a hash an
attacker cannot steer; where two digests are compared directly, :func:`hmac.compare_digest`
is used.

**Persistence.** The ``api_keys`` table (:data:`KEYS_TABLE`) and its statements live here,
as plain functions of a :class:`~._sql.Db` (the connection wrapper, which converts the ``?``
markers for its database); the store runs them in its transactions, both from the server's
worker thread and from ``wenxin keys`` (:class:`~._store.SyncKeyAdmin`).

**A fleet.** Several instances each have a cache; a revocation must not wait for every one
of them to expire its entry. :meth:`KeyCache.forget_key` drops a key's entries at once (the
``_revocations`` notice calls it on every instance), and ``on_revoked`` is told when this cache
itself finds that a key it held as valid is now unknown or revoked, so it can tell the others.

Not thread-safe: one cache per event loop (the server has one).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from .._clock import Clock
from .._exceptions import WenxinError
from ._budgets import Budgets
from ._limits import KeyLimits
from ._sql import Db

__all__ = [
    "KEYS_TABLE",
    "KEY_PREFIX",
    "AmbiguousKeyError",
    "DuplicateKeyNameError",
    "KeyCache",
    "KeyLookup",
    "KeyRecord",
    "generate_key",
    "hash_key",
    "key_prefix",
    "looks_like_key",
    "parse_bearer",
    "same_digest",
]

KEY_PREFIX = "wx-"
"""What every API key starts with (also what the audit log's redaction looks for)."""

KEY_BODY_LENGTH = 40
"""Url-safe characters after :data:`KEY_PREFIX` (30 random bytes in base64url)."""

DISPLAY_PREFIX_LENGTH = 8
"""Characters after ``wx-`` kept in the database to tell keys apart in listings."""

DEFAULT_TTL = 5.0
"""Seconds a cached answer (valid, or unknown/revoked) is trusted (``--key-cache-ttl``)."""

_KEY_RE = re.compile(rf"{re.escape(KEY_PREFIX)}[A-Za-z0-9_-]{{{KEY_BODY_LENGTH}}}")


def generate_key() -> str:
    """A new random API key: ``wx-`` + 40 url-safe characters (240 bits from :mod:`secrets`)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BODY_LENGTH * 3 // 4)


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest stored for ``secret``.

    A fast hash is enough: keys are 240-bit random strings, so no slow password KDF is
    needed (it only protects low-entropy secrets against guessing).
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def key_prefix(secret: str) -> str:
    """The display prefix of a key: the 8 characters after ``wx-``."""
    body = secret.removeprefix(KEY_PREFIX)
    return body[:DISPLAY_PREFIX_LENGTH]


def looks_like_key(text: str) -> bool:
    """Whether ``text`` has the exact shape of an API key (``wx-`` + 40 url-safe chars)."""
    return _KEY_RE.fullmatch(text) is not None


def parse_bearer(authorization_header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer wx-…`` header, or ``None`` when the header is
    missing, uses another scheme, or carries something that is not shaped like a key."""
    if not authorization_header:
        return None
    scheme, _, credential = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    credential = credential.strip()
    return credential if looks_like_key(credential) else None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as stored: never the secret itself.

    ``id`` (``k_…``) names the key in listings, logs and the audit trail; ``prefix`` is the
    8 characters after ``wx-`` (for display); times are ISO 8601 UTC; ``revoked_at`` is
    ``None`` while the key is valid. ``rpm`` / ``tpm`` / ``max_streams`` override the
    server's default limits; ``None`` means "the server default". The ``budget_*`` fields are
    the key's budgets (``_budgets``: tokens and nano-CNY per Beijing day and month; ``None``:
    no budget).
    """

    id: str
    name: str
    prefix: str
    created_at: str
    revoked_at: str | None
    rpm: int | None
    tpm: int | None
    max_streams: int | None
    budget_tokens_day: int | None = None
    budget_tokens_month: int | None = None
    budget_nano_day: int | None = None
    budget_nano_month: int | None = None

    @property
    def active(self) -> bool:
        """Whether the key has not been revoked."""
        return self.revoked_at is None

    @property
    def limits(self) -> KeyLimits:
        """The key's own limits (``None`` fields fall back to the server defaults)."""
        return KeyLimits(rpm=self.rpm, tpm=self.tpm, max_streams=self.max_streams)

    @property
    def budgets(self) -> Budgets:
        """The key's budgets."""
        return Budgets(
            tokens_day=self.budget_tokens_day,
            tokens_month=self.budget_tokens_month,
            nano_day=self.budget_nano_day,
            nano_month=self.budget_nano_month,
        )

    @property
    def display_prefix(self) -> str:
        """How a key is shown: ``wx-`` + prefix + an ellipsis."""
        return f"{KEY_PREFIX}{self.prefix}…"


class KeyLookup(Protocol):
    """What :class:`KeyCache` needs from the store (the server's ``Store`` provides it)."""

    async def find_key(self, secret: str) -> KeyRecord | None:
        """The active key whose hash matches ``secret``, else ``None``."""
        ...

    async def count_active_keys(self) -> int:
        """How many keys are not revoked."""
        ...


@dataclass(slots=True)
class _Entry:
    record: KeyRecord | None
    expires: float


class KeyCache:
    """A TTL cache of key lookups in front of a :class:`KeyLookup` (see the module docstring).

    ``ttl`` bounds how long a revoked key keeps working and how long a wrong key is refused
    without asking the store; ``max_entries`` bounds memory; ``clock`` is monotonic.
    """

    def __init__(
        self,
        store: KeyLookup,
        *,
        ttl: float = DEFAULT_TTL,
        max_entries: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if not ttl >= 0:
            raise ValueError(f"ttl must be >= 0, got {ttl!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self._store = store
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._pending: dict[str, asyncio.Task[KeyRecord | None]] = {}
        self._keys_exist: _Entry | None = None
        self._keys_exist_value = False
        self.lookups = 0
        """How many times the store was asked (for tests and diagnostics)."""
        self.on_revoked: Callable[[str], None] | None = None
        """Told the id of a key this cache held as valid and the store no longer knows as
        active (a fleet's instance announces it to the others)."""

    @property
    def ttl(self) -> float:
        """Seconds a cached answer is trusted."""
        return self._ttl

    def __len__(self) -> int:
        """How many answers are cached (expired ones included until they are replaced)."""
        return len(self._entries)

    async def authenticate(self, authorization_header: str | None) -> KeyRecord | None:
        """The active key named by an ``Authorization: Bearer wx-…`` header, else ``None``
        (no header, another scheme, a malformed, unknown or revoked key).

        A cache hit costs a SHA-256 and a dict lookup; a miss asks the store once (shared by
        every concurrent request presenting the same key).
        """
        secret = parse_bearer(authorization_header)
        return None if secret is None else await self.lookup(secret)

    async def lookup(self, secret: str) -> KeyRecord | None:
        """The active key ``secret`` (a bare ``wx-…`` key, e.g. from the WebSocket ``auth``
        frame), else ``None``."""
        if not looks_like_key(secret):
            return None
        digest = hash_key(secret)
        entry = self._entries.get(digest)
        if entry is not None and entry.expires > self._clock():
            return entry.record
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._fetch(secret, digest))
            self._pending[digest] = task
            task.add_done_callback(functools.partial(self._forget_pending, digest))
        # shield: a caller that is cancelled does not cancel the lookup others wait for
        return await asyncio.shield(task)

    def _forget_pending(self, digest: str, task: asyncio.Task[KeyRecord | None]) -> None:
        self._pending.pop(digest, None)
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning if every caller left

    async def _fetch(self, secret: str, digest: str) -> KeyRecord | None:
        self.lookups += 1
        record = await self._store.find_key(secret)
        old = self._entries.pop(digest, None)  # re-insert: dict order stays oldest-first
        if record is None and old is not None and old.record is not None and self.on_revoked:
            self.on_revoked(old.record.id)
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[digest] = _Entry(record, self._clock() + self._ttl)
        return record

    async def keys_exist(self) -> bool:
        """Whether any active key exists (cached for ``ttl``): the server is in dev mode
        while this is false. Keys created or revoked by another process show up within
        ``ttl``."""
        now = self._clock()
        if self._keys_exist is None or self._keys_exist.expires <= now:
            self._keys_exist_value = await self._store.count_active_keys() > 0
            self._keys_exist = _Entry(None, self._clock() + self._ttl)
        return self._keys_exist_value

    def forget_key(self, key_id: str) -> int:
        """Drop the cached answers about the key ``key_id`` (revoked elsewhere): the next
        request presenting it asks the store. Linear in the cache (a rare event); the number
        dropped."""
        stale = [d for d, e in self._entries.items() if e.record and e.record.id == key_id]
        for digest in stale:
            del self._entries[digest]
        self._keys_exist = None
        return len(stale)

    def invalidate(self) -> None:
        """Forget every cached answer (e.g. after this process revoked a key itself)."""
        self._entries.clear()
        self._keys_exist = None


def same_digest(a: str, b: str) -> bool:
    """Constant-time equality of two hex digests."""
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


# -- persistence: the api_keys table ---------------------------------------------------------

KEYS_TABLE = """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, prefix TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, revoked_at TEXT,
            rpm INTEGER, tpm INTEGER, max_streams INTEGER)"""
"""The table of keys (portable SQL; part of the store's first migration)."""

_COLUMNS = (
    "id, name, prefix, created_at, revoked_at, rpm, tpm, max_streams, "
    "budget_tokens_day, budget_tokens_month, budget_nano_day, budget_nano_month"
)
# Statements are built once, from constant column lists: no input ever reaches their text.
_INSERT = f"INSERT INTO api_keys ({_COLUMNS}, secret_hash) VALUES ({', '.join('?' * 13)})"  # noqa: S608
UPDATABLE = frozenset(
    {"rpm", "tpm", "max_streams", "budget_tokens_day", "budget_tokens_month", "budget_nano_day",
     "budget_nano_month"}
)  # fmt: skip
"""The fields ``wenxin keys update`` may change."""
_UPDATE = (
    "UPDATE api_keys SET rpm = ?, tpm = ?, max_streams = ?, budget_tokens_day = ?, "
    "budget_tokens_month = ?, budget_nano_day = ?, budget_nano_month = ? WHERE id = ?"
)
_SELECT = f"SELECT {_COLUMNS} FROM api_keys"  # noqa: S608
_SELECT_ACTIVE_BY_HASH = (
    f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL"  # noqa: S608
)


class AmbiguousKeyError(WenxinError, ValueError):
    """A name or a key prefix matches several keys; ``candidates`` are they (use an id)."""

    def __init__(self, message: str, candidates: tuple[KeyRecord, ...] = ()) -> None:
        super().__init__(message)
        self.candidates = candidates


class DuplicateKeyNameError(WenxinError, ValueError):
    """An active key already has that name (names are unique among active keys)."""


MAX_LIMIT = 2**31 - 1
"""The largest per-key limit: the columns are SQL ``INTEGER``, 32 bits in PostgreSQL (SQLite
would take more, and the two backends must accept the same keys)."""


def check_key_args(name: str, rpm: int | None, tpm: int | None, max_streams: int | None) -> str:
    """The cleaned-up key name; raises :class:`ValueError` for a blank or unprintable name or
    a limit that is not a positive integer up to :data:`MAX_LIMIT`."""
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise ValueError("a key name must be 1-200 printable characters")
    KeyLimits(rpm=rpm, tpm=tpm, max_streams=max_streams)  # validates
    for field, value in (("rpm", rpm), ("tpm", tpm), ("max_streams", max_streams)):
        if value is not None and value > MAX_LIMIT:
            raise ValueError(f"{field} must be at most {MAX_LIMIT:,}, got {value:,}")
    return name


def insert_key(
    db: Db,
    name: str,
    *,
    rpm: int | None,
    tpm: int | None,
    max_streams: int | None,
    key_id: str,
    now: str,
    budgets: Budgets | None = None,
) -> tuple[KeyRecord, str]:
    """Create a key; its record and the secret (which is stored only as a hash).

    Raises:
        DuplicateKeyNameError: an active key has this name already (checked in the same
            transaction as the insert, so two creations cannot both pass it).
    """
    taken = db.one("SELECT id FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,))
    if taken is not None:
        raise DuplicateKeyNameError(
            f"an active key is already named {name!r} ({taken[0]}): names are unique among "
            "active keys; choose another name, or revoke that key first"
        )
    secret = generate_key()
    b = budgets or Budgets()
    record = KeyRecord(
        key_id, name, key_prefix(secret), now, None, rpm, tpm, max_streams,
        b.tokens_day, b.tokens_month, b.nano_day, b.nano_month,
    )  # fmt: skip
    db.run(
        _INSERT,
        (
            key_id, name, record.prefix, now, None, rpm, tpm, max_streams,
            b.tokens_day, b.tokens_month, b.nano_day, b.nano_month, hash_key(secret),
        ),
    )  # fmt: skip
    return record, secret


def update_key_row(db: Db, ident: str, changes: dict[str, int | None]) -> KeyRecord | None:
    """Change the limits or budgets of the key named by ``ident`` (see
    :func:`resolve_key_row`): ``changes`` maps a :class:`KeyRecord` field (``rpm``, ``tpm``,
    ``max_streams``, ``budget_…``) to its new value (``None``: unset); the new record, or
    ``None`` if nothing matches. A revoked key is returned unchanged."""
    record = resolve_key_row(db, ident)
    if record is None or not record.active:
        return record
    updated = replace(record, **changes)  # type: ignore[arg-type]
    db.run(
        _UPDATE,
        (
            updated.rpm, updated.tpm, updated.max_streams, updated.budget_tokens_day,
            updated.budget_tokens_month, updated.budget_nano_day, updated.budget_nano_month,
            record.id,
        ),
    )  # fmt: skip
    return updated


def select_keys(db: Db) -> list[KeyRecord]:
    """Every key, oldest first."""
    rows = db.all(_SELECT + " ORDER BY created_at, id")
    return [KeyRecord(*row) for row in rows]


def _describe(key: KeyRecord) -> str:
    state = "active" if key.active else "revoked"
    return f"{key.id} ({key.name}, {key.display_prefix}, {state})"


def resolve_key_row(db: Db, ident: str) -> KeyRecord | None:
    """The key named by ``ident``: its id or the full key; else its name or its display prefix
    (``wx-`` and ``…`` optional, at least 4 characters), active keys preferred; ``None`` if
    nothing matches. Raises :class:`AmbiguousKeyError`, listing the candidates, when a name
    or prefix matches several keys."""
    ident = ident.strip()
    if looks_like_key(ident):
        rows = db.all(_SELECT + " WHERE secret_hash = ?", (hash_key(ident),))
    else:
        rows = db.all(_SELECT + " WHERE id = ?", (ident,))
    found = [KeyRecord(*row) for row in rows]
    if not found:
        found = [KeyRecord(*row) for row in db.all(_SELECT + " WHERE name = ?", (ident,))]
        prefix = ident.removeprefix(KEY_PREFIX).rstrip("…")
        if len(prefix) >= 4:
            found += [k for k in select_keys(db) if k.prefix.startswith(prefix) and k not in found]
        found = [k for k in found if k.active] or found
    if len(found) > 1:
        names = "; ".join(_describe(k) for k in found)
        raise AmbiguousKeyError(
            f"{ident!r} matches several keys: {names}; use the key id", tuple(found)
        )
    return found[0] if found else None


def revoke_key_row(db: Db, ident: str, *, now: str) -> KeyRecord | None:
    """Revoke the key named by ``ident`` (see :func:`resolve_key_row`); its record (an
    already revoked key unchanged), or ``None`` if nothing matches."""
    record = resolve_key_row(db, ident)
    if record is None or not record.active:
        return record
    db.run("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, record.id))
    return replace(record, revoked_at=now)


def select_key_by_secret(db: Db, secret: str) -> KeyRecord | None:
    """The active key ``secret``, found by its hash, else ``None``."""
    digest = hash_key(secret)
    row = db.one(_SELECT_ACTIVE_BY_HASH, (digest,))
    if row is None or not same_digest(row[-1], digest):
        return None
    return KeyRecord(*row[:-1])


def count_active_keys(db: Db) -> int:
    """How many keys are not revoked."""
    row = db.one("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")
    return int(row[0]) if row else 0
