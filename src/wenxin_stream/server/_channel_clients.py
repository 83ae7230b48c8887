"""How a channel becomes a client: one builder per channel kind, and the retry policy and
rate-limit wait every upstream client of the server shares.

Theory of operation
===================

:func:`build_client` makes the one client of the implicit channel ``default`` from the
``upstream_*`` settings (and ``QIANFAN_*``; without credentials, the SDK's embedded
emulator). :func:`build_channel_client` makes a configured channel's client with the builder
of its kind (:data:`CLIENT_BUILDERS`: ``qianfan-v1``, ``qianfan-v2``, and ``openai`` — the
SDK's ``AsyncClient(api="openai")`` for FastDeploy, vLLM, SGLang or Ollama at a ``/v1`` base
URL, with its optional key): never the environment (a channel's credentials are its own),
never the embedded emulator, its own pool, its own client-side RPM/TPM limiter.

Every client waits at most :data:`RATE_LIMIT_WAIT` for its rate limits and never retries a
rate limit itself (:class:`GatewayRetry`): the user gets the 429, or another channel the
request. :func:`upstream_model_name` is the SDK's rule for the name a public model goes
upstream as.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .._async_client import AsyncClient
from .._client_base import EMULATOR_NOTICE
from .._exceptions import RateLimitError
from .._models import find_model, lookup_model
from .._retry import RetryPolicy
from .._timeouts import Timeout
from .._transport import Limits
from ._channel_config import ChannelConfigError, ChannelSpec
from ._config import ServerConfig

__all__ = [
    "CLIENT_BUILDERS",
    "RATE_LIMIT_WAIT",
    "GatewayRetry",
    "build_channel_client",
    "build_client",
    "upstream_model_name",
]

RATE_LIMIT_WAIT = 1.0
"""The longest a request waits for a channel client's rate limits (seconds); a longer wait
skips the channel (or, with no other, is answered 429 at once)."""


class GatewayRetry(RetryPolicy):
    """The retry policy of the server's upstream clients: the SDK's, except that a rate limit
    is never retried (the user gets the 429 and ERNIE's ``Retry-After``, or another channel
    takes the request)."""

    def delay(self, attempt: int, error: BaseException, rand: float) -> float | None:
        """As :meth:`RetryPolicy.delay`, but ``None`` for a rate-limit error."""
        if isinstance(error, RateLimitError):
            return None
        return super().delay(attempt, error, rand)


class _DropNotice(logging.Filter):
    """Drops the SDK's "no credentials: emulator" warning (the start-up line says it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != EMULATOR_NOTICE


def _timeout(config: ServerConfig) -> Timeout:
    return Timeout(
        connect=config.upstream_connect_timeout,
        first_token=config.upstream_first_token_timeout,
        idle=config.upstream_idle_timeout,
    )


def _limits(size: int) -> Limits:
    return Limits(max_connections=size, max_keepalive_connections=size)


def build_client(config: ServerConfig) -> AsyncClient:
    """The one upstream client the ``upstream_*`` settings describe (the implicit channel)."""
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
            timeout=_timeout(config),
            limits=_limits(config.upstream_max_connections),
        )
    finally:
        sdk_logger.removeFilter(notice)


def _common(spec: ChannelSpec, config: ServerConfig) -> dict[str, Any]:
    """The client arguments every kind shares: no environment (a channel's credentials are
    its own, never ``QIANFAN_*``), never the embedded emulator, its own pool and limits."""
    return {
        "environ": {},
        "emulator": False,
        "retry": GatewayRetry(max_attempts=spec.retries + 1),
        "rate_limit_wait": RATE_LIMIT_WAIT,
        "rpm": spec.rpm or None,
        "tpm": spec.tpm or None,
        "timeout": _timeout(config),
        "limits": _limits(spec.max_connections or config.upstream_max_connections),
    }


def _qianfan_v1(spec: ChannelSpec, config: ServerConfig) -> AsyncClient:
    return AsyncClient(
        api="v1",
        api_key=spec.api_key,
        secret_key=spec.secret_key,
        access_token=spec.access_token,
        base_url=spec.base_url,
        **_common(spec, config),
    )


def _qianfan_v2(spec: ChannelSpec, config: ServerConfig) -> AsyncClient:
    return AsyncClient(
        api="v2",
        bearer_token=spec.api_key,
        access_key=spec.access_key,
        secret_access_key=spec.secret_access_key,
        app_id=spec.app_id,
        v2_base_url=spec.base_url,
        **_common(spec, config),
    )


def _openai(spec: ChannelSpec, config: ServerConfig) -> AsyncClient:
    return AsyncClient(
        api="openai",
        base_url=spec.base_url,
        api_key=spec.api_key,
        **_common(spec, config),
    )


CLIENT_BUILDERS: Mapping[str, Callable[[ChannelSpec, ServerConfig], AsyncClient]] = {
    "qianfan-v1": _qianfan_v1,
    "qianfan-v2": _qianfan_v2,
    "openai": _openai,
}
"""How each channel kind becomes a client: one function per kind."""


def build_channel_client(spec: ChannelSpec, config: ServerConfig) -> AsyncClient:
    """The client of a configured channel.

    Raises:
        ChannelConfigError: the kind has no client in this build (``openai``).
    """
    builder = CLIENT_BUILDERS.get(spec.kind)
    if builder is None:  # a kind the configuration accepts must have a builder
        raise ChannelConfigError(f"channel {spec.name!r}: no client for kind {spec.kind!r}")
    return builder(spec, config)


def upstream_model_name(api: str, name: str) -> str:
    """The name a public model ``name`` goes upstream as, by the SDK's rule for the API
    generation (``docs/MODELS.md``): on v2 a catalogue id or alias as spelled, a legacy v1
    name as its v2 id; on v1 the catalogue's v1 name; an unknown name as given."""
    if api != "v1":
        if lookup_model(name) is not None:
            return name
        legacy = find_model(name)
        return name if legacy is None else legacy.v2_name
    info = find_model(name)
    return name if info is None else info.name
