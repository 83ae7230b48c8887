"""Access tokens (v1 OAuth, minted IAM bearer tokens): refreshed ahead of expiry, fetched once
however many callers need one, optionally cached on disk for the owner only.

Theory of operation
-------------------
**When to refresh** is a pure function, :func:`refresh_due`: a token is due ``margin`` seconds
before it expires, ``margin`` defaulting to ``min(1 hour, 10 % of its lifetime)`` (a 30-day
OAuth token is refreshed an hour early, a 12-hour bearer token an hour early, a 60-second test
token 6 s early). qianfan ignores ``expires_in`` and refreshes only after a 110/111; we do not.

**Single flight.** ``TokenManager`` (threads, ``_tokens_sync``) and ``AsyncTokenManager``
(tasks, ``_tokens_async``; the sync twin is generated from it) hold the current token and at
most one *flight* (``_synchronization``), the fetch in progress. A caller that finds no
usable token either starts the flight (and runs the fetch itself) or waits for the one in the
air, so N concurrent callers cause one fetch. The flight's outcome goes to every waiter: the
token, or the fetch's exception (the next ``get()`` starts a new flight). If the fetching
caller is cancelled (``CancelledError``, ``KeyboardInterrupt``) the flight is *abandoned*: the
waiters wake and one of them starts the fetch again; nobody hangs.

While a refresh-ahead is in flight, other callers keep using the current token as long as it
has not expired, so refreshing costs no latency but the fetching caller's. If that refresh
fails while the old token is still valid, the fetching caller gets the old token too (the
failure is logged, kept in ``last_error``, and the refresh is tried again after
:data:`REFRESH_RETRY_INTERVAL` seconds rather than on every request).

**Invalidation.** When the server answers 110/111 (or v2 401 ``invalid_iam_token``) for a
token, the client calls ``invalidate(stale)`` and replays once with ``get()``. The stale token
is dropped only if it is still the current one, so 50 requests failing with the same stale
token cause one refresh, not 50.

**Disk cache.** :class:`TokenCache` keeps tokens across processes in one JSON file, readable by
its owner only (directory 0700, file 0600, written to a temporary file and renamed into place).
Entries are keyed by :func:`cache_key`, a SHA-256 of the API key and base URL; the secret key
is never stored. A corrupt file, a file someone else could read, or a symlink is ignored. The
cache is read once per manager, before its first fetch.

This module holds the pure parts: the token, the refresh rule, the state and rules both
managers share (:class:`TokenManagerBase`: no waiting, no locking) and the disk cache. Nothing
here formats a token value into a message or a ``repr``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from ._clock import Clock
from ._exceptions import detached

__all__ = [
    "REFRESH_RETRY_INTERVAL",
    "AccessToken",
    "TokenCache",
    "TokenManagerBase",
    "cache_key",
    "refresh_due",
]

logger = logging.getLogger("wenxin_stream.tokens")

REFRESH_RETRY_INTERVAL = 30.0
"""Seconds between attempts to refresh a token ahead of expiry after a refresh failed."""

_MAX_MARGIN = 3600.0


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer credential and its lifetime (POSIX seconds). Its ``repr`` masks the value."""

    value: str = field(repr=False)
    expires_at: float
    obtained_at: float

    def __repr__(self) -> str:
        return (
            f"AccessToken(value='***', expires_at={self.expires_at!r}, "
            f"obtained_at={self.obtained_at!r})"
        )

    @property
    def lifetime(self) -> float:
        """Seconds from ``obtained_at`` to ``expires_at`` (never negative)."""
        return max(0.0, self.expires_at - self.obtained_at)

    def expired(self, now: float) -> bool:
        """Whether the token is past its expiry at ``now``."""
        return now >= self.expires_at


def refresh_due(token: AccessToken | None, now: float, *, margin: float | None = None) -> bool:
    """Whether ``token`` should be replaced at ``now``: when there is none, or when
    ``now >= expires_at - margin``; ``margin`` defaults to ``min(1 hour, 10 % of lifetime)``."""
    if token is None:
        return True
    if margin is None:
        margin = min(_MAX_MARGIN, 0.1 * token.lifetime)
    return now >= token.expires_at - margin


def cache_key(api_key: str, base_url: str) -> str:
    """The cache key of a credential: SHA-256 over the API key (or IAM access key) and the
    base URL, without its trailing slash. Never takes the secret key."""
    material = f"wenxin-stream/token\0{api_key}\0{base_url.rstrip('/')}"
    return hashlib.sha256(material.encode()).hexdigest()


class TokenManagerBase:
    """State and rules shared by the sync and async managers (no waiting, no locking): the
    callers hold the manager's lock around every call."""

    def __init__(
        self, clock: Clock, cache: TokenCache | None, key: str | None, margin: float | None
    ) -> None:
        if (cache is None) != (key is None):
            raise ValueError("pass cache and cache_key together")
        self._clock = clock
        self._cache = cache
        self._key = key
        self._margin = margin
        self._token: AccessToken | None = None
        self._cache_read = cache is None
        self._retry_at = -math.inf  # no refresh-ahead before this, after a failure
        self.last_error: BaseException | None = None
        """The exception of the last failed fetch (``None`` after a success)."""

    @property
    def current(self) -> AccessToken | None:
        """The token held now (maybe due or expired), without fetching."""
        return self._token

    def _usable(self, now: float, *, in_flight: bool) -> AccessToken | None:
        """The token a caller may use right now without fetching, or ``None``."""
        if not self._cache_read and self._cache is not None and self._key is not None:
            self._cache_read = True
            self._token = self._cache.load(self._key, now=now)
        token = self._token
        if token is None or token.expired(now):
            return None
        if not refresh_due(token, now, margin=self._margin):
            return token
        return token if in_flight or now < self._retry_at else None

    def _fetched(self, token: AccessToken) -> None:
        self._token = token
        self.last_error = None
        self._retry_at = -math.inf
        if self._cache is not None and self._key is not None:
            try:
                self._cache.store(self._key, token)
            except OSError as exc:
                logger.warning("could not write the token cache: %s", type(exc).__name__)

    def _failed(self, exc: BaseException, now: float) -> AccessToken | None:
        """Record a failed fetch; return the old token if it may still be used."""
        self.last_error = detached(exc)  # kept without its traceback (→ the fetch's frames → self)
        token = self._token
        if token is not None and not token.expired(now):
            self._retry_at = now + REFRESH_RETRY_INTERVAL
            logger.warning("token refresh failed (%s); using the current token", type(exc).__name__)
            return token
        return None

    def _invalidate(self, stale: AccessToken) -> bool:
        if self._token is None or self._token.value != stale.value:
            return False
        self._token = None
        if self._cache is not None and self._key is not None:
            with contextlib.suppress(OSError):
                self._cache.discard(self._key, stale)
        return True


class TokenCache:
    """An on-disk token cache readable only by its owner (see the module docstring).

    ``directory`` defaults to ``$XDG_CACHE_HOME/wenxin-stream`` (``~/.cache/wenxin-stream``).
    Concurrent writers may lose each other's entries (it is a cache), never corrupt the file.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is None:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
            directory = os.path.join(base, "wenxin-stream")
        self.directory = Path(directory)
        self.path = self.directory / "tokens.json"
        """The cache file."""

    def __repr__(self) -> str:
        return f"TokenCache({str(self.directory)!r})"

    def _read(self) -> dict[str, object]:
        """The file's JSON object, or ``{}`` if it is missing, corrupt or not private."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError:
            return {}
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not _private(info):
                logger.warning("ignoring the token cache %s: not private to its owner", self.path)
                return {}
            try:
                data = json.loads(file.read())
            except (ValueError, RecursionError):
                return {}
        return data if isinstance(data, dict) else {}

    def load(self, key: str, *, now: float | None = None) -> AccessToken | None:
        """The cached token for ``key``, or ``None`` if absent, expired (at ``now``, default
        the current POSIX time) or unreadable."""
        token = _token(self._read().get(key))
        moment = time.time() if now is None else now
        return None if token is None or token.expired(moment) else token

    def store(self, key: str, token: AccessToken) -> None:
        """Save ``token`` under ``key`` (expired entries are dropped on the way)."""
        now = time.time()
        entries = {
            k: v
            for k, v in self._read().items()
            if (t := _token(v)) is not None and not t.expired(now)
        }
        entries[key] = {
            "value": token.value,
            "expires_at": token.expires_at,
            "obtained_at": token.obtained_at,
        }
        self._write(entries)

    def discard(self, key: str, token: AccessToken | None = None) -> None:
        """Remove the entry for ``key`` (only if it holds ``token``'s value, when given)."""
        entries = self._read()
        current = _token(entries.get(key))
        if current is None or (token is not None and current.value != token.value):
            return
        del entries[key]
        self._write(entries)

    def _write(self, entries: dict[str, object]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.directory / f".tokens.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(tmp, flags, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(entries, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _private(info: os.stat_result) -> bool:
    """A regular file owned by us that nobody else may read or write."""
    owner_ok = not hasattr(os, "geteuid") or info.st_uid == os.geteuid()
    return stat.S_ISREG(info.st_mode) and owner_ok and info.st_mode & 0o077 == 0


def _token(entry: object) -> AccessToken | None:
    """An :class:`AccessToken` from a cache entry, or ``None`` if it is malformed."""
    if not isinstance(entry, dict):
        return None
    value, expires_at, obtained_at = (entry.get(k) for k in ("value", "expires_at", "obtained_at"))
    if not isinstance(value, str) or not value:
        return None
    if not (_is_number(expires_at) and _is_number(obtained_at)):
        return None
    return AccessToken(value, float(expires_at), float(obtained_at))


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
