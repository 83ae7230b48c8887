"""The gateway's channels and routes as configured: plain data, checked once. Pure.

Theory of operation
===================

A *channel* is one upstream account or server the gateway may send an answer to: a Qianfan
account (``qianfan-v1``: OAuth app keys or a fixed access token; ``qianfan-v2``: an API key,
or IAM access keys), or an OpenAI-compatible self-hosted server (``openai``: FastDeploy,
vLLM, SGLang, Ollama). Channels live in the server's TOML file, next to ``[server]``::

    [[channels]]
    name = "qianfan-a"            # [A-Za-z0-9_.-], unique
    kind = "qianfan-v2"
    api_key_env = "QIANFAN_A_KEY" # the secret is read from this variable at start-up
    models = ["ernie-4.5-turbo-128k", "ernie-x1.1"]   # public names it serves; "*": any
    model_map = { "ernie-x1.1" = "ernie-x1.1-preview" }   # public → upstream name
    weight = 2                    # share within its priority group (>= 1)
    priority = 10                 # higher groups are tried first
    rpm = 300                     # this account's own limits, respected before sending
    tpm = 100000                  # (0: none; ERNIE's X-Ratelimit-* headers still apply)

    [routes]                      # optional: which channels serve a public model name
    "ernie-4.5-turbo-128k" = ["qianfan-a", "qianfan-b"]

A public model name is served by the channels its ``[routes]`` entry names, or else by every
channel that lists it in ``models`` (or lists ``"*"``). :func:`parse_gateway` turns the
document's ``channels`` and ``routes`` into a :class:`GatewaySpec` or raises
:class:`ChannelConfigError` naming the channel and the key; nothing is ignored.

**Secrets.** A credential is given either as ``<field>_env = "VARIABLE"`` (recommended: the
value is read from the environment at start-up, and a missing variable is an error naming the
variable, never a value) or inline as ``<field> = "…"``. :class:`ChannelSpec` never shows a
secret: its ``repr`` masks them, and no error message quotes one.

With no ``[[channels]]`` the server has exactly one implicit channel, ``default``: the
upstream the ``upstream_*`` settings and ``QIANFAN_*`` variables describe, as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "CHANNEL_KINDS",
    "DEFAULT_CHANNEL",
    "WILDCARD",
    "ChannelConfigError",
    "ChannelSpec",
    "GatewaySpec",
    "parse_gateway",
]

ChannelKind = Literal["qianfan-v1", "qianfan-v2", "openai"]

CHANNEL_KINDS: tuple[str, ...] = ("qianfan-v1", "qianfan-v2", "openai")
"""The kinds of upstream a channel may be."""

DEFAULT_CHANNEL = "default"
"""The name of the implicit channel when none is configured."""

WILDCARD = "*"
"""In a channel's ``models``: any model name."""

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

_SECRETS = ("api_key", "secret_key", "access_token", "access_key", "secret_access_key")
"""The credential fields (each also as ``<field>_env``)."""

_CREDENTIALS: Mapping[str, tuple[tuple[str, ...], ...]] = MappingProxyType(
    {
        # each kind: the combinations of credential fields it accepts (one of them, whole)
        "qianfan-v1": (("api_key", "secret_key"), ("access_token",)),
        "qianfan-v2": (("api_key",), ("access_key", "secret_access_key")),
        "openai": (("api_key",), ()),
    }
)

_KEYS = frozenset(
    {
        "name", "kind", "base_url", "models", "model_map", "prices", "weight", "priority", "rpm",
        "tpm", "max_connections", "retries", "app_id", "emulated",
        *_SECRETS, *(f"{name}_env" for name in _SECRETS),
    }
)  # fmt: skip


class ChannelConfigError(ValueError):
    """A channel or route is invalid; the message names it (and never shows a secret)."""


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One configured channel (see the module docstring). Secrets are resolved values.
    Plain data, picklable (``--workers`` hands the configuration to spawned processes); its
    mappings are not to be changed."""

    name: str
    kind: ChannelKind
    models: tuple[str, ...]
    base_url: str | None = None
    model_map: Mapping[str, str] = field(default_factory=dict)
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """CNY per million input / output tokens of a public model on this channel (its spend),
    instead of the catalogue's price (a self-hosted server's own cost, a negotiated price)."""
    weight: int = 1
    priority: int = 0
    rpm: int = 0
    tpm: int = 0
    max_connections: int | None = None
    retries: int = 0
    app_id: str | None = None
    emulated: bool | None = None
    api_key: str | None = None
    secret_key: str | None = None
    access_token: str | None = None
    access_key: str | None = None
    secret_access_key: str | None = None

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRETS:
                if value is not None:
                    parts.append(f"{f.name}='***'")
            elif value != f.default or f.name in ("name", "kind", "models"):
                parts.append(f"{f.name}={value!r}")
        return f"ChannelSpec({', '.join(parts)})"

    def serves(self, model: str) -> bool:
        """Whether ``model`` is among the names it lists (or it lists ``*``)."""
        return model in self.models or WILDCARD in self.models

    def upstream_name(self, model: str) -> str | None:
        """The name ``model`` goes upstream as when this channel maps it, else ``None``."""
        return self.model_map.get(model)


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    """The configured channels (in file order) and the explicit routes (public model name →
    channel names, in the order given)."""

    channels: tuple[ChannelSpec, ...]
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def channels_for(self, model: str) -> tuple[ChannelSpec, ...]:
        """The channels that serve the public model name ``model`` (none: not served)."""
        named = self.routes.get(model)
        if named is not None:
            by_name = {c.name: c for c in self.channels}
            return tuple(by_name[name] for name in named)
        return tuple(c for c in self.channels if c.serves(model))

    def public_models(self) -> tuple[str, ...]:
        """Every public name listed explicitly (routes and channels' ``models``), sorted."""
        names = set(self.routes)
        for channel in self.channels:
            names.update(m for m in channel.models if m != WILDCARD)
        return tuple(sorted(names))


def parse_gateway(
    channels: object, routes: object, environ: Mapping[str, str]
) -> GatewaySpec | None:
    """The gateway described by a TOML document's ``channels`` (an array of tables) and
    ``routes`` (a table); ``None`` when there are no channels. Secrets given as
    ``<field>_env`` are read from ``environ``.

    Raises:
        ChannelConfigError: anything invalid, named.
    """
    if channels is None:
        if routes is not None:
            raise ChannelConfigError("[routes] needs [[channels]] to route to")
        return None
    if not isinstance(channels, list) or not channels:
        raise ChannelConfigError("channels: expected one or more [[channels]] tables")
    specs: list[ChannelSpec] = []
    for index, table in enumerate(channels):
        if not isinstance(table, dict):
            raise ChannelConfigError(f"channels[{index}]: expected a table")
        spec = _channel(index, table, environ)
        if any(s.name == spec.name for s in specs):
            raise ChannelConfigError(f"channel {spec.name!r}: the name is used twice")
        specs.append(spec)
    return GatewaySpec(tuple(specs), _routes(routes, specs))


def _channel(index: int, table: dict[str, Any], environ: Mapping[str, str]) -> ChannelSpec:
    name = table.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ChannelConfigError(
            f"channels[{index}]: 'name' must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    where = f"channel {name!r}"
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ChannelConfigError(f"{where}: unknown key {unknown[0]!r}")
    kind = table.get("kind")
    if kind not in CHANNEL_KINDS:
        raise ChannelConfigError(f"{where}: 'kind' must be one of {', '.join(CHANNEL_KINDS)}")
    values: dict[str, Any] = {"name": name, "kind": kind}
    base_url = table.get("base_url")
    if base_url is not None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ChannelConfigError(f"{where}: 'base_url' must be an http:// or https:// URL")
        values["base_url"] = base_url.rstrip("/")
    elif kind == "openai":
        raise ChannelConfigError(
            f"{where}: an openai channel needs 'base_url' (the server's URL ending in /v1)"
        )
    values["models"] = _models(where, table.get("models"))
    values["model_map"] = _model_map(where, table.get("model_map"), values["models"])
    values["prices"] = _prices(where, table.get("prices"), values["models"])
    for key, low in (("weight", 1), ("priority", None), ("rpm", 0), ("tpm", 0),
                     ("max_connections", 1), ("retries", 0)):  # fmt: skip
        if key in table:
            values[key] = _int(where, key, table[key], low)
    for key in ("app_id",):
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise ChannelConfigError(f"{where}: '{key}' must be a non-empty string")
            values[key] = table[key]
    if "emulated" in table:
        if not isinstance(table["emulated"], bool):
            raise ChannelConfigError(f"{where}: 'emulated' must be true or false")
        values["emulated"] = table["emulated"]
    values.update(_secrets(where, kind, table, environ))
    return ChannelSpec(**values)


def _models(where: str, models: object) -> tuple[str, ...]:
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m.strip() == m and m for m in models)
    ):
        raise ChannelConfigError(
            f"{where}: 'models' must be a non-empty list of model names (\"*\": any)"
        )
    if len(set(models)) != len(models):
        raise ChannelConfigError(f"{where}: 'models' lists a name twice")
    return tuple(models)


def _model_map(where: str, mapping: object, models: tuple[str, ...]) -> Mapping[str, str]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict) or not all(isinstance(v, str) and v for v in mapping.values()):
        raise ChannelConfigError(f"{where}: 'model_map' must map model names to model names")
    for public in mapping:
        if public not in models and WILDCARD not in models:
            raise ChannelConfigError(
                f"{where}: 'model_map' maps {public!r}, which is not in its 'models'"
            )
    return dict(mapping)


def _prices(
    where: str, table: object, models: tuple[str, ...]
) -> Mapping[str, tuple[float, float]]:
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ChannelConfigError(f"{where}: 'prices' must map model names to [input, output]")
    prices: dict[str, tuple[float, float]] = {}
    for model, pair in table.items():
        if model not in models and WILDCARD not in models:
            raise ChannelConfigError(f"{where}: 'prices' prices {model!r}, not in its 'models'")
        numbers = pair if isinstance(pair, list) and len(pair) == 2 else None
        if numbers is None or not all(
            isinstance(n, int | float) and not isinstance(n, bool) and 0 <= n < 1e6 for n in numbers
        ):
            raise ChannelConfigError(
                f"{where}: 'prices' of {model!r} must be [input, output] CNY per million "
                "tokens (numbers from 0)"
            )
        prices[model] = (float(numbers[0]), float(numbers[1]))
    return prices


def _int(where: str, key: str, value: object, low: int | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ChannelConfigError(f"{where}: '{key}' must be a whole number")
    if low is not None and value < low:
        raise ChannelConfigError(f"{where}: '{key}' must be at least {low}")
    return value


def _secrets(
    where: str, kind: str, table: dict[str, Any], environ: Mapping[str, str]
) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _SECRETS:
        inline, variable = table.get(name), table.get(f"{name}_env")
        if inline is not None and variable is not None:
            raise ChannelConfigError(f"{where}: give '{name}' or '{name}_env', not both")
        if variable is not None:
            if not isinstance(variable, str) or not variable:
                raise ChannelConfigError(f"{where}: '{name}_env' must name a variable")
            value = environ.get(variable, "").strip()
            if not value:
                raise ChannelConfigError(
                    f"{where}: '{name}_env' names {variable!r}, which is not set"
                )
            found[name] = value
        elif inline is not None:
            if not isinstance(inline, str) or not inline.strip():
                raise ChannelConfigError(f"{where}: '{name}' must be a non-empty string")
            found[name] = inline.strip()
    combos = _CREDENTIALS[kind]
    if tuple(sorted(found)) not in {tuple(sorted(c)) for c in combos}:
        wanted = " or ".join("+".join(c) if c else "none" for c in combos)
        given = "+".join(sorted(found)) or "none"
        raise ChannelConfigError(
            f"{where}: a {kind} channel takes the credentials {wanted} "
            f"(each inline or as <name>_env); given: {given}"
        )
    return found


def _routes(routes: object, specs: list[ChannelSpec]) -> Mapping[str, tuple[str, ...]]:
    if routes is None:
        return {}
    if not isinstance(routes, dict):
        raise ChannelConfigError("[routes] must be a table of model name = [channel names]")
    names = {s.name for s in specs}
    out: dict[str, tuple[str, ...]] = {}
    for model, channels in routes.items():
        if model == WILDCARD or not model.strip():
            raise ChannelConfigError(f"route {model!r}: name a model")
        if (
            not isinstance(channels, list)
            or not channels
            or not all(isinstance(c, str) for c in channels)
        ):
            raise ChannelConfigError(f"route {model!r}: expected a non-empty list of channels")
        if len(set(channels)) != len(channels):
            raise ChannelConfigError(f"route {model!r}: a channel is named twice")
        for channel in channels:
            if channel not in names:
                raise ChannelConfigError(f"route {model!r}: no channel is named {channel!r}")
        out[model] = tuple(channels)
    return out
