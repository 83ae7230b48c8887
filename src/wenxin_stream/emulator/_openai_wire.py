"""What a self-hosted ERNIE 4.5 server says, as vLLM or FastDeploy says it: pure shapes.

``shared/ERNIE-CURRENT.md`` §7. The route (``_openai``) plans an answer with the v2 machinery
and renders it as v2 would; :func:`adapt` then turns each v2 object (a stream chunk or the
whole ``chat.completion``) into the flavour's:

=========================  =================================  ==================================
                           vLLM                               FastDeploy
=========================  =================================  ==================================
reasoning field            ``reasoning`` (current vLLM)       ``reasoning_content``
every choice               ``logprobs: null``; ``stop_reason:  ``arrival_time`` (stream), the
                           null`` with the finish             first delta ``content: ""`` and
                                                              ``reasoning_content: ""``
usage                      as asked (``include_usage``)       also ``prompt_tokens_details``
                                                              and ``completion_tokens_details.
                                                              reasoning_tokens``
errors                     flat ``{"object": "error",         ``{"error": {"message", "type",
                           "message", "type", "param",        "param", "code"}}``, ``code`` a
                           "code": 400}``; in a stream        string (``context_length_exceeded``)
                           nested under ``error``             or null; in a stream type
                                                              ``internal_error``
missing / wrong API key    401 ``{"error": "Unauthorized"}``  401 in its error shape
after an error in a        ``data: [DONE]``                   ``data: [DONE]``
stream
=========================  =================================  ==================================

Both drop what only Qianfan sends: ``flag`` / ``ban_round``, ``search_results``, ``delta_tag``;
``finish_reason`` ``normal`` is ``stop``; ids are ``chatcmpl-…``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

__all__ = [
    "DEFAULT_MODELS",
    "Flavour",
    "adapt",
    "auth_error",
    "error_body",
    "models_body",
    "stream_error_body",
]

Flavour = Literal["vllm", "fastdeploy"]

DEFAULT_MODELS: dict[str, str] = {
    "vllm": "baidu/ERNIE-4.5-21B-A3B-PT",
    "fastdeploy": "baidu/ERNIE-4.5-21B-A3B-Paddle",
}
"""The model each flavour serves unless configured (the Hugging Face ids of ``§7.1``)."""

_VLLM_TYPES = {
    400: "BadRequestError",
    401: "Unauthorized",
    404: "NotFoundError",
    405: "BadRequestError",
    413: "BadRequestError",
    429: "RateLimitError",
    503: "ServiceUnavailableError",
}
_FASTDEPLOY_TYPES = {429: "rate_limit_error", 408: "timeout_error", 504: "timeout_error"}
_QIANFAN_ONLY_CHOICE = ("flag", "ban_round", "delta_tag")


def _vllm_type(status: int) -> str:
    return _VLLM_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")


def _fastdeploy_type(status: int) -> str:
    if status in _FASTDEPLOY_TYPES:
        return _FASTDEPLOY_TYPES[status]
    return "internal_error" if status >= 500 else "invalid_request_error"


def error_body(
    flavour: Flavour,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """The flavour's error object for an answer with HTTP ``status`` (``code``: FastDeploy's
    ``ErrorCode`` string, e.g. ``context_length_exceeded``; vLLM repeats the status)."""
    if flavour == "vllm":
        return {
            "object": "error",
            "message": message,
            "type": _vllm_type(status),
            "param": param,
            "code": status,
        }
    error = {"message": message, "type": _fastdeploy_type(status), "param": param, "code": code}
    return {"error": error}


def stream_error_body(flavour: Flavour, status: int, message: str) -> dict[str, Any]:
    """The error a stream carries after it began (HTTP 200 already sent)."""
    if flavour == "vllm":
        return {"error": error_body("vllm", status, message)}
    error = {"message": message, "type": _fastdeploy_type(status), "param": None, "code": None}
    return {"error": error}


def auth_error(flavour: Flavour) -> dict[str, Any]:
    """The 401 body for a missing or wrong API key."""
    if flavour == "vllm":
        return {"error": "Unauthorized"}
    return error_body("fastdeploy", 401, "Invalid API key", code="invalid_api_key")


def models_body(flavour: Flavour, model: str, max_model_len: int, created: int) -> dict[str, Any]:
    """``GET /v1/models``: the one model served."""
    entry: dict[str, Any] = {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "vllm" if flavour == "vllm" else "FastDeploy",
        "root": model,
        "parent": None,
        "max_model_len": max_model_len,
    }
    return {"object": "list", "data": [entry]}


def _adapt_part(flavour: Flavour, part: dict[str, Any]) -> None:
    part.pop("delta_tag", None)
    if flavour == "vllm" and "reasoning_content" in part:
        part["reasoning"] = part.pop("reasoning_content")


def adapt(
    flavour: Flavour, obj: dict[str, Any], *, stream: bool, first: bool = False
) -> dict[str, Any]:
    """Turn a v2 chunk (``stream``; ``first`` of its stream) or ``chat.completion`` into the
    flavour's (in place; returned for convenience)."""
    obj.pop("search_results", None)
    choices = obj.get("choices") or ()
    for choice in choices:
        for key in _QIANFAN_ONLY_CHOICE:
            choice.pop(key, None)
        if choice.get("finish_reason") == "normal":
            choice["finish_reason"] = "stop"
        part = choice.get("delta" if stream else "message")
        if isinstance(part, dict):
            _adapt_part(flavour, part)
            if flavour == "fastdeploy" and stream and first:
                part.setdefault("content", "")
                part.setdefault("reasoning_content", "")
        if flavour == "vllm":
            choice.setdefault("logprobs", None)
            if choice.get("finish_reason") is not None:
                choice["stop_reason"] = None
        elif stream:
            choice["arrival_time"] = round(time.time(), 6)
    usage = obj.get("usage")
    if flavour == "fastdeploy" and isinstance(usage, dict):
        usage.setdefault("prompt_tokens_details", {"cached_tokens": 0})
        usage.setdefault("completion_tokens_details", {"reasoning_tokens": 0})
    return obj
