"""ERNIE model names and the v1 ("wenxinworkshop") endpoint each one is served at.

In API v1 the model lives in the URL: ``/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}``.
In API v2 it is the ``model`` field of the body. This table maps between the two, after the
qianfan SDK's model table (cross-checked against erniebot, one-api and LangChain, see
``shared/ERNIE-PROTOCOL.md`` §1.3). Lookups ignore case, so ``ERNIE-4.0-8K``, ``ernie-4.0-8k``
and the legacy ``ERNIE-Bot-4`` all reach ``completions_pro``.

Pure data and two pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

V1_CHAT_PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
"""Path prefix of every v1 chat endpoint; the endpoint name follows it."""

V2_CHAT_PATH = "/v2/chat/completions"
"""Path of the v2 (OpenAI-compatible) chat route."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One ERNIE chat model as the v1 API knows it.

    ``name`` is the canonical (qianfan SDK) model name, ``endpoint`` the last path segment of
    its v1 URL, ``v2_name`` the lower-case name the v2 API takes in ``model``, and
    ``max_input_chars`` / ``max_input_tokens`` the input limits the SDK enforces (0 = unknown).
    """

    name: str
    endpoint: str
    v2_name: str
    max_input_chars: int = 0
    max_input_tokens: int = 0


def _m(
    name: str, endpoint: str, chars: int = 0, tokens: int = 0, *, v2: str | None = None
) -> ModelInfo:
    return ModelInfo(name, endpoint, v2 or name.lower(), chars, tokens)


_MODELS: tuple[ModelInfo, ...] = (
    _m("ERNIE-4.0-8K", "completions_pro", 20000, 5120),
    _m("ERNIE-4.0-8K-Latest", "ernie-4.0-8k-latest", 20000, 5120),
    _m("ERNIE-4.0-8K-Preview", "ernie-4.0-8k-preview", 20000, 5120),
    _m("ERNIE-4.0-8K-0613", "ernie-4.0-8k-0613", 20000, 5120),
    _m("ERNIE-4.0-8K-0329", "ernie-4.0-8k-0329", 20000, 5120),
    _m("ERNIE-4.0-8K-0104", "ernie-4.0-8k-0104", 20000, 5120),
    _m("ERNIE-4.0-Turbo-8K", "ernie-4.0-turbo-8k", 20000, 5120),
    _m("ERNIE-4.0-Turbo-8K-Latest", "ernie-4.0-turbo-8k-latest", 20000, 5120),
    _m("ERNIE-4.0-Turbo-8K-Preview", "ernie-4.0-turbo-8k-preview", 20000, 5120),
    _m("ERNIE-4.0-Turbo-128K", "ernie-4.0-turbo-128k"),
    _m("ERNIE-3.5-8K", "completions", 20000, 5120),
    _m("ERNIE-3.5-128K", "ernie-3.5-128k", 516096, 126976),
    _m("ERNIE-3.5-8K-Preview", "ernie-3.5-8k-preview", 20000, 5120),
    _m("ERNIE-3.5-8K-0205", "ernie-3.5-8k-0205", 20000, 5120),
    _m("ERNIE-3.5-8K-0329", "ernie-3.5-8k-0329", 20000, 5120),
    _m("ERNIE-3.5-8K-0613", "ernie-3.5-8k-0613", 20000, 5120),
    _m("ERNIE-3.5-8K-0701", "ernie-3.5-8k-0701", 20000, 5120),
    _m("ERNIE-3.5-8K-1222", "ernie-3.5-8k-1222", 20000, 5120),
    _m("ERNIE-3.5-4K-0205", "ernie-3.5-4k-0205", 20000, 5120),
    _m("ERNIE-Bot-8K", "ernie_bot_8k"),
    _m("ERNIE-Speed-8K", "ernie_speed", 11200, 7168),
    _m("ERNIE-Speed-128K", "ernie-speed-128k", 507904, 126976),
    _m("ERNIE-Speed-Pro-8K", "ernie-speed-pro-8k"),
    _m("ERNIE-Speed-Pro-128K", "ernie-speed-pro-128k"),
    _m("ERNIE-Speed-AppBuilder", "ai_apaas"),
    _m("ERNIE-Lite-8K-0922", "eb-instant", 11200, 7168),
    _m("ERNIE-Lite-8K", "ernie-lite-8k", 11200, 7168),
    _m("ERNIE-Lite-Pro-8K", "ernie-lite-pro-8k", 24000, 6144),
    _m("ERNIE-Lite-Pro-128K", "ernie-lite-pro-128k"),
    _m("ERNIE-Lite-V", "ernie-lite-v"),
    _m("ERNIE-Tiny-8K", "ernie-tiny-8k", 24000, 6144),
    _m("ERNIE-Character-8K", "ernie-char-8k", v2="ernie-char-8k"),
    _m("ERNIE-Character-Fiction-8K", "ernie-char-fiction-8k", v2="ernie-char-fiction-8k"),
    _m("ERNIE-Novel-8K", "ernie-novel-8k"),
    _m("ERNIE-Function-8K", "ernie-func-8k", v2="ernie-func-8k"),
    _m("Qianfan-Dynamic-8K", "qianfan-dynamic-8k"),
    _m("BLOOMZ-7B", "bloomz_7b1"),
    _m("Llama-2-7B-Chat", "llama_2_7b"),
    _m("Llama-2-13B-Chat", "llama_2_13b"),
    _m("Llama-2-70B-Chat", "llama_2_70b"),
    _m("Meta-Llama-3-8B", "llama_3_8b"),
    _m("Meta-Llama-3-70B", "llama_3_70b"),
    _m("Yi-34B-Chat", "yi_34b_chat"),
)

# Other names users (and the erniebot SDK) use for the same models.
_ALIASES: dict[str, str] = {
    "ernie-bot-4": "ERNIE-4.0-8K",
    "ernie-4.0": "ERNIE-4.0-8K",
    "ernie-bot": "ERNIE-3.5-8K",
    "ernie-3.5": "ERNIE-3.5-8K",
    "ernie-speed": "ERNIE-Speed-8K",
    "ernie speed": "ERNIE-Speed-8K",
    "eb-turbo-appbuilder": "ERNIE-Speed-AppBuilder",
    "ernie-bot-turbo-ai": "ERNIE-Speed-AppBuilder",
    "ernie-bot-turbo": "ERNIE-Lite-8K-0922",
    "ernie-lite": "ERNIE-Lite-8K-0922",
    "ernie-lite-8k-0308": "ERNIE-Lite-8K",
    "ernie-functions-8k": "ERNIE-Function-8K",
    "ernie-character-8k": "ERNIE-Character-8K",
}

MODELS: Mapping[str, ModelInfo] = MappingProxyType({m.name: m for m in _MODELS})
"""Every known model, by canonical name."""

_BY_KEY: dict[str, ModelInfo] = {}
for _info in _MODELS:
    _BY_KEY[_info.name.lower()] = _info
    _BY_KEY.setdefault(_info.v2_name, _info)
for _alias, _target in _ALIASES.items():
    _BY_KEY[_alias] = MODELS[_target]
_BY_ENDPOINT: dict[str, ModelInfo] = {m.endpoint: m for m in _MODELS}

ENDPOINTS: frozenset[str] = frozenset(_BY_ENDPOINT)
"""Every known v1 endpoint name."""

DEFAULT_MODEL = "ERNIE-Lite-8K"
"""The default chat model (as in the qianfan SDK)."""


def find_model(name: str) -> ModelInfo | None:
    """Return the model known by ``name`` (canonical, v2 or alias; any case), or None."""
    return _BY_KEY.get(name.strip().lower())


def model_for_endpoint(endpoint: str) -> ModelInfo | None:
    """Return the model served at v1 endpoint ``endpoint``, or None for an unknown endpoint."""
    return _BY_ENDPOINT.get(endpoint)
