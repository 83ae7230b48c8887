"""The body of ``POST /v1/chat/completions``, checked: which fields go to ERNIE, which are refused.

Theory of operation
===================

The server checks the *shape* of an OpenAI request here and leaves ERNIE's rules to the SDK,
which checks every request before it is sent (``_requests.build_v2_chat``: messages, content
parts, images against Baidu's limits via ``_images``, tool calls and their results, every
field's range, and what a catalogue model can honour — a field it cannot is an
:class:`~wenxin_stream.InvalidRequestError` naming it, answered 400 by the route). Nothing a
client sends is ever dropped in silence:

* :data:`FORWARDED` fields are passed to the SDK by name (it translates them for v1 or refuses
  what v1 cannot do);
* :data:`TOLERATED` fields are ones OpenAI clients commonly send with a value that asks for
  nothing we do not do (``n: 1``, ``store: false``, an empty ``logit_bias``): accepted, any
  other value refused;
* a field whose value is ``null`` is "not given" (LangChain and others serialise unset
  fields as ``null``);
* every other field is 400 ``unknown_field`` naming it.

**Messages.** Roles ``system`` (and OpenAI's ``developer``, sent as ``system``), ``user``,
``assistant`` (with ``tool_calls``) and ``tool`` (with ``tool_call_id``); ``content`` a string,
a list of ``text`` / ``image_url`` parts, or ``null`` beside ``tool_calls``. What an answer of
ours (or OpenAI's) carries when a client appends it to the history as is — its
``reasoning_content`` (never sent back: Qianfan answers 400), our ``search_results``, a null
``refusal`` / ``annotations`` / ``audio`` / ``function_call`` — is dropped; any other key is
refused.
"""

from __future__ import annotations

import math
from typing import Any

from ._http import HTTPError

__all__ = ["FORWARDED", "TOLERATED", "CompletionRequest", "parse_completion", "web_search_object"]

FORWARDED = frozenset(
    {
        "temperature", "top_p", "presence_penalty", "frequency_penalty", "penalty_score",
        "max_tokens", "max_completion_tokens", "stop", "seed", "user", "metadata",
        "response_format", "tools", "tool_choice", "parallel_tool_calls", "web_search",
        "enable_thinking", "thinking_budget", "thinking_strategy", "reasoning_effort",
        "logprobs", "top_logprobs",
    }
)  # fmt: skip
"""Request fields passed to the SDK by name."""

TOLERATED: dict[str, object] = {"n": 1, "store": False, "logit_bias": {}}
"""Fields OpenAI clients commonly send, with the one value accepted (it asks for nothing
more than what is done anyway)."""

_ROUTED = frozenset({"model", "messages", "stream", "stream_options"})
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool"}  # fmt: skip
_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
_ECHOED = frozenset({"reasoning_content", "reasoning", "search_results"})
_EMPTY_ECHOES = frozenset({"refusal", "annotations", "audio", "function_call"})
_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
           "frequency_penalty": (-2.0, 2.0)}  # fmt: skip


def _invalid(message: str, param: str = "messages") -> HTTPError:
    code = "invalid_messages" if param == "messages" else "invalid_field"
    return HTTPError(400, code, message, param=param)


class CompletionRequest:
    """A checked completion request: ``messages`` and ``params`` for the SDK, whether to
    stream, and whether the client wants the usage chunk."""

    __slots__ = ("include_usage", "messages", "params", "stream")

    def __init__(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        stream: bool,
        include_usage: bool,
    ) -> None:
        self.messages = messages
        self.params = params
        self.stream = stream
        self.include_usage = include_usage


def _message(index: int, message: object) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise _invalid(f"message {index} must be an object")
    name = message.get("role")
    role = _ROLES.get(name) if isinstance(name, str) else None  # a list is no dict key
    if role is None:
        raise _invalid(f"message {index}: unsupported role {name!r}")
    out: dict[str, Any] = {"role": role}
    for key, value in message.items():
        if key in _MESSAGE_KEYS:
            if key != "role" and (value is not None or key == "content"):
                out[key] = value
        elif key in _ECHOED or (key in _EMPTY_ECHOES and not value):
            continue  # what an answer carries, appended to the history as is
        else:
            raise _invalid(f"message {index}: unknown field {key!r}")
    content = out.get("content")
    if content is None and not out.get("tool_calls"):
        raise _invalid(f"message {index}: 'content' is required")
    if isinstance(content, str) and not content.strip() and role != "assistant":
        raise _invalid(f"message {index}: empty content")
    if content is not None and not isinstance(content, str | list):
        raise _invalid(f"message {index}: 'content' must be a string or a list of parts")
    return out


def _messages(value: object) -> list[dict[str, Any]]:
    if value is None:
        raise HTTPError(400, "missing_field", "'messages' is required", param="messages")
    if not isinstance(value, list) or not value:
        raise _invalid("'messages' must be a non-empty list")
    return [_message(index, message) for index, message in enumerate(value)]


def web_search_object(value: object) -> object:
    """``web_search`` as Baidu takes it: ``true`` / ``false`` become ``{"enable": …}``; an
    object (or anything else, for the SDK to refuse) as it is."""
    return {"enable": value} if isinstance(value, bool) else value


def _checked_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"'{name}' must be a number", name)
    low, high = _RANGES[name]
    if not low <= value <= high:
        raise _invalid(f"'{name}' must be in [{low:g}, {high:g}]", name)
    return float(value)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(f"'{name}' must be a boolean", name)
    return value


def parse_completion(body: dict[str, Any]) -> CompletionRequest:
    """The request in ``body``, checked (see the module docstring).

    Raises:
        HTTPError: 400 naming the field.
    """
    params: dict[str, Any] = {}
    for name, value in body.items():
        if value is None or name in _ROUTED:
            continue
        if name in FORWARDED:
            if name in _RANGES:
                value = _checked_number(name, value)
            elif name == "web_search":
                value = web_search_object(value)
            params[name] = value
        elif name in TOLERATED:
            if value != TOLERATED[name] or type(value) is not type(TOLERATED[name]):
                raise _invalid(
                    f"'{name}' is accepted only as {TOLERATED[name]!r}: ERNIE cannot honour "
                    "anything else",
                    name,
                )
        else:
            raise HTTPError(
                400, "unknown_field", f"unknown field {name!r}: ERNIE cannot honour it",
                param=name,
            )  # fmt: skip
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _invalid("'stream_options' is only allowed when streaming", "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _invalid(
                "'stream_options' must be an object with a boolean include_usage",
                "stream_options",
            )
        include_usage = _flag(options, "include_usage")
    return CompletionRequest(_messages(body.get("messages")), params, stream, include_usage)
