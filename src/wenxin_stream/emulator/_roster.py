"""The models the emulator's v2 route serves: resolving a request's ``model``, and ``/v2/models``.

Theory of operation
===================

The roster is ``EmulatorConfig.roster`` (the built-in catalogue, or a roster file laid over it),
narrowed to ``v2_models`` when that allow-list is set. :func:`resolve` answers a ``model`` id
the way Baidu does (``shared/ERNIE-CURRENT.md`` §6.3, §8) and as ``wenxin_stream._models``
documents for every layer:

* an id (or alias, any case) of the roster that is live today → its entry;
* one past its retirement date (``clock``, read as Beijing time) → 403 ``model_offline`` "The
  model is offline" (``retired_models="invalid"``: 401 ``invalid_model``; ``"serve"``: served);
* any other id → 401 ``invalid_model`` "The model does not exist or you do not have access to
  it." (``unknown_models="accept"``: served as a plain text model that knows nothing else).

The entry is then made *effective* (:func:`effective`): a capability the catalogue leaves
unknown becomes ``unknown_capability`` (default: supported), so what the emulator does with a
request never depends on an unknown.

``GET /v2/models`` (:func:`list_models`) lists the live ids and aliases in Baidu's shape; it
needs credentials like any v2 call, and without them answers like Baidu's gateway: 403
``{"code": "AccessDenied", "message": "Access denied."}`` without the ``error`` wrapper.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .._asgi import Request, Send, send_json
from .._error_codes import V2_CODES
from .._models import ModelSpec
from ._auth import SignatureRequest
from ._chat import Shared
from ._config import EmulatorConfig

__all__ = ["Resolved", "effective", "list_models", "resolve", "today"]

_BEIJING = timedelta(hours=8)


def today(config: EmulatorConfig) -> date:
    """The date in Beijing by the emulator's clock (retirements take effect on Baidu's day)."""
    return (datetime.fromtimestamp(config.clock(), UTC) + _BEIJING).date()


@dataclass(frozen=True, slots=True)
class Resolved:
    """A resolved ``model``: the (effective) ``spec`` to serve, or the ``error`` to answer:
    (HTTP status, code, message, type)."""

    spec: ModelSpec | None
    error: tuple[int, str, str, str] | None = None


def _error(code: str) -> tuple[int, str, str, str]:
    known = V2_CODES[code]
    return known.status, known.code, known.message, known.type


def effective(spec: ModelSpec, config: EmulatorConfig) -> ModelSpec:
    """``spec`` with its unknown capabilities set to ``config.unknown_capability``."""
    if None not in (spec.tools, spec.search, spec.vision):
        return spec
    default = config.unknown_capability
    return dataclasses.replace(
        spec,
        tools=default if spec.tools is None else spec.tools,
        search=default if spec.search is None else spec.search,
        vision=default if spec.vision is None else spec.vision,
    )


def _allowed(config: EmulatorConfig, model: str) -> bool:
    allowed = config.v2_models
    return allowed is None or model in allowed or model.strip().lower() in allowed


def resolve(config: EmulatorConfig, model: str) -> Resolved:
    """How the v2 route answers a request for ``model`` (see the module docstring)."""
    if not _allowed(config, model):
        return Resolved(None, _error("invalid_model"))
    spec = config.roster.lookup(model)
    if spec is None:
        if config.unknown_models == "reject" and config.v2_models is None:
            return Resolved(None, _error("invalid_model"))
        spec = ModelSpec(id=model, name=model, family="unknown")
    elif spec.is_retired(today(config)) and config.retired_models != "serve":
        code = "model_offline" if config.retired_models == "offline" else "invalid_model"
        return Resolved(None, _error(code))
    return Resolved(effective(spec, config))


async def list_models(shared: Shared, request: Request, send: Send) -> None:
    """``GET /v2/models`` (see the module docstring)."""
    signed = SignatureRequest(request.method, request.path, request.query, request.headers)
    if not shared.auth.check_v2(signed).ok:
        await send_json(send, 403, {"code": "AccessDenied", "message": "Access denied."})
        return
    config = shared.config
    ids = config.roster.v2_ids(today(config))
    if config.v2_models is not None:
        ids = [i for i in ids if i in config.v2_models]
        ids += sorted(config.v2_models - set(ids) - set(config.roster.v2_ids()))
    data = [{"id": i, "object": "model", "owned_by": "", "created": 0} for i in ids]
    await send_json(send, 200, {"object": "list", "data": data})
