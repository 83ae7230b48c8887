"""The model catalogue as the server shows it: ``/v1/models``, ``/v1/models/{id}``, ``/api/models``.

Theory of operation
===================

Every list the server answers is read from the one catalogue (``wenxin_stream._models``, data
in ``_models.toml``), never from a table of its own, and the day is Baidu's (Beijing time):
a model is *retired* from its retirement date on, as the emulator's roster counts it.

* :func:`openai_models` — ``GET /v1/models``: on v2, every live id and alias, each an OpenAI
  model object with the catalogue's facts as extra fields (``context_window``,
  ``max_output_tokens``, ``capabilities``, ``reasoning``, and ``alias_of`` for an alias); on
  v1, the v1 view's model names.
* :func:`openai_model` — ``GET /v1/models/{id}``: one id or alias (any case) as above; a
  retired one is answered as Baidu answers a request for it, 403 ``model_offline`` "The
  model is offline"; one the catalogue does not know 404 ``model_not_found``.
* :func:`native_models` — ``GET /api/models``, for the page's picker
  (``docs/SERVER-API.md``): every model entry (no aliases), retired ones flagged, with a
  coarse ``group`` (``current``, ``light``, ``legacy``), its ``reasoning`` mode
  (:func:`reasoning_mode`) and the configured default marked.

Capabilities the catalogue leaves unknown are not listed (a list says what is known to work).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from .._error_codes import V2_CODES
from .._models import CATALOGUE, ModelSpec, lookup_model
from ._http import HTTPError

__all__ = [
    "GROUPS",
    "baidu_today",
    "capabilities",
    "model_names",
    "native_models",
    "openai_model",
    "openai_models",
    "reasoning_mode",
]

_BEIJING = timedelta(hours=8)

GROUPS = {
    "ERNIE 5": "current",
    "ERNIE X1": "current",
    "ERNIE 4.5": "current",
    "ERNIE 4.5 open": "current",
    "ERNIE Speed": "light",
    "ERNIE Lite": "light",
    "ERNIE Tiny": "light",
    "ERNIE Character": "light",
    "ERNIE Novel": "light",
}
"""The picker's group of each catalogue family; any other family is ``legacy``."""


def baidu_today() -> date:
    """Today in Beijing (retirements take effect on Baidu's day)."""
    return (datetime.now(UTC) + _BEIJING).date()


def capabilities(spec: ModelSpec) -> list[str]:
    """What the model is known to do: ``reasoning``, ``tools``, ``search``, ``vision``."""
    known = [
        ("reasoning", spec.reasoning != "none"),
        ("tools", spec.tools is True),
        ("search", spec.search is True),
        ("vision", spec.vision is True),
    ]
    return [name for name, has in known if has]


def reasoning_mode(spec: ModelSpec) -> str | None:
    """How the model thinks, for a client's thinking switch: ``"hybrid"`` (it takes
    ``enable_thinking`` either way), ``"always"`` (it always thinks and ignores the switch) or
    ``None`` (it does not think)."""
    return None if spec.reasoning == "none" else spec.reasoning


def model_names(api: str, today: date) -> list[str]:
    """The model names served: v1 names, or every live v2 id and alias."""
    if api == "v1":
        return list(CATALOGUE.v1_models)
    return CATALOGUE.v2_ids(today)


def _openai_object(asked: str, spec: ModelSpec) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": asked,
        "object": "model",
        "created": 0,
        "owned_by": "baidu",
        "name": spec.name,
        "family": spec.family,
        "context_window": spec.context,
        "max_output_tokens": spec.max_output,
        "capabilities": capabilities(spec),
        "reasoning": spec.reasoning,
    }
    if asked != spec.id:
        data["alias_of"] = spec.id
    return data


def openai_models(api: str, today: date) -> dict[str, Any]:
    """The body of ``GET /v1/models``."""
    if api == "v1":
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "baidu"}
            for name in CATALOGUE.v1_models
        ]
    else:
        data = []
        for name in CATALOGUE.v2_ids(today):
            spec = lookup_model(name)
            if spec is not None:
                data.append(_openai_object(name, spec))
    return {"object": "list", "data": data}


def served_models(names: list[str]) -> dict[str, Any]:
    """The body of ``GET /v1/models`` with channels: the public names the channels serve,
    with the catalogue's facts for those it knows (a self-hosted model it does not know is
    listed with its id alone, ``owned_by`` ``wenxin-gateway``)."""
    data = []
    for name in names:
        spec = lookup_model(name)
        if spec is not None:
            data.append(_openai_object(name, spec))
        else:
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "wenxin-gateway"})
    return {"object": "list", "data": data}


def openai_model(name: str, today: date) -> dict[str, Any]:
    """The body of ``GET /v1/models/{name}``.

    Raises:
        HTTPError: 403 ``model_offline`` for a retired model, 404 ``model_not_found`` for
            one the catalogue does not know.
    """
    spec = lookup_model(name)
    if spec is None:
        raise HTTPError(404, "model_not_found", f"the model {name!r} does not exist", param="model")
    if spec.is_retired(today):
        offline = V2_CODES["model_offline"]
        raise HTTPError(
            offline.status,
            offline.code,
            f"{offline.message} ({spec.id} was retired on {spec.retired_on})",
            param="model",
        )
    return _openai_object(name.strip().lower(), spec)


def native_models(api: str, default: str, today: date) -> dict[str, Any]:
    """The body of ``GET /api/models``."""
    default_spec = lookup_model(default)
    models = []
    for spec in CATALOGUE.models:
        if api == "v1":
            if spec.v1 is None:
                continue
            ident = spec.v1.name
        elif spec.v2:
            ident = spec.id
        else:
            continue
        models.append(
            {
                "id": ident,
                "name": spec.name,
                "family": spec.family,
                "group": GROUPS.get(spec.family, "legacy"),
                "context_window": spec.context,
                "max_output_tokens": spec.max_output,
                "capabilities": capabilities(spec),
                "reasoning": reasoning_mode(spec),
                "default": spec is default_spec or ident == default,
                "retired": spec.is_retired(today),
            }
        )
    return {"models": models}
