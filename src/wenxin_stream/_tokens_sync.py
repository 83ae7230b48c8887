# Generated from src/wenxin_stream/_tokens_async.py by scripts/unasync.py — do not edit.
"""The single-flight access-token manager (see ``_tokens`` for the rules it applies).

The sync and async managers are twins: the sync one is generated from the async one by
``scripts/unasync.py``, and they differ only in how they wait. A manager holds the current
token and at most one flight (``_synchronization``): a caller that finds no usable token either
starts the flight and runs the fetch itself, or waits for the flight in the air. The fetching
caller's outcome — the token, the old token after a failed refresh-ahead, or the exception —
goes to every waiter; a fetch abandoned by cancellation (``CancelledError``,
``KeyboardInterrupt``) wakes the waiters with nothing, and one of them fetches again. The lock
is held only around state changes, never while fetching or waiting.

**Sharing.** A manager given a ``share`` (an :class:`TokenShare`) fetches through it: the
share may answer with a token another process already fetched (a fleet of servers keeping one
credential's token in Redis: one refresh for all of them), or call ``fetch`` itself. It is told
the token being replaced (``stale``: due for refresh, or refused with 110/111), so it never
hands that one back. The single flight stays: one process asks its share once at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from ._clock import Clock
from ._synchronization import Flight
from ._tokens import AccessToken, TokenCache, TokenManagerBase

__all__ = ["TokenManager", "TokenShare"]


class TokenShare(Protocol):
    """Where several managers (processes, machines) share one credential's token."""

    def obtain(self, fetch: Callable[[], AccessToken], stale: AccessToken | None) -> AccessToken:
        """A usable token other than ``stale``: one already shared, or one ``fetch`` got (and
        is now shared). Raises what ``fetch`` raised."""
        ...


class TokenManager(TokenManagerBase):
    """Holder of one credential's access token, shared by every caller (see the module
    docstring).

    ``fetch`` obtains a new token (it raises on failure); ``clock`` gives POSIX time;
    ``cache`` and ``cache_key`` (together) enable the disk cache; ``margin`` overrides the
    refresh-ahead margin of :func:`~wenxin_stream._tokens.refresh_due`; ``share`` (also settable
    later, as :attr:`share`) fetches through an :class:`TokenShare`.
    """

    def __init__(
        self,
        fetch: Callable[[], AccessToken],
        *,
        clock: Clock = time.time,
        cache: TokenCache | None = None,
        cache_key: str | None = None,
        margin: float | None = None,
        share: TokenShare | None = None,
    ) -> None:
        super().__init__(clock, cache, cache_key, margin)
        self._fetch = fetch
        self.share = share
        self._stale: AccessToken | None = None  # the last token refused (110/111)
        self._lock = threading.Lock()
        self._flight: Flight[AccessToken] | None = None

    def get(self) -> AccessToken:
        """A token that is not due for refresh, fetching one if needed; concurrent callers
        share one fetch. Raises what ``fetch`` raised (to every caller waiting for it)."""
        while True:
            with self._lock:
                flight = self._flight
                usable = self._usable(self._clock(), in_flight=flight is not None)
                if usable is not None:
                    return usable
                owner = flight is None
                if flight is None:
                    self._flight = flight = Flight()
            if owner:
                return self._run(flight)
            token = flight.wait()
            if token is not None:
                return token

    def _run(self, flight: Flight[AccessToken]) -> AccessToken:
        try:
            share = self.share
            if share is None:
                token = self._fetch()
            else:
                token = share.obtain(self._fetch, self._token or self._stale)
        except Exception as exc:
            with self._lock:
                old = self._failed(exc, self._clock())
                self._end(flight, old, None if old is not None else exc)
            if old is None:
                raise
            return old
        except BaseException:
            with self._lock:
                self._end(flight, None, None)  # abandoned: a waiter fetches again
            raise
        with self._lock:
            self._fetched(token)
            self._end(flight, token, None)
        return token

    def _end(
        self,
        flight: Flight[AccessToken],
        token: AccessToken | None,
        error: BaseException | None,
    ) -> None:
        self._flight = None  # only the owner ends its flight, and nobody replaces it meanwhile
        flight.finish(token, error)

    def invalidate(self, stale: AccessToken) -> None:
        """The server rejected ``stale`` (110/111): forget it if it is still the current
        token, so that the next :meth:`get` fetches a new one. A stale token that was already
        replaced changes nothing, so many concurrent rejections cause one refresh."""
        with self._lock:
            if self._invalidate(stale):
                self._stale = stale
