"""The emulator's configuration: one immutable :class:`EmulatorConfig`, plus file loaders.

Theory of operation
===================

Everything the emulator can be told lives in :class:`EmulatorConfig`, a frozen dataclass built
once (by the CLI from its flags, or by a test or an embedding program directly) and handed to
:func:`~wenxin_stream.emulator.create_app`. The app never reads the environment or any global.

Two optional JSON files feed it, parsed here so mistakes surface at start-up with a clear
:class:`ConfigError` rather than as odd answers later:

- the credentials file (``--credentials``) turns on *strict mode*: only the listed OAuth apps,
  v2 API keys and IAM key pairs are accepted, and signatures are fully verified. Without it the
  emulator runs in *dev mode* and accepts any credentials (but still only tokens it issued);
- the scenario file (``--scenario``) scripts answers, and optionally faults, per prompt;
- the roster file (``--roster``, TOML in the shape of ``wenxin_stream/_models.toml``) is laid
  over the built-in model catalogue: an entry with a known ``id`` changes that model's fields
  (``reasoning = "always"`` for one model, say), any other entry adds a model.

What ``shared/ERNIE-CURRENT.md`` marks uncertain is a field here, with the likeliest behaviour
as its default: how unknown and retired models are answered, whether a capability the
catalogue does not know is assumed, whether unsupported fields are refused or ignored, how
answer chunks of a reasoning model carry ``reasoning_content``, how tool-call deltas are cut,
where the search-status tag sits, and the thinking pace.

Time is injected (``clock``), so tests can expire tokens and slide quota windows instantly.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .._models import CATALOGUE, Catalogue, CatalogueError, load_catalogue
from ._faults import FaultSpec, FaultSpecError, parse_fault_spec

DEFAULT_PORT = 8866
"""The port ``wenxin emulate`` listens on by default (the qianfan mock server's port too)."""

DEFAULT_TOKEN_TTL = 2_592_000
"""Lifetime of an OAuth access token, in seconds: 30 days, as Baidu reports it."""

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest request body the emulator reads (32 MiB: a 10 MB image is 13.4 MB as base64, and
the emulator must read it to answer ``invalid_image_url`` for one just over the limit)."""

DEFAULT_THINKING_INTERVAL = 0.08
"""Seconds between reasoning chunks: a reasoning model's few hundred characters of thinking
then take several seconds, as the 2026 latency test saw (9–17 s for X1 / X1.1 / 5.0 answers)."""

ADVERTISED_RPM = 100_000
"""Requests per minute advertised in rate-limit headers when no RPM quota is configured.

Deliberately huge rather than Baidu's default (about 300): the qianfan SDK adopts the first
``X-Ratelimit-Limit-Requests`` it sees as its own client-side limit, and a realistic value
would make it throttle itself during benchmarks against an emulator that has no quota."""

ADVERTISED_TPM = 100_000_000
"""Tokens per minute advertised when no TPM quota is configured (huge, for the same reason)."""


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message says which and why."""


@dataclass(frozen=True, slots=True)
class App:
    """One OAuth application: the ``client_id`` (API Key) and ``client_secret`` (Secret Key)."""

    api_key: str
    secret_key: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """The credentials strict mode accepts.

    ``apps`` maps API Key to Secret Key (v1 OAuth), ``api_keys`` are v2 bearer keys
    (``bce-v3/…``), ``iam`` maps IAM Access Key to Secret Key (signatures, bearer minting) and
    ``appids`` (optional) are the v2 ``appid`` header values accepted; empty means any.
    """

    apps: Mapping[str, str] = field(default_factory=dict)
    api_keys: frozenset[str] = frozenset()
    iam: Mapping[str, str] = field(default_factory=dict)
    appids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Scenario:
    """A scripted answer: when ``match`` matches the last user message, answer ``answer``
    (if not None) and apply ``fault`` (if not None)."""

    pattern: re.Pattern[str] | None
    substring: str
    answer: str | None
    fault: FaultSpec | None

    def matches(self, prompt: str) -> bool:
        """Whether this scenario applies to the (directive-free) last user message."""
        if self.pattern is not None:
            return self.pattern.search(prompt) is not None
        return self.substring in prompt


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything the emulator can be configured with; every field has a working default.

    Pacing: ``ttft`` (seconds before the first chunk), ``interval`` (between v1 sentence
    chunks), ``v2_interval`` (between v2 deltas). Auth: ``credentials`` (None = dev mode),
    ``no_auth`` (accept requests carrying no credentials at all), ``token_ttl``. Quotas:
    ``rpm`` / ``tpm`` per credential over a sliding 60 s window, 0 = off. Answers: ``seed``,
    ``scenarios``. Faults: ``fault_rates`` (SPEC, probability) pairs. Transport:
    ``max_body_bytes``, ``sse_charset`` (append ``;charset=utf-8`` to ``text/event-stream``).
    Protocol knobs for the [uncertain] items of ``ERNIE-PROTOCOL.md``: ``oauth_error_status``,
    ``v1_messages_error_code``, ``v2_alternation``, ``v2_finish_reason``, ``custom_endpoints``
    (extra v1 endpoint name → model name) and ``v2_models`` (allow-list; None = any model).
    ``debug`` logs tracebacks of internal errors; ``clock`` is the wall clock (injectable).

    Models (``shared/ERNIE-CURRENT.md`` §1, §8; the uncertain items): ``roster`` is the
    catalogue the v2 route serves (default: the built-in one); ``unknown_models`` answers an
    id outside it ``"reject"`` (401 ``invalid_model``) or ``"accept"`` (as a plain text model);
    ``retired_models`` answers a model past its retirement date (by ``clock``) ``"offline"``
    (403 ``model_offline``), ``"invalid"`` (401 ``invalid_model``) or ``"serve"`` (as if live);
    ``unknown_capability`` is what a capability the catalogue leaves unknown is taken to be;
    ``unsupported_params`` answers a field the model cannot honour ``"reject"`` (400) or
    ``"ignore"``. Reasoning: ``thinking_interval`` paces reasoning chunks;
    ``reasoning_in_answer`` is how answer chunks of a thinking model carry
    ``reasoning_content`` (``"absent"``, ``"empty"`` string, ``"null"``);
    ``reasoning_tokens_detail`` adds ``completion_tokens_details.reasoning_tokens``. Tools:
    ``tool_call_index`` (send ``index`` in tool-call deltas), ``tool_call_pieces`` (cut each
    call's ``arguments`` into this many deltas). Search: ``search_status_placement`` puts
    ``delta_tag`` on the ``"choice"`` or in the ``"delta"``.

    OpenAI-compatible mode (``/v1/chat/completions`` and ``/v1/models``, ``_openai``): a
    self-hosted ERNIE 4.5 as ``openai_flavour`` ``"vllm"`` or ``"fastdeploy"`` serves it (their
    reasoning field, extra fields and error shapes); ``openai_api_key`` (None: no key wanted,
    as both servers by default); ``openai_model``, the served model id (None: the flavour's
    usual one); ``openai_max_model_len``, the context the server refuses beyond.
    """

    seed: int = 0
    ttft: float = 0.5
    interval: float = 0.3
    v2_interval: float = 0.05
    token_ttl: int = DEFAULT_TOKEN_TTL
    credentials: Credentials | None = None
    no_auth: bool = False
    rpm: int = 0
    tpm: int = 0
    scenarios: tuple[Scenario, ...] = ()
    fault_rates: tuple[tuple[FaultSpec, float], ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    sse_charset: bool = False
    oauth_error_status: int = 401
    v1_messages_error_code: int = 336006
    v2_alternation: bool = False
    v2_finish_reason: str = "stop"
    custom_endpoints: Mapping[str, str] = field(default_factory=dict)
    v2_models: frozenset[str] | None = None
    roster: Catalogue = CATALOGUE
    unknown_models: Literal["reject", "accept"] = "reject"
    retired_models: Literal["offline", "invalid", "serve"] = "offline"
    unknown_capability: bool = True
    unsupported_params: Literal["reject", "ignore"] = "reject"
    thinking_interval: float = DEFAULT_THINKING_INTERVAL
    reasoning_in_answer: Literal["absent", "empty", "null"] = "absent"
    reasoning_tokens_detail: bool = False
    tool_call_index: bool = True
    tool_call_pieces: int = 1
    search_status_placement: Literal["choice", "delta"] = "choice"
    openai_flavour: Literal["vllm", "fastdeploy"] = "vllm"
    openai_api_key: str | None = field(default=None, repr=False)
    openai_model: str | None = None
    openai_max_model_len: int = 32768
    debug: bool = False
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        for name in ("ttft", "interval", "v2_interval", "thinking_interval"):
            value = getattr(self, name)
            if not 0 <= value <= 3600:
                raise ConfigError(f"{name} must be in [0, 3600] seconds, not {value!r}")
        if self.token_ttl < 1:
            raise ConfigError(f"token_ttl must be at least 1 second, not {self.token_ttl!r}")
        if self.rpm < 0 or self.tpm < 0:
            raise ConfigError("rpm and tpm must not be negative (0 turns a quota off)")
        if self.max_body_bytes < 1:
            raise ConfigError("max_body_bytes must be positive")
        if self.openai_max_model_len < 1:
            raise ConfigError("openai_max_model_len must be positive")
        if self.openai_api_key is not None and not self.openai_api_key.strip():
            raise ConfigError("openai_api_key must not be blank (None: no key wanted)")
        if self.openai_model is not None and not self.openai_model.strip():
            raise ConfigError("openai_model must not be blank (None: the flavour's own)")
        for _, rate in self.fault_rates:
            if not 0 <= rate <= 1:
                raise ConfigError(f"a fault rate must be in [0, 1], not {rate!r}")
        choices = {
            "unknown_models": ("reject", "accept"),
            "retired_models": ("offline", "invalid", "serve"),
            "unsupported_params": ("reject", "ignore"),
            "reasoning_in_answer": ("absent", "empty", "null"),
            "search_status_placement": ("choice", "delta"),
            "openai_flavour": ("vllm", "fastdeploy"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}")
        if not 1 <= self.tool_call_pieces <= 64:
            raise ConfigError("tool_call_pieces must be in [1, 64]")
        object.__setattr__(self, "custom_endpoints", MappingProxyType(dict(self.custom_endpoints)))

    @property
    def strict(self) -> bool:
        """True when only configured credentials are accepted."""
        return self.credentials is not None

    @property
    def mode_description(self) -> str:
        """A short human description of the auth mode, for the start-up log line."""
        text = (
            "strict mode: only configured credentials accepted"
            if self.strict
            else "dev mode: any credentials accepted"
        )
        if self.no_auth:
            text += "; requests without credentials accepted"
        key = "an API key" if self.openai_api_key is not None else "no API key"
        return f"{text}; /v1/chat/completions as {self.openai_flavour} with {key}"


def _read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {str(path)!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"the {what} file {str(path)!r} is not valid JSON: {exc}") from None


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings")
    return value


def _pairs(value: object, where: str, key: str, secret: str) -> dict[str, str]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of objects")
    result: dict[str, str] = {}
    for index, item in enumerate(value):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get(key), str)
            or not isinstance(item.get(secret), str)
            or not item[key]
            or not item[secret]
        ):
            raise ConfigError(f'{where}[{index}] must be {{"{key}": "…", "{secret}": "…"}}')
        result[item[key]] = item[secret]
    return result


def parse_credentials(data: object) -> Credentials:
    """Build :class:`Credentials` from the parsed credentials-file JSON.

    Shape: ``{"apps": [{"api_key", "secret_key"}], "api_keys": ["bce-v3/…"],
    "iam": [{"access_key", "secret_key"}], "appids": ["app-…"]}``; every key is optional.
    """
    if not isinstance(data, dict):
        raise ConfigError("the credentials file must hold a JSON object")
    unknown = set(data) - {"apps", "api_keys", "iam", "appids"}
    if unknown:
        raise ConfigError(f"unknown key(s) in the credentials file: {', '.join(sorted(unknown))}")
    return Credentials(
        apps=_pairs(data.get("apps", []), "apps", "api_key", "secret_key"),
        api_keys=frozenset(_strings(data.get("api_keys", []), "api_keys")),
        iam=_pairs(data.get("iam", []), "iam", "access_key", "secret_key"),
        appids=frozenset(_strings(data.get("appids", []), "appids")),
    )


def load_credentials(path: str | Path) -> Credentials:
    """Read and parse a credentials file (see :func:`parse_credentials`)."""
    return parse_credentials(_read_json(path, "credentials"))


def parse_scenarios(data: object) -> tuple[Scenario, ...]:
    """Build the scenarios from the parsed scenario-file JSON: a list of
    ``{"match": "substring" | "re:REGEX", "answer"?: "text", "fault"?: "SPEC"}``."""
    if not isinstance(data, list):
        raise ConfigError("the scenario file must hold a JSON list")
    result = []
    for index, item in enumerate(data):
        where = f"scenario {index}"
        if not isinstance(item, dict) or not isinstance(item.get("match"), str):
            raise ConfigError(f'{where} must be an object with a string "match"')
        unknown = set(item) - {"match", "answer", "fault"}
        if unknown:
            raise ConfigError(f"{where} has unknown key(s): {', '.join(sorted(unknown))}")
        answer = item.get("answer")
        if answer is not None and (not isinstance(answer, str) or not answer):
            raise ConfigError(f'{where}: "answer" must be a non-empty string')
        fault = None
        if item.get("fault") is not None:
            if not isinstance(item["fault"], str):
                raise ConfigError(f'{where}: "fault" must be a SPEC string')
            try:
                fault = parse_fault_spec(item["fault"])
            except FaultSpecError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        match: str = item["match"]
        pattern = None
        if match.startswith("re:"):
            try:
                pattern = re.compile(match[3:])
            except re.error as exc:
                raise ConfigError(f"{where}: bad regular expression: {exc}") from None
        result.append(Scenario(pattern, match, answer, fault))
    return tuple(result)


def load_scenarios(path: str | Path) -> tuple[Scenario, ...]:
    """Read and parse a scenario file (see :func:`parse_scenarios`)."""
    return parse_scenarios(_read_json(path, "scenario"))


def parse_roster(text: str, where: str = "the roster") -> Catalogue:
    """The built-in catalogue with a roster (TOML text of ``[[model]]`` tables, the shape of
    ``wenxin_stream/_models.toml``) laid over it (see ``_models.load_catalogue``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    try:
        return load_catalogue(data)
    except CatalogueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_roster(path: str | Path) -> Catalogue:
    """Read and parse a roster file (see :func:`parse_roster`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the roster file {str(path)!r}: {exc.strerror}") from None
    return parse_roster(text, f"the roster file {str(path)!r}")
