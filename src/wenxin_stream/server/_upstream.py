"""The upstream: the ONE ERNIE client of the server, and what it means for models.

Theory of operation
===================

Every answer of the server is a stream of one :class:`~wenxin_stream.AsyncClient` built at
start-up (:func:`build_client`: one connection pool for every stream, the configured timeouts
and retries; without ``QIANFAN_*`` credentials, the SDK's embedded emulator). :class:`Upstream`
wraps it with what the routes need to know:

- whether it is ERNIE or an emulator (:attr:`Upstream.kind`, for ``/readyz``, ``/api/info``
  and the start-up line);
- the models: the default one, and :meth:`Upstream.resolve_model`, which maps a requested name
  to the name shown to the client and the name sent upstream by the SDK's rule for each API
  generation (``docs/MODELS.md``): on v2 a catalogue id or alias goes as spelled, a legacy
  (v1) name the catalogue knows as its v2 id, and an id the catalogue does not know as given
  — the upstream decides (ERNIE, or the emulator's roster: 401 ``invalid_model``, which the
  error table answers 404 ``model_not_found``; a retired model 403 ``model_offline``); on v1
  an unknown name is a local 404 ``model_not_found``, as the SDK refuses it (the name
  selects the URL);
- whether ERNIE's rate limits let a request go now (:meth:`Upstream.check_rate`).

**Rate limits: answer, never hold.** The client shares one client-side limiter between every
user of the server: it adopts ERNIE's ``X-Ratelimit-*`` limits and, after a rate-limit error,
pauses every request for ERNIE's ``Retry-After`` or blocks the budget the code names (RPM: until
our oldest request of the minute ages out; see ``_ratelimit``). A gateway must not hold its
users silently through such a pause, so the client waits at most
:data:`RATE_LIMIT_WAIT` seconds for a slot (smoothing, no more); beyond that the request is
refused at once — by :meth:`Upstream.check_rate` before anything starts, or by the SDK's
``ClientRateLimitTimeout`` — and answered 429 with ``Retry-After`` (``_errors``). For the same
reason the client never retries a rate-limited request itself (:class:`GatewayRetry`): the 429
goes to the user with ERNIE's ``Retry-After``, instead of being hammered on their behalf.

**A fleet's token.** With ``redis_url``, :meth:`Upstream.share_token` makes the client's token
manager fetch through ``_shared_token.SharedToken``: one OAuth refresh for every instance.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

from .._async_client import AsyncChatStream, AsyncClient
from .._client_base import EMULATOR_NOTICE
from .._exceptions import ClientRateLimitTimeout, RateLimitError
from .._models import find_model, lookup_model
from .._retry import RetryPolicy
from .._timeouts import Timeout
from .._transport import Limits
from ._catalogue import baidu_today, model_names
from ._config import ServerConfig
from ._errors import upstream_failure
from ._http import HTTPError
from ._redis import SharedRedis
from ._shared_token import SharedToken

__all__ = ["RATE_LIMIT_WAIT", "GatewayRetry", "Upstream", "build_client"]

RATE_LIMIT_WAIT = 1.0
"""The longest a request waits for the upstream client's rate limits (seconds); a longer
wait is answered 429 at once."""


class GatewayRetry(RetryPolicy):
    """The retry policy of the server's upstream client: the SDK's, except that a rate limit
    is never retried (the user gets the 429 and ERNIE's ``Retry-After``)."""

    def delay(self, attempt: int, error: BaseException, rand: float) -> float | None:
        """As :meth:`RetryPolicy.delay`, but ``None`` for a rate-limit error."""
        if isinstance(error, RateLimitError):
            return None
        return super().delay(attempt, error, rand)


class _DropNotice(logging.Filter):
    """Drops the SDK's "no credentials: emulator" warning (the start-up line says it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != EMULATOR_NOTICE


def build_client(config: ServerConfig) -> AsyncClient:
    """The upstream client the configuration describes."""
    sdk_logger = logging.getLogger("wenxin_stream")
    notice = _DropNotice()
    sdk_logger.addFilter(notice)  # the start-up line says it: no second warning
    try:
        return AsyncClient(
            bearer_token=config.upstream_bearer_token,
            v2_base_url=config.upstream_v2_base_url,
            base_url=config.upstream_base_url,
            api=config.upstream_api,
            model=config.default_model,
            retry=GatewayRetry(max_attempts=config.upstream_retries + 1),
            rate_limit_wait=RATE_LIMIT_WAIT,
            timeout=Timeout(
                connect=config.upstream_connect_timeout,
                first_token=config.upstream_first_token_timeout,
                idle=config.upstream_idle_timeout,
            ),
            limits=Limits(
                max_connections=config.upstream_max_connections,
                max_keepalive_connections=config.upstream_max_connections,
            ),
        )
    finally:
        sdk_logger.removeFilter(notice)


class Upstream:
    """The upstream client and its models (see the module docstring).

    ``emulated`` overrides what the client says about itself (``None``: ask the client);
    ``default_model`` is the configured default (``None``: the client's).
    """

    def __init__(
        self, client: AsyncClient, *, emulated: bool | None, default_model: str | None
    ) -> None:
        self.client = client
        self._emulated = emulated
        self._default_model = default_model

    @property
    def kind(self) -> Literal["emulator", "ernie"]:
        """``emulator`` or ``ernie``."""
        emulated = self.client.emulated if self._emulated is None else self._emulated
        return "emulator" if emulated else "ernie"

    @property
    def api(self) -> str:
        """The client's API generation: ``v1`` or ``v2``."""
        return self.client.api

    @property
    def default_model(self) -> str:
        """The model of requests that name none."""
        return self._default_model or self.client.model

    def describe(self) -> str:
        """The start-up line's description of the upstream."""
        client = self.client
        if self.kind == "emulator" and client.emulated:
            return "embedded ERNIE emulator (offline; set QIANFAN_* for real ERNIE)"
        if self.kind == "emulator":
            return f"ERNIE emulator at {client.base_url} (API {client.api})"
        return f"ERNIE API {client.api} at {client.base_url}"

    def resolve_model(self, name: str | None) -> tuple[str, str]:
        """(the name to show, the name to send upstream) of a requested model.

        Raises:
            HTTPError: 404 ``model_not_found``.
        """
        default = self.default_model
        if name is None:
            name = default
        if self.client.api != "v1":
            if lookup_model(name) is not None:
                return name, name  # aliases go as spelled, as the SDK sends them
            legacy = find_model(name)
            return name, (name if legacy is None else legacy.v2_name)
        info = find_model(name)
        if info is None:
            if name == default:
                return name, name
            raise HTTPError(
                404, "model_not_found", f"the model {name!r} does not exist", param="model"
            )
        return name, info.name

    def rate_limit_delay(self) -> float:
        """How long a new request would now wait for ERNIE's rate limits (seconds)."""
        return self.client.rate_limit_delay()

    def check_rate(self) -> None:
        """Refuse a request the upstream client would hold longer than
        :data:`RATE_LIMIT_WAIT` (ERNIE is rate limited: the client pauses).

        Raises:
            HTTPError: 429 ``upstream_rate_limited`` with ``Retry-After``.
        """
        wait = self.client.rate_limit_delay()
        if wait > RATE_LIMIT_WAIT:
            raise upstream_failure(ClientRateLimitTimeout(wait, RATE_LIMIT_WAIT), pause=wait)

    def model_names(self) -> list[str]:
        """The models this server serves (``_catalogue``: v1 names, or the live v2 ids)."""
        return model_names(self.client.api, baidu_today())

    def stream(self, messages: list[dict[str, Any]], model: str, **params: Any) -> AsyncChatStream:
        """A stream of the answer to ``messages`` (the request leaves when it is entered).

        Raises:
            InvalidRequestError: the request breaks ERNIE's rules (checked before any I/O).
        """
        return self.client.chat.stream(messages=messages, model=model, **params)

    def share_token(self, redis: SharedRedis) -> SharedToken | None:
        """Share the client's access token through ``redis`` (``None``: the client's
        credentials need no token, e.g. a v2 API key)."""
        # the SDK keeps its token manager private; the hook on it is public (``share``)
        manager = getattr(self.client, "_tokens", None)
        if manager is None:
            return None
        credential = (
            self.client._cache_key() or hashlib.sha256(self.client.base_url.encode()).hexdigest()
        )
        manager.share = share = SharedToken(redis, credential)
        return share

    async def aclose(self) -> None:
        """Close the client and its connection pool."""
        await self.client.aclose()
