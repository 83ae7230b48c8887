"""The gateway's channels at run time: one client, breaker and record per channel, and the
router that picks a channel for each upstream request.

Theory of operation
===================

Every :class:`Channel` owns what its account or server needs alone: an
:class:`~wenxin_stream.AsyncClient` (its own connection pool, credentials and client-side
RPM/TPM limiter, which also adopts that account's ``X-Ratelimit-*`` headers and pauses after
its rate-limit errors), a :class:`~._breaker.Breaker`, and counters for the operator. Clients
are built by ``_channel_clients.build_channel_client`` from a
:class:`~._channel_config.ChannelSpec`, one small builder per kind; without configured
channels the server's one client becomes the implicit channel ``default`` (breaker off: the
server behaves as it always did).

**Routing.** :meth:`Channels.pick` chooses the channel of the next upstream request of an
answer: among the channels serving the public model (``GatewaySpec.channels_for``) that this
answer has not tried yet, it keeps those that can take a request now — breaker closed, or
half-open with no probe out; the client's limiter would not hold the request longer than
:data:`RATE_LIMIT_WAIT` (a channel *at its limit* is skipped, not waited for) —, takes the
group of the highest ``priority`` and draws one by ``weight`` (injected ``random``). When
nothing is left it says why: some candidate is only at its rate limits → the SDK's
:class:`~wenxin_stream.ClientRateLimitTimeout` (429 with the shortest wait); else, some
cooling down → :class:`~._errors.NoChannelError` (503 with the shortest cooldown left).

**Visibility.** Each channel counts its requests by outcome (``ok``, ``failed``, ``busy``,
``client_error``, ``cancelled``), its failovers, and its time to first token; its breaker
state, consecutive failures, cooldown left and streams in flight are read when ``/metrics``
is rendered (``wenxin_channel_*``), and :meth:`Channel.health` is what ``/readyz`` and
``GET /api/admin/channels`` show.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._async_client import AsyncChatStream, AsyncClient
from .._exceptions import ClientRateLimitTimeout, WenxinError
from ._breaker import Breaker, BreakerState
from ._channel_clients import (
    CLIENT_BUILDERS,
    RATE_LIMIT_WAIT,
    build_channel_client,
    build_client,
    upstream_model_name,
)
from ._channel_config import DEFAULT_CHANNEL, ChannelSpec, GatewaySpec
from ._config import ServerConfig, mask_url_password
from ._errors import NoChannelError
from ._metrics import TTFT_BUCKETS, Counter, Gauge, Histogram, Metrics, Series

__all__ = ["OUTCOMES", "Channel", "Channels"]

OUTCOMES = ("ok", "failed", "busy", "client_error", "cancelled")
"""How an upstream request of a channel ended (``wenxin_channel_requests_total``)."""


class Channel:
    """One upstream channel: its spec, client, breaker and record (module docstring)."""

    def __init__(self, spec: ChannelSpec, client: AsyncClient, breaker: Breaker) -> None:
        self.spec = spec
        self.name = spec.name
        self.client = client
        self.breaker = breaker
        self.in_flight = 0
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.failovers = {"before_first_token": 0, "mid_stream": 0}
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.last_error: str | None = None
        """The code (or class) of the last failure held against the channel."""

    def model_for(self, public: str) -> str:
        """The name the public model ``public`` goes upstream as on this channel."""
        mapped = self.spec.upstream_name(public)
        return mapped if mapped is not None else upstream_model_name(self.client.api, public)

    def open_stream(
        self, messages: list[dict[str, Any]], model: str, params: Mapping[str, Any]
    ) -> AsyncChatStream:
        """A stream of ``model`` (a public name) on this channel; nothing is sent yet.

        Raises:
            InvalidRequestError: the request breaks this channel's API rules.
        """
        return self.client.chat.stream(messages=messages, model=self.model_for(model), **params)

    def rate_limit_delay(self) -> float:
        """How long the client's limiter would now hold a request (seconds)."""
        return self.client.rate_limit_delay()

    def takes_requests(self) -> bool:
        """Whether a request could go now (breaker lets it, limiter would not hold it)."""
        return self.breaker.available() and self.rate_limit_delay() <= RATE_LIMIT_WAIT

    def ended(self, outcome: str, *, probe: bool, error: WenxinError | None = None) -> None:
        """An upstream request of this channel ended with ``outcome`` (one of
        :data:`OUTCOMES`); the breaker learns of it."""
        self.in_flight -= 1
        self.outcomes[outcome] += 1
        if outcome == "ok":
            self.breaker.succeeded(probe=probe)
        elif outcome == "failed":
            self.breaker.failed(probe=probe)
        else:
            self.breaker.released(probe=probe)
        if error is not None and outcome in ("failed", "busy"):
            code = getattr(error, "code", None)
            self.last_error = str(code) if code is not None else type(error).__name__

    def first_token(self, seconds: float) -> None:
        """An upstream request of this channel delivered its first event after ``seconds``."""
        self.ttft_sum += seconds
        self.ttft_count += 1

    def health(self) -> dict[str, Any]:
        """The channel as ``/readyz`` and the admin view show it (no secret)."""
        spec, breaker = self.spec, self.breaker
        return {
            "name": self.name,
            "kind": spec.kind,
            "base_url": mask_url_password(self.client.base_url),
            "models": list(spec.models),
            "weight": spec.weight,
            "priority": spec.priority,
            "state": breaker.state.value,
            "consecutive_failures": breaker.failures,
            "times_opened": breaker.opened,
            "cooldown_left": round(breaker.cooldown_left(), 3),
            "rate_limit_wait": round(self.rate_limit_delay(), 3),
            "in_flight": self.in_flight,
            "requests": dict(self.outcomes),
            "failovers": dict(self.failovers),
            "ttft_avg_ms": (
                round(self.ttft_sum / self.ttft_count * 1000, 1) if self.ttft_count else None
            ),
            "last_error": self.last_error,
        }


_STATE_VALUES = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class _ChannelGauge(Gauge):
    """A per-channel gauge read when the metrics are rendered."""

    def __init__(
        self, name: str, help: str, channels: list[Channel], read: Callable[[Channel], float]
    ) -> None:
        super().__init__(name, help, ("channel",), multiprocess_mode="all")
        self._channels = channels
        self._read = read

    def series(self) -> Iterator[Series]:
        """One sample per channel, read now."""
        for channel in self._channels:
            yield self.name, self.labelnames, (channel.name,), float(self._read(channel))


class _StaleResends(Counter):
    """``wenxin_upstream_stale_resends_total{channel}``: each channel client's
    :attr:`~wenxin_stream._client_base.ClientBase.stale_resends`, read when the metrics are
    rendered (or flushed, in multiprocess mode: summed over the workers, as every counter)."""

    def __init__(self, channels: list[Channel]) -> None:
        super().__init__(
            "wenxin_upstream_stale_resends_total",
            "Upstream requests sent once more on a new connection after a kept-alive one the "
            "upstream had closed failed them before any byte of the answer, by channel.",
            ("channel",),
        )
        self._channels = channels

    def series(self) -> Iterator[Series]:
        """One sample per channel, read now."""
        for channel in self._channels:
            yield self.name, self.labelnames, (channel.name,), float(channel.client.stale_resends)


class Channels:
    """The channels and the router (module docstring). ``gateway`` is the configured
    :class:`GatewaySpec` (``None``: only the implicit channel ``default``)."""

    def __init__(
        self,
        channels: list[Channel],
        gateway: GatewaySpec | None,
        metrics: Metrics,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.channels = channels
        self.gateway = gateway
        self.by_name = {c.name: c for c in channels}
        self._rng = rng
        self.requests = Counter(
            "wenxin_channel_requests_total",
            "Upstream requests, by channel and outcome (ok, failed, busy, client_error, "
            "cancelled).",
            ("channel", "outcome"),
        )
        self.failovers = Counter(
            "wenxin_channel_failovers_total",
            "Answers moved away from a channel: before their first token, or continued "
            "mid-stream on another channel.",
            ("channel", "when"),
        )
        self.ttft = Histogram(
            "wenxin_channel_ttft_seconds",
            "Time to the first event of an upstream request, by channel.",
            TTFT_BUCKETS,
            ("channel",),
        )
        gauges = (
            _ChannelGauge(
                "wenxin_channel_state",
                "Breaker state of each channel: 0 closed, 1 half-open, 2 open.",
                channels,
                lambda c: _STATE_VALUES[c.breaker.state],
            ),
            _ChannelGauge(
                "wenxin_channel_consecutive_failures",
                "Consecutive failures of each channel.",
                channels,
                lambda c: c.breaker.failures,
            ),
            _ChannelGauge(
                "wenxin_channel_cooldown_seconds",
                "Seconds until an open channel takes a probe request.",
                channels,
                lambda c: c.breaker.cooldown_left(),
            ),
            _ChannelGauge(
                "wenxin_channel_in_flight",
                "Upstream requests open now, by channel.",
                channels,
                lambda c: c.in_flight,
            ),
        )
        if gateway is not None:  # the implicit channel streams directly: nothing to count
            for family in (self.requests, self.failovers, self.ttft, *gauges):
                metrics.register(family)
        metrics.register(_StaleResends(channels))  # the implicit channel's client too
        for channel in channels:
            for outcome in OUTCOMES:
                self.requests.labels(channel.name, outcome)

    @classmethod
    def build(
        cls,
        config: ServerConfig,
        metrics: Metrics,
        *,
        client: AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> Channels:
        """The channels ``config`` describes (``client``: the implicit channel's client
        instead of the configured one; ignored when channels are configured).

        Raises:
            ChannelConfigError: a channel's kind has no client in this build.
        """
        gateway = config.gateway
        if gateway is None:
            made = client or build_client(config)
            spec = ChannelSpec(
                name=DEFAULT_CHANNEL,
                kind="qianfan-v1" if made.api == "v1" else "qianfan-v2",
                models=("*",),
            )
            channels = [Channel(spec, made, Breaker(0, 0.0, clock))]
            return cls(channels, None, metrics, rng=rng)
        for spec in gateway.channels:  # refuse before any client (and its pool) exists
            if spec.kind not in CLIENT_BUILDERS:
                build_channel_client(spec, config)
        built = [
            Channel(
                spec,
                build_channel_client(spec, config),
                Breaker(config.breaker_threshold, config.breaker_cooldown, clock),
            )
            for spec in gateway.channels
        ]
        return cls(built, gateway, metrics, rng=rng)

    # -- routing ---------------------------------------------------------------------------

    def candidates(self, model: str) -> list[Channel]:
        """The channels serving the public model ``model``, in configured order."""
        if self.gateway is None:
            return list(self.channels)
        return [self.by_name[spec.name] for spec in self.gateway.channels_for(model)]

    def serves(self, model: str) -> bool:
        """Whether some channel serves ``model``."""
        return bool(self.candidates(model))

    def pick(self, model: str, tried: set[str]) -> tuple[Channel, bool]:
        """The channel of the next upstream request for ``model``, and whether it goes as
        its breaker's probe; ``tried``: the channels this answer has already used.

        Raises:
            ClientRateLimitTimeout: a channel left is at its rate limits.
            NoChannelError: nothing is left (cooling down, or all tried).
        """
        left = [c for c in self.candidates(model) if c.name not in tried]
        ready = [c for c in left if c.takes_requests()]
        if not ready:
            raise self._unavailable(model, left)
        top = max(c.spec.priority for c in ready)
        group = [c for c in ready if c.spec.priority == top]
        channel = self._draw(group)
        probe = channel.breaker.admit()
        assert probe is not None  # takes_requests() said it may go, and nothing ran since
        channel.in_flight += 1
        return channel, probe

    def _draw(self, group: list[Channel]) -> Channel:
        total = sum(c.spec.weight for c in group)
        point = self._rng() * total
        for channel in group:
            point -= channel.spec.weight
            if point < 0:
                return channel
        return group[-1]

    def _unavailable(self, model: str, left: list[Channel]) -> WenxinError:
        cooling = [c for c in left if not c.breaker.available()]
        limited = [c for c in left if c.breaker.available()]
        if limited:  # busy, not broken: a 429 with the shortest wait
            wait = min(c.rate_limit_delay() for c in limited)
            return ClientRateLimitTimeout(wait, RATE_LIMIT_WAIT)
        if cooling:
            names = ", ".join(c.name for c in cooling)
            wait = min(c.breaker.cooldown_left() for c in cooling)
            return NoChannelError(f"channels cooling down after failures: {names}", wait)
        return NoChannelError(f"every channel serving {model!r} failed this request")

    # -- outcomes ----------------------------------------------------------------------------

    def ended(
        self, channel: Channel, outcome: str, *, probe: bool, error: WenxinError | None = None
    ) -> None:
        """An upstream request of ``channel`` ended (see :meth:`Channel.ended`)."""
        channel.ended(outcome, probe=probe, error=error)
        self.requests.labels(channel.name, outcome).value += 1

    def first_token(self, channel: Channel, seconds: float) -> None:
        """``channel`` delivered the first event of a request after ``seconds``."""
        channel.first_token(seconds)
        self.ttft.labels(channel.name).observe(seconds)

    def failed_over(self, channel: Channel, when: str) -> None:
        """An answer left ``channel`` (``before_first_token`` or ``mid_stream``)."""
        channel.failovers[when] += 1
        self.failovers.labels(channel.name, when).value += 1

    # -- health ------------------------------------------------------------------------------

    def rate_limit_delay(self) -> float:
        """How long a new request would wait for the least limited channel (seconds)."""
        return min(c.rate_limit_delay() for c in self.channels)

    def down(self) -> list[str]:
        """The channels cooling down now (breaker open)."""
        return [c.name for c in self.channels if c.breaker.state is BreakerState.OPEN]

    def routes_down(self) -> list[str]:
        """The routes (public model names; ``*`` for channels serving any model) no channel
        of which can take a request now."""
        if self.gateway is None:
            return []
        routes: dict[str, list[Channel]] = {}
        for model in self.gateway.public_models():
            routes[model] = self.candidates(model)
        wildcard = [c for c in self.channels if "*" in c.spec.models]
        if wildcard:
            routes["*"] = wildcard
        return sorted(
            model
            for model, channels in routes.items()
            if not any(c.breaker.state is not BreakerState.OPEN for c in channels)
        )

    def health(self) -> list[dict[str, Any]]:
        """Every channel's :meth:`Channel.health`."""
        return [c.health() for c in self.channels]

    async def aclose(self) -> None:
        """Close every channel's client."""
        for channel in self.channels:
            await channel.client.aclose()
