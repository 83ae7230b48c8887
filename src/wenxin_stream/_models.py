"""The ERNIE model catalogue: every model, its limits, capabilities, price and status, in one place.

The data is ``_models.toml`` (next to this module; its header explains every field, with the
sources in ``shared/ERNIE-CURRENT.md`` §1). This module loads it once, checks it, and answers
every question any layer asks about a model — the SDK's request validation, the emulator's
roster and per-model behaviour, and (to come) the server's ``/v1/models``, the page and the CLI.
Pure data and pure functions; no I/O beyond reading the data file at import.

Two views of one catalogue
==========================

* **v2** (:func:`lookup_model`): a ``model`` id such as ``ernie-x1.1`` or one of its aliases
  (``ernie-x1.1-preview``), any case, gives its :class:`ModelSpec`. Aliases are the rolling and
  dated ids Baidu serves for the same model; they share the entry's capabilities and are sent
  to Baidu as the caller spelled them.
* **v1** (:func:`find_model`, :func:`model_for_endpoint`, :data:`MODELS`): in API v1 the model
  lives in the URL, ``/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}``. The models v1
  still serves carry their qianfan name and endpoint (``ERNIE-4.0-8K`` → ``completions_pro``),
  reached also through the legacy names users and erniebot use (``ERNIE-Bot-4``).

Unknown models: one rule everywhere
===================================

* **SDK, v2**: an id the catalogue does not know is sent as given, without capability checks
  (Qianfan serves about 200 ids, most of them not ERNIE: DeepSeek, Qwen, GLM…); the server
  decides. A known id is checked against its entry before anything is sent: a field the model
  cannot honour is an :class:`~wenxin_stream.InvalidRequestError` naming it.
* **SDK, v1**: an unknown model name is a local error, since the name selects the URL; a
  user-deployed service is reached with ``endpoint=``.
* **Emulator**: answers ids of its roster (this catalogue, or a roster file laid over it) and
  answers any other id as Baidu does, 401 ``invalid_model`` "The model does not exist or you do
  not have access to it." (``EmulatorConfig.unknown_models="accept"`` serves any id instead).
* **Server and CLI** follow the SDK: they pass unknown v2 ids to the upstream and relay its
  answer (so the same id gets the same answer through every door).

Retired models
==============

An entry with ``retired`` is live until that date and retired from it on (several ERNIE 4.5 /
5.0 models retired on 2026-10-29). Baidu's error table has ``403 model_offline`` ("The model is
offline", type ``access_denied``) for exactly this, and the 2026 roster test saw 403s for models
its keys could no longer use: the emulator answers a retired id that way (configurable). The
SDK does not refuse a retired id itself — a catalogue is a snapshot, and Baidu has extended
retirements before — it maps the 403 to :class:`~wenxin_stream.PermissionDeniedError` with
``code == "model_offline"``. :meth:`ModelSpec.status` tells callers who want to know first.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "CATALOGUE",
    "DEFAULT_MODEL",
    "ENDPOINTS",
    "MODELS",
    "V1_CHAT_PREFIX",
    "V2_CHAT_PATH",
    "V2_MODELS_PATH",
    "Catalogue",
    "CatalogueError",
    "ModelInfo",
    "ModelSpec",
    "PriceTier",
    "Reasoning",
    "find_model",
    "load_catalogue",
    "lookup_model",
    "model_for_endpoint",
]

V1_CHAT_PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
"""Path prefix of every v1 chat endpoint; the endpoint name follows it."""

V2_CHAT_PATH = "/v2/chat/completions"
"""Path of the v2 (OpenAI-compatible) chat route."""

V2_MODELS_PATH = "/v2/models"
"""Path of the v2 model list."""

DATA_FILE = Path(__file__).with_name("_models.toml")
"""The catalogue's data."""

Reasoning = Literal["always", "hybrid", "none"]
"""Whether a model thinks: always, when ``enable_thinking`` says so (hybrid), or never."""


class CatalogueError(ValueError):
    """A catalogue (the built-in data or a roster file laid over it) is malformed; the message
    names the entry and the field."""


@dataclass(frozen=True, slots=True)
class PriceTier:
    """CNY per 1M tokens, ``input`` / ``output``, for requests of up to ``up_to`` input tokens
    (``None``: any)."""

    input: float
    output: float
    up_to: int | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One chat model as the v1 API knows it.

    ``name`` is the canonical (qianfan SDK) model name, ``endpoint`` the last path segment of
    its v1 URL, ``v2_name`` the lower-case name the v2 API takes in ``model``, and
    ``max_input_chars`` / ``max_input_tokens`` the input limits the SDK enforces (0 = unknown);
    ``functions`` whether v1 takes ``functions`` (function calling) for it.
    """

    name: str
    endpoint: str
    v2_name: str
    max_input_chars: int = 0
    max_input_tokens: int = 0
    functions: bool = False


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One catalogue entry (the fields are explained in ``_models.toml``).

    A capability that is ``None`` is unknown: the SDK lets such a request through and the
    emulator treats it as supported; only ``False`` makes the SDK refuse a request.
    """

    id: str
    name: str
    family: str
    reasoning: Reasoning = "none"
    thinking_default: bool = False
    context: int | None = None
    max_output: int | None = None
    tools: bool | None = None
    search: bool | None = None
    vision: bool | None = None
    price: tuple[PriceTier, ...] = ()
    unsupported: frozenset[str] = frozenset()
    retired_on: date | None = None
    aliases: tuple[str, ...] = ()
    v2: bool = True
    v1: ModelInfo | None = None
    notes: str = ""

    def thinks(self, enable_thinking: bool | None = None) -> bool:
        """Whether the model thinks for a request with this ``enable_thinking`` (``None``: not
        sent). Only hybrid models are switched by it."""
        if self.reasoning == "hybrid":
            return self.thinking_default if enable_thinking is None else enable_thinking
        return self.reasoning == "always"

    def is_retired(self, today: date) -> bool:
        """Whether Baidu no longer serves the model on ``today``."""
        return self.retired_on is not None and today >= self.retired_on

    def status(self, today: date) -> Literal["live", "retired"]:
        """``"retired"`` from the retirement date on, else ``"live"``."""
        return "retired" if self.is_retired(today) else "live"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What a request costs in CNY at the listed price (``None``: price unknown); the tier
        is chosen by the prompt's size."""
        for tier in self.price:
            if tier.up_to is None or prompt_tokens <= tier.up_to:
                return (prompt_tokens * tier.input + completion_tokens * tier.output) / 1e6
        return None

    def to_json(self, today: date | None = None) -> dict[str, Any]:
        """The entry as plain JSON data (for model lists, the page and the CLI); with
        ``today``, its ``status`` on that day."""
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "family": self.family,
            "context": self.context,
            "max_output": self.max_output,
            "reasoning": self.reasoning,
            "thinking_default": self.thinking_default,
            "tools": self.tools,
            "search": self.search,
            "vision": self.vision,
            "price": [{"input": t.input, "output": t.output, "up_to": t.up_to} for t in self.price],
            "unsupported": sorted(self.unsupported),
            "retired": None if self.retired_on is None else self.retired_on.isoformat(),
            "aliases": list(self.aliases),
            "v2": self.v2,
            "v1_endpoint": None if self.v1 is None else self.v1.endpoint,
        }
        if today is not None:
            data["status"] = self.status(today)
        return data


# --- parsing the data ------------------------------------------------------------------------

_FIELDS = frozenset(
    {
        "id",
        "name",
        "family",
        "context",
        "max_output",
        "reasoning",
        "thinking_default",
        "tools",
        "search",
        "vision",
        "price",
        "unsupported",
        "retired",
        "aliases",
        "v2",
        "v1",
        "notes",
    }
)
_V1_FIELDS = frozenset(
    {"name", "endpoint", "max_input_chars", "max_input_tokens", "aliases", "functions"}
)
_REASONING = ("always", "hybrid", "none")


class _Entry:
    """Typed reads of one raw entry, each failure naming the entry and the field."""

    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        self.raw = raw
        self.where = where

    def fail(self, field: str, problem: str) -> CatalogueError:
        return CatalogueError(f"{self.where}: {field} {problem}")

    def text(self, field: str, *, default: str | None = None) -> str:
        value = self.raw.get(field, default)
        if not isinstance(value, str) or (not value.strip() and field != "notes"):
            raise self.fail(field, "must be a non-empty string")
        return value

    def count(self, field: str) -> int | None:
        value = self.raw.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(field, "must be a positive integer")
        return value

    def flag(self, field: str, default: bool | None = None) -> bool | None:
        value = self.raw.get(field, default)
        if value is not None and not isinstance(value, bool):
            raise self.fail(field, "must be true or false")
        return value

    def names(self, field: str, raw: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        value = (self.raw if raw is None else raw).get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(field, "must be a list of non-empty strings")
        return tuple(value)


def _price(entry: _Entry) -> tuple[PriceTier, ...]:
    value = entry.raw.get("price", [])
    if not isinstance(value, list):
        raise entry.fail("price", "must be a list of {input, output, up_to?} tables")
    tiers = []
    for tier in value:
        ok = isinstance(tier, Mapping) and set(tier) <= {"input", "output", "up_to"}
        numbers = [tier.get(k) for k in ("input", "output")] if ok else []
        if not ok or not all(
            not isinstance(n, bool) and isinstance(n, int | float) and math.isfinite(n) and n >= 0
            for n in numbers
        ):
            raise entry.fail("price", "tiers need non-negative numbers input and output")
        up_to = tier.get("up_to")
        if up_to is not None and (isinstance(up_to, bool) or not isinstance(up_to, int)):
            raise entry.fail("price", "up_to must be a number of tokens")
        tiers.append(PriceTier(float(numbers[0]), float(numbers[1]), up_to))
    return tuple(tiers)


def _retired(entry: _Entry) -> date | None:
    value = entry.raw.get("retired")
    if value is None or isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise entry.fail("retired", "must be a date (YYYY-MM-DD)")


def _v1(entry: _Entry, v2_id: str) -> tuple[ModelInfo | None, tuple[str, ...]]:
    raw = entry.raw.get("v1")
    if raw is None:
        return None, ()
    if not isinstance(raw, Mapping) or not set(raw) <= _V1_FIELDS:
        raise entry.fail("v1", f"must be a table of {', '.join(sorted(_V1_FIELDS))}")
    sub = _Entry(raw, f"{entry.where} v1")
    info = ModelInfo(
        sub.text("name"),
        sub.text("endpoint"),
        v2_id,
        sub.count("max_input_chars") or 0,
        sub.count("max_input_tokens") or 0,
        bool(sub.flag("functions", False)),
    )
    return info, tuple(name.lower() for name in sub.names("aliases"))


def _spec(raw: object, index: int) -> tuple[ModelSpec, tuple[str, ...]]:
    """One entry and its v1 aliases."""
    if not isinstance(raw, Mapping):
        raise CatalogueError(f"model {index}: must be a table")
    ident = raw.get("id")
    entry = _Entry(raw, f"model {index} ({ident!r})")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise entry.fail(", ".join(sorted(unknown)), "is not a catalogue field")
    ident = entry.text("id")
    if ident != ident.strip().lower():
        raise entry.fail("id", "must be lower case without surrounding spaces")
    reasoning = raw.get("reasoning", "none")
    if reasoning not in _REASONING:
        raise entry.fail("reasoning", f"must be one of {', '.join(_REASONING)}")
    v1, v1_aliases = _v1(entry, ident)
    spec = ModelSpec(
        id=ident,
        name=entry.text("name"),
        family=entry.text("family"),
        reasoning=reasoning,
        thinking_default=bool(entry.flag("thinking_default", False)),
        context=entry.count("context"),
        max_output=entry.count("max_output"),
        tools=entry.flag("tools"),
        search=entry.flag("search"),
        vision=entry.flag("vision"),
        price=_price(entry),
        unsupported=frozenset(entry.names("unsupported")),
        retired_on=_retired(entry),
        aliases=tuple(alias.lower() for alias in entry.names("aliases")),
        v2=bool(entry.flag("v2", True)),
        v1=v1,
        notes=entry.text("notes", default=""),
    )
    return spec, v1_aliases


class Catalogue:
    """A checked set of :class:`ModelSpec` with its lookups (build with
    :func:`load_catalogue`)."""

    __slots__ = ("_by_endpoint", "_by_v1", "_by_v2", "models", "v1_models")

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        specs: list[ModelSpec] = []
        self._by_v2: dict[str, ModelSpec] = {}
        self._by_v1: dict[str, ModelInfo] = {}
        self._by_endpoint: dict[str, ModelInfo] = {}
        v1_aliases: list[tuple[str, ModelInfo]] = []
        for index, raw in enumerate(entries):
            spec, aliases = _spec(raw, index)
            specs.append(spec)
            if spec.v2:
                for key in (spec.id, *spec.aliases):
                    if key in self._by_v2:
                        raise CatalogueError(f"model {index}: the v2 id {key!r} is listed twice")
                    self._by_v2[key] = spec
            if spec.v1 is not None:
                if spec.v1.endpoint in self._by_endpoint:
                    raise CatalogueError(f"model {index}: endpoint {spec.v1.endpoint!r} twice")
                self._by_endpoint[spec.v1.endpoint] = spec.v1
                self._by_v1[spec.v1.name.lower()] = spec.v1
                v1_aliases += [(alias, spec.v1) for alias in aliases]
        for spec in specs:  # v2 spellings reach v1 routes too, unless a v1 name has them
            if spec.v1 is not None:
                self._by_v1.setdefault(spec.id, spec.v1)
        for alias, info in v1_aliases:
            self._by_v1[alias] = info
        self.models: tuple[ModelSpec, ...] = tuple(specs)
        """Every entry, in catalogue order."""
        self.v1_models: Mapping[str, ModelInfo] = MappingProxyType(
            {spec.v1.name: spec.v1 for spec in specs if spec.v1 is not None}
        )
        """The v1 view: every model v1 serves, by canonical name."""

    def lookup(self, name: str) -> ModelSpec | None:
        """The entry of a v2 id or alias (any case, surrounding spaces ignored), or None."""
        return self._by_v2.get(name.strip().lower())

    def find_v1(self, name: str) -> ModelInfo | None:
        """The v1 model known by ``name`` (canonical, v2 spelling or alias; any case)."""
        return self._by_v1.get(name.strip().lower())

    def for_endpoint(self, endpoint: str) -> ModelInfo | None:
        """The model served at v1 endpoint ``endpoint``."""
        return self._by_endpoint.get(endpoint)

    def v2_ids(self, today: date | None = None) -> list[str]:
        """Every v2 id and alias, in catalogue order; with ``today``, only the live ones."""
        return [
            key
            for spec in self.models
            if spec.v2 and (today is None or not spec.is_retired(today))
            for key in (spec.id, *spec.aliases)
        ]


def _raw_entries(data: object, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), list):
        raise CatalogueError(f"{what} must hold [[model]] tables")
    if set(data) != {"model"}:
        raise CatalogueError(f"{what}: only [[model]] tables are allowed")
    return list(data["model"])


def load_catalogue(overlay: Mapping[str, Any] | None = None) -> Catalogue:
    """The built-in catalogue, with an ``overlay`` (parsed TOML of the same shape) laid over
    it: an overlay entry whose ``id`` exists updates that entry's fields (so ``{id = "ernie-5.1",
    reasoning = "always"}`` changes one flag), any other entry is added.

    Raises:
        CatalogueError: the data (built-in or overlay) is malformed.
    """
    base = _raw_entries(tomllib.loads(DATA_FILE.read_text(encoding="utf-8")), str(DATA_FILE))
    if overlay is None:
        return Catalogue(base)
    merged = {str(entry.get("id")): dict(entry) for entry in base}
    for index, entry in enumerate(_raw_entries(overlay, "a roster")):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            raise CatalogueError(f"roster model {index}: needs a string id")
        merged.setdefault(entry["id"], {}).update(entry)
    return Catalogue(list(merged.values()))


CATALOGUE = load_catalogue()
"""The built-in catalogue."""

MODELS: Mapping[str, ModelInfo] = CATALOGUE.v1_models
"""Every model v1 serves, by canonical name."""

ENDPOINTS: frozenset[str] = frozenset(info.endpoint for info in MODELS.values())
"""Every known v1 endpoint name."""

DEFAULT_MODEL = "ERNIE-Lite-8K"
"""The default v1 chat model (as in the qianfan SDK)."""


def lookup_model(name: str) -> ModelSpec | None:
    """The catalogue entry of a v2 ``model`` id or alias (any case), or None if unknown."""
    return CATALOGUE.lookup(name)


def find_model(name: str) -> ModelInfo | None:
    """The v1 model known by ``name`` (canonical, v2 or alias; any case), or None."""
    return CATALOGUE.find_v1(name)


def model_for_endpoint(endpoint: str) -> ModelInfo | None:
    """The model served at v1 endpoint ``endpoint``, or None for an unknown endpoint."""
    return CATALOGUE.for_endpoint(endpoint)
