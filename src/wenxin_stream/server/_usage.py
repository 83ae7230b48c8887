"""Usage and spend: what each upstream request cost, in tokens and CNY, and the budget periods.

Theory of operation
===================

**One record per upstream request.** An answer may take several requests upstream: a retry
(only before anything reached the client, so only a request that *generated* something
costs — ``StreamCore`` keeps one :class:`~wenxin_stream._stream_core.AttemptUsage` per such
request) and, with continue mode, a continuation. :func:`usage_records` turns that list into
:class:`UsageRecord` rows: the tokens the upstream reported for *that* request, or, when it
reported nothing (a stream cut before its usage chunk), ``_token_estimate``'s figure for its
prompt and what it delivered, marked ``estimated``. Each request is counted exactly once —
the records come from the SDK's per-request ledger, not from the usage events the relay
saw (a v2 stream repeats its running total; the last one per request is the request's).

**Cost.** :class:`Pricing` prices a request by its model's catalogue entry (``_models.toml``:
CNY per million tokens, tiers chosen by the prompt's size) unless the channel's override map
names the model (``{channel: {model: [PriceTier, …]}}``; the channel is ``"default"`` until
the server has several upstreams). Costs are whole **nano-CNY** (1e-9 CNY) computed with
:class:`~decimal.Decimal` — a price with up to three decimals times a token count is an exact
integer there — so sums are exact on both databases (``BIGINT``) and budgets compare
integers. A model without a price costs ``None`` (stored ``NULL``): its tokens count against
token budgets, nothing against CNY budgets.

**Periods** are Beijing's (UTC+8), Baidu's billing day, as ``_catalogue.baidu_today``: a day
is ``YYYY-MM-DD`` from 00:00 Beijing time, a month ``YYYY-MM`` from the 1st. A record keeps
its Beijing ``day``; :func:`period_of` gives a budget's current period and the POSIX time it
resets (the ``Retry-After`` of a spent budget).

Pure: no I/O, no clock of its own (every function takes ``now``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from .._events import Usage
from .._models import PriceTier, find_model, lookup_model
from .._stream_core import AttemptUsage

__all__ = [
    "BEIJING",
    "DEFAULT_CHANNEL",
    "NANO_PER_CNY",
    "TAKEOVER_BLOCK",
    "Period",
    "Pricing",
    "UsageRecord",
    "beijing_day",
    "cny_from_nano",
    "cost_nano",
    "first_attempt",
    "nano_from_cny",
    "period_of",
    "reasoning_tokens",
    "taken_over_record",
    "usage_records",
]

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
"""Baidu's billing clock: the day and the month of every budget and report."""

DEFAULT_CHANNEL = "default"
"""The channel of every request while the server has one upstream."""

NANO_PER_CNY = 10**9
"""Costs and CNY budgets are whole nano-CNY."""

TAKEOVER_BLOCK = 100
"""Request numbers per holder of a taken-over answer (:func:`first_attempt`)."""


def first_attempt(token: int) -> int:
    """The first request number of the instance holding an answer with fencing ``token``:
    1 for its producer (token 1, or no fleet), ``token × 100`` for a taker (its estimate of the
    earlier instances' spend; its own requests follow). An instance makes far fewer than 100
    upstream requests for one answer (failover attempts × SDK retries)."""
    return 1 if token <= 1 else token * TAKEOVER_BLOCK


Period = Literal["day", "month"]


def beijing_day(now: float) -> str:
    """The Beijing date (``YYYY-MM-DD``) at POSIX time ``now``."""
    return datetime.fromtimestamp(now, BEIJING).date().isoformat()


def period_of(period: Period, now: float) -> tuple[str, float]:
    """The label of the ``period`` containing POSIX time ``now`` (``YYYY-MM-DD`` or
    ``YYYY-MM``) and the POSIX time the next one begins."""
    local = datetime.fromtimestamp(now, BEIJING)
    today = local.date()
    if period == "day":
        label, nxt = today.isoformat(), today + timedelta(days=1)
    else:
        label = f"{today.year:04d}-{today.month:02d}"
        nxt = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    starts = datetime(nxt.year, nxt.month, nxt.day, tzinfo=BEIJING)
    return label, starts.timestamp()


def period_start(period: Period, now: float) -> str:
    """The first Beijing day (``YYYY-MM-DD``) of the ``period`` containing ``now``."""
    label, _ = period_of(period, now)
    return label if period == "day" else label + "-01"


def nano_from_cny(text: str) -> int:
    """A CNY amount (``"12.5"``) as whole nano-CNY.

    Raises:
        ValueError: not a positive decimal number, or finer than a nano-CNY.
    """
    try:
        amount = Decimal(text.strip())
    except ArithmeticError:
        raise ValueError(f"expected an amount of CNY such as 10 or 2.50, got {text!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"a CNY amount must be greater than 0, got {text!r}")
    nano = amount * NANO_PER_CNY
    if nano != nano.to_integral_value():
        raise ValueError(f"a CNY amount has at most 9 decimals, got {text!r}")
    return int(nano)


def cny_from_nano(nano: int) -> str:
    """Whole nano-CNY shown as CNY with as many decimals as needed (at least 2)."""
    text = f"{Decimal(nano) / NANO_PER_CNY:.9f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


_MILLION = Decimal(10**6)


def cost_nano(tiers: Sequence[PriceTier], prompt_tokens: int, completion_tokens: int) -> int | None:
    """What a request costs in whole nano-CNY at ``tiers`` (CNY per million tokens, the tier
    chosen by the prompt's size; rounded half up); ``None`` when no tier applies."""
    for tier in tiers:
        if tier.up_to is None or prompt_tokens <= tier.up_to:
            cny = (
                Decimal(str(tier.input)) * prompt_tokens
                + Decimal(str(tier.output)) * completion_tokens
            ) / _MILLION
            return int((cny * NANO_PER_CNY).to_integral_value(ROUND_HALF_UP))
    return None


class Pricing:
    """The price of a model on a channel: ``overrides[channel][model]`` when given, else the
    catalogue's (looked up by v2 id, alias or v1 name); ``()`` when neither knows it."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Sequence[PriceTier]]] | None = None):
        self._overrides = {
            channel: {model.lower(): tuple(tiers) for model, tiers in models.items()}
            for channel, models in (overrides or {}).items()
        }
        self._cache: dict[tuple[str, str], tuple[PriceTier, ...]] = {}

    def tiers(self, model: str, channel: str = DEFAULT_CHANNEL) -> tuple[PriceTier, ...]:
        """The price tiers of ``model`` on ``channel``."""
        key = (model, channel)
        found = self._cache.get(key)
        if found is None:
            override = self._overrides.get(channel, {}).get(model.lower())
            if override is not None:
                found = override
            else:
                spec = lookup_model(model)
                if spec is None and (legacy := find_model(model)) is not None:
                    spec = lookup_model(legacy.v2_name)
                found = () if spec is None else spec.price
            if len(self._cache) < 4096:  # model names come from requests: bounded
                self._cache[key] = found
        return found

    def cost(
        self, model: str, channel: str, prompt_tokens: int, completion_tokens: int
    ) -> int | None:
        """What ``prompt_tokens`` in and ``completion_tokens`` out cost in nano-CNY."""
        return cost_nano(self.tiers(model, channel), prompt_tokens, completion_tokens)

    def estimate(self, model: str, channel: str, prompt_tokens: int, answer_tokens: int) -> int:
        """The cost to reserve for a request: its estimated prompt, ``answer_tokens`` out, at
        the most expensive tier that could apply (0 when the model has no price)."""
        tiers = self.tiers(model, channel)
        price = cost_nano(tiers, prompt_tokens, answer_tokens)
        if price is None and tiers:  # beyond every bounded tier: the dearest one
            dearest = max(tiers, key=lambda t: (t.input, t.output))
            flat = (PriceTier(dearest.input, dearest.output),)
            price = cost_nano(flat, prompt_tokens, answer_tokens)
        return price or 0


def reasoning_tokens(usage: Usage) -> int | None:
    """The reasoning tokens a usage reports (v2 ``completion_tokens_details``), if any."""
    details = usage.extra.get("completion_tokens_details")
    if isinstance(details, Mapping):
        value = details.get("reasoning_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One upstream request's usage as stored (table ``usage``).

    ``at`` is ISO 8601 UTC, ``day`` its Beijing date; ``attempt`` and ``kind`` say which
    request of the answer (``stream_id``) it was; ``estimated`` when the upstream reported no
    usage and the figures are ``_token_estimate``'s; ``cost_nano`` is ``None`` for a model
    without a price.
    """

    key_id: str
    model: str
    channel: str
    at: str
    day: str
    stream_id: str
    attempt: int
    kind: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    reasoning_tokens: int | None
    cost_nano: int | None
    estimated: bool


def usage_records(
    attempts: Iterable[tuple[str, AttemptUsage]],
    *,
    key_id: str,
    model: str,
    stream_id: str,
    now: float,
    pricing: Pricing,
    first: int = 1,
) -> list[UsageRecord]:
    """The records of an answer's upstream requests (see the module docstring), each
    ``(channel, attempt)`` priced at its channel's price and numbered in order across
    channels from ``first`` (an answer continued on a second channel has requests 1 and 2)."""
    at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    day = beijing_day(now)
    records = []
    for number, (channel, attempt) in enumerate(attempts, first):
        usage = attempt.counted
        prompt, completion = max(0, usage.prompt_tokens), max(0, usage.completion_tokens)
        total = max(usage.total_tokens, prompt + completion)
        records.append(
            UsageRecord(
                key_id=key_id,
                model=model,
                channel=channel,
                at=at,
                day=day,
                stream_id=stream_id,
                attempt=number,
                kind=attempt.kind,
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=total,
                reasoning_tokens=None if attempt.usage is None else reasoning_tokens(usage),
                cost_nano=pricing.cost(model, channel, prompt, completion),
                estimated=attempt.usage is None,
            )
        )
    return records


def taken_over_record(
    usage: Usage,
    *,
    key_id: str,
    model: str,
    channel: str,
    stream_id: str,
    token: int,
    now: float,
    pricing: Pricing,
) -> UsageRecord:
    """The estimated row a taker (fencing ``token``) stores for what the instances before it
    spent on the answer (``usage``: the original prompt and the logged text, estimated), at
    request number :func:`first_attempt` (``token``)."""
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    return UsageRecord(
        key_id=key_id,
        model=model,
        channel=channel,
        at=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        day=beijing_day(now),
        stream_id=stream_id,
        attempt=first_attempt(token),
        kind="taken_over",
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        reasoning_tokens=None,
        cost_nano=pricing.cost(model, channel, prompt, completion),
        estimated=True,
    )


def retry_after(reset_at: float, now: float) -> float:
    """Seconds from ``now`` until ``reset_at`` (at least 1)."""
    return max(1.0, math.ceil(reset_at - now))
