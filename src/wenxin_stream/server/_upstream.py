"""The upstream: the server's ERNIE client (or the gateway's channels), and what it means for
models.

Theory of operation
===================

Without configured channels, every answer of the server is a stream of one
:class:`~wenxin_stream.AsyncClient` built at start-up (``_channel_clients.build_client``: one
connection pool for every stream, the configured timeouts and retries; without ``QIANFAN_*``
credentials, the SDK's embedded emulator) — the implicit channel ``default``, streamed
directly, exactly as before channels existed. With ``[[channels]]`` (``_channels``), every
answer is a :class:`~._failover.FailoverStream` over the channels that serve its model, and
a model is known when some channel serves it. :class:`Upstream` wraps either with what the
routes need to know:

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
from typing import Any, Literal

from .._async_client import AsyncChatStream, AsyncClient
from .._exceptions import ClientRateLimitTimeout, InvalidRequestError, WenxinError
from .._models import find_model
from ._catalogue import baidu_today, model_names
from ._channel_clients import RATE_LIMIT_WAIT, GatewayRetry, build_client
from ._channels import Channels
from ._errors import upstream_failure
from ._failover import FailoverStream
from ._http import HTTPError
from ._redis import SharedRedis
from ._shared_token import SharedToken

__all__ = ["RATE_LIMIT_WAIT", "GatewayRetry", "Upstream", "build_client"]


class Upstream:
    """The upstream client or channels and their models (see the module docstring).

    ``emulated`` overrides what the client says about itself (``None``: ask the client);
    ``default_model`` is the configured default (``None``: the client's); ``attempts`` and
    ``deadline`` bound an answer's failovers across channels.
    """

    def __init__(
        self,
        channels: Channels,
        *,
        emulated: bool | None,
        default_model: str | None,
        attempts: int = 3,
        deadline: float = 60.0,
    ) -> None:
        self.channels = channels
        self.client: AsyncClient = channels.channels[0].client
        """The implicit channel's client (with channels: the first channel's)."""
        self._emulated = emulated
        self._default_model = default_model
        self._attempts = attempts
        self._deadline = deadline

    @property
    def gateway(self) -> bool:
        """Whether channels are configured (answers go through failover)."""
        return self.channels.gateway is not None

    @property
    def kind(self) -> Literal["emulator", "ernie"]:
        """``emulator`` or ``ernie``."""
        if self._emulated is not None:
            return "emulator" if self._emulated else "ernie"
        if self.gateway:
            emulated = all(bool(c.spec.emulated) for c in self.channels.channels)
        else:
            emulated = self.client.emulated
        return "emulator" if emulated else "ernie"

    @property
    def api(self) -> str:
        """The API generation whose rules the history follows: ``v1`` or ``v2`` (with
        channels: ``v1`` when any channel speaks v1, whose rules are the stricter)."""
        if any(c.client.api == "v1" for c in self.channels.channels):
            return "v1"
        return self.client.api

    @property
    def default_model(self) -> str:
        """The model of requests that name none."""
        return self._default_model or self.client.model

    def describe(self) -> str:
        """The start-up line's description of the upstream."""
        client = self.client
        if self.gateway:
            names = ", ".join(
                f"{c.name} ({c.spec.kind} at {c.client.base_url})" for c in self.channels.channels
            )
            return f"gateway of {len(self.channels.channels)} channels: {names}"
        if self.kind == "emulator" and client.emulated:
            return "embedded ERNIE emulator (offline; set QIANFAN_* for real ERNIE)"
        if self.kind == "emulator":
            return f"ERNIE emulator at {client.base_url} (API {client.api})"
        return f"ERNIE API {client.api} at {client.base_url}"

    def resolve_model(self, name: str | None) -> tuple[str, str]:
        """(the name to show, the name to pass to :meth:`stream`) of a requested model.

        Raises:
            HTTPError: 404 ``model_not_found``.
        """
        default = self.default_model
        if name is None:
            name = default
        if self.gateway:  # each channel maps the public name itself
            if not self.channels.serves(name):
                raise HTTPError(
                    404, "model_not_found", f"no channel serves the model {name!r}",
                    param="model",
                )  # fmt: skip
            return name, name
        if self.client.api != "v1":
            return name, self.channels.channels[0].model_for(name)
        info = find_model(name)
        if info is None:
            if name == default:
                return name, name
            raise HTTPError(
                404, "model_not_found", f"the model {name!r} does not exist", param="model"
            )
        return name, info.name

    def rate_limit_delay(self) -> float:
        """How long a new request would now wait for ERNIE's rate limits (seconds; with
        channels: for the least limited one)."""
        return self.channels.rate_limit_delay()

    def check_rate(self) -> None:
        """Refuse a request the upstream client would hold longer than
        :data:`RATE_LIMIT_WAIT` (ERNIE is rate limited: the client pauses; with channels:
        every channel is).

        Raises:
            HTTPError: 429 ``upstream_rate_limited`` with ``Retry-After``.
        """
        wait = self.rate_limit_delay()
        if wait > RATE_LIMIT_WAIT:
            raise upstream_failure(ClientRateLimitTimeout(wait, RATE_LIMIT_WAIT), pause=wait)

    def model_names(self) -> list[str]:
        """The models this server serves (``_catalogue``: v1 names, or the live v2 ids;
        with channels: the names routed, and the catalogue's when a channel takes any)."""
        if not self.gateway:
            return model_names(self.client.api, baidu_today())
        gateway = self.channels.gateway
        assert gateway is not None
        names = set(gateway.public_models())
        for channel in self.channels.channels:
            if "*" in channel.spec.models:
                names.update(model_names(channel.client.api, baidu_today()))
        return sorted(names)

    def stream(
        self, messages: list[dict[str, Any]], model: str, **params: Any
    ) -> AsyncChatStream | FailoverStream:
        """A stream of the answer to ``messages`` (the request leaves when it is entered).

        Raises:
            InvalidRequestError: the request breaks ERNIE's rules (checked before any I/O).
            HTTPError: with channels, none can take a request now (429 or 503).
        """
        if not self.gateway:
            return self.client.chat.stream(messages=messages, model=model, **params)
        try:
            return FailoverStream.open(
                self.channels,
                messages,
                model,
                params,
                attempts=self._attempts,
                deadline=self._deadline,
            )
        except InvalidRequestError:
            raise
        except WenxinError as exc:
            raise upstream_failure(exc, pause=self.rate_limit_delay()) from None

    def share_token(self, redis: SharedRedis) -> list[SharedToken]:
        """Share each channel client's access token through ``redis`` (none for credentials
        that need no token, e.g. a v2 API key)."""
        shares = []
        for channel in self.channels.channels:
            client = channel.client
            # the SDK keeps its token manager private; the hook on it is public (``share``)
            manager = getattr(client, "_tokens", None)
            if manager is None:
                continue
            credential = client._cache_key() or hashlib.sha256(client.base_url.encode()).hexdigest()
            manager.share = share = SharedToken(redis, credential)
            shares.append(share)
        return shares

    async def aclose(self) -> None:
        """Close the clients and their connection pools."""
        await self.channels.aclose()
