"""Access: who is asking (an API key, or dev mode), and whether the server may start open.

Theory of operation
===================

:class:`Access` turns what a request presents into a :class:`Principal` — the *owner* of
everything the request touches (conversations, streams) plus the key's limits:

- an ``Authorization: Bearer wx-…`` header (or the WebSocket ``auth`` frame's key) that the
  :class:`~._keys.KeyCache` knows: the owner is the key's id;
- otherwise, while no active key exists (the cache re-checks every few seconds), **dev mode**:
  the owner is ``local``, whatever the request carried (so the OpenAI SDK's mandatory
  ``api_key`` can be anything) — but only when the server listens on a loopback address or
  was started with ``--allow-dev-mode-remote``. A server bound to a public address whose last
  key was revoked refuses everyone rather than falling open;
- otherwise 401 ``invalid_api_key``.

:meth:`Access.principal` is what HTTP routes call first: it also puts the key id into the
request's audit record. :func:`dev_mode_problem` is the start-up check: bound to a
non-loopback address with no key and no override, the server refuses to start.

**Long-lived connections.** An HTTP request is authenticated once, and that is enough: it
ends. A WebSocket lives on, so :meth:`Access.recheck` asks again before each new ask: the
key through the same cache (a hit costs a hash and a dict lookup), so a key revoked by
``wenxin keys revoke`` stops working on an open socket within the cache's ``ttl``, exactly as
it does on HTTP; a dev-mode socket stops once a key exists.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ._budgets import Budgets
from ._http import Context, HTTPError
from ._keys import KeyCache
from ._limits import KeyLimits

__all__ = [
    "LOCAL_OWNER",
    "Access",
    "Principal",
    "dev_mode_problem",
    "is_loopback",
    "unauthorized",
]

LOCAL_OWNER = "local"
"""The owner of everything in dev mode."""


def unauthorized(message: str = "a valid API key is required") -> HTTPError:
    """401 ``invalid_api_key``."""
    return HTTPError(401, "invalid_api_key", message)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: the ``owner`` of their data (a key id, or ``local``), the key's own
    ``limits`` (``None`` in dev mode: the server defaults), whether this is dev mode, and the
    key's ``budgets`` (none in dev mode)."""

    owner: str
    limits: KeyLimits | None = None
    dev: bool = False
    budgets: Budgets | None = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dev_mode_problem(host: str, *, keys_exist: bool, allow_remote: bool) -> str | None:
    """Why the server must not start (dev mode on a public address), or ``None``."""
    if keys_exist or allow_remote or is_loopback(host):
        return None
    return (
        f"refusing to start: no API keys exist and {host!r} is not a loopback address, so "
        "anyone could use this server (dev mode). Create a key with `wenxin keys create "
        "--name NAME`, or pass --allow-dev-mode-remote if you really mean it"
    )


class Access:
    """Resolves requests to principals (see the module docstring)."""

    def __init__(self, keys: KeyCache, *, dev_mode_allowed: bool) -> None:
        self.keys = keys
        self.dev_mode_allowed = dev_mode_allowed

    async def principal(self, ctx: Context) -> Principal:
        """Who sent the HTTP request ``ctx``; the key id goes into its audit record.

        Raises:
            HTTPError: 401 when no valid key is presented and dev mode does not apply.
        """
        principal = await self.from_header(ctx.request.headers.get("authorization"))
        if ctx.audit is not None:
            ctx.audit["key_id"] = principal.owner
        return principal

    async def from_header(self, authorization: str | None) -> Principal:
        """The principal of an HTTP request's ``Authorization`` header.

        Raises:
            HTTPError: 401 when no valid key is presented and dev mode does not apply.
        """
        if authorization:
            record = await self.keys.authenticate(authorization)
            if record is not None:
                return Principal(record.id, record.limits, budgets=record.budgets)
        return await self._dev_or_refuse()

    async def from_key(self, api_key: str | None) -> Principal:
        """The principal of a bare key (the WebSocket ``auth`` frame)."""
        if api_key:
            record = await self.keys.lookup(api_key)
            if record is not None:
                return Principal(record.id, record.limits, budgets=record.budgets)
        return await self._dev_or_refuse()

    async def recheck(self, principal: Principal, api_key: str | None) -> None:
        """Check again that ``principal``, who authenticated earlier with ``api_key`` (the
        bare key; ``None`` in dev mode), may still ask.

        Raises:
            HTTPError: 401 once the key was revoked (or, in dev mode, once keys exist).
        """
        if principal.dev:
            if not await self.dev_mode():
                raise unauthorized("API keys exist now: authenticate with a key")
            return
        record = await self.keys.lookup(api_key) if api_key else None
        if record is None or record.id != principal.owner:
            raise unauthorized("the API key of this connection is no longer valid (revoked)")

    async def dev_mode(self) -> bool:
        """Whether requests need no key right now."""
        return self.dev_mode_allowed and not await self.keys.keys_exist()

    async def _dev_or_refuse(self) -> Principal:
        if await self.keys.keys_exist():
            raise unauthorized()
        if not self.dev_mode_allowed:
            raise unauthorized("no API keys exist; create one with `wenxin keys create`")
        return Principal(LOCAL_OWNER, None, dev=True)
