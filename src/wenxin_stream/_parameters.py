"""The v2 request fields ERNIE takes today, and what a model of the catalogue can honour.

Pure checks shared by the SDK (before sending: a problem is an
:class:`~wenxin_stream.InvalidRequestError` naming the field) and the emulator (a problem is a
400 ``invalid_argument``, as Baidu answers). Sources: ``shared/ERNIE-CURRENT.md`` §2.3–2.4
(thinking), §3.1 (tools), §4.1 (web search), §6.1 (the other fields).

Theory of operation
===================

:func:`check_v2_params` checks the shape and range of every field it knows, whatever the model:
``max_tokens`` / ``max_completion_tokens``, ``stop`` (at most 4 of at most 20 characters),
``seed`` in (0, 2³¹−1), ``user``, ``metadata`` (at most 16 string pairs), ``response_format``
(``text`` / ``json_object`` / ``json_schema`` with its ``json_schema.schema``),
``stream_options``, ``penalty_score`` in [1, 2], ``tools`` (function tools with a valid name),
``tool_choice`` and ``parallel_tool_calls`` (only with ``tools``; a forced function must be one
of them), ``web_search`` (booleans, ``search_mode``, both spellings of the two counts, 1–28),
the thinking controls (``enable_thinking``, ``thinking_budget`` ≥ 100, ``reasoning_effort``,
``thinking_strategy``) and ``logprobs`` / ``top_logprobs``. Fields it does not know pass:
Baidu adds fields over time.

:func:`check_capabilities` then asks the model's :class:`~wenxin_stream._models.ModelSpec`
whether it can honour what was asked. A capability the catalogue marks unknown passes; one it
marks missing is a problem naming the field — a request is never quietly answered without what
it asked for. The rules:

* ``tools`` (and so ``tool_choice``…) need ``tools``; ``web_search.enable`` needs ``search``,
  and ERNIE models never take ``search_mode: "required"``; image parts need ``vision``;
* a model that never thinks refuses ``enable_thinking: true``, ``thinking_budget``,
  ``reasoning_effort`` and ``thinking_strategy``; one that always thinks refuses
  ``enable_thinking: false``; a model that thinks (for this request) refuses ``logprobs`` and
  ``top_logprobs``, and ignores ``temperature``, ``top_p`` and the two OpenAI penalties as
  Baidu does (they pass);
* ``max_tokens`` / ``max_completion_tokens`` at most the model's ``max_output``;
* the fields of its ``unsupported`` list (X1 Turbo: ``stop``, ``seed``, ``penalty_score``,
  ``response_format``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from ._models import ModelSpec
from ._validation import PARAMS_ERROR_CODE, Problem, check_stop, image_parts

__all__ = [
    "MAX_SEED",
    "MIN_THINKING_BUDGET",
    "REASONING_IGNORED",
    "check_capabilities",
    "check_openai_params",
    "check_v2_params",
    "search_field",
    "thinking_requested",
]

MIN_THINKING_BUDGET = 100
"""The smallest ``thinking_budget`` Baidu accepts."""

MAX_SEED = 2_147_483_647
"""``seed`` must be in (0, MAX_SEED)."""

MAX_METADATA = 16
"""At most this many ``metadata`` pairs."""

REASONING_IGNORED = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
"""Fields reasoning models accept and ignore (Baidu answers without an error)."""

_REASONING_REJECTED = ("logprobs", "top_logprobs")
_THINKING_FIELDS = ("thinking_budget", "reasoning_effort", "thinking_strategy")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RESPONSE_TYPES = ("text", "json_object", "json_schema")
_EFFORTS = ("low", "medium", "high")
_STRATEGIES = ("short_think", "chain_of_draft")
_SEARCH_FLAGS = ("enable", "enable_citation", "enable_trace", "enable_status")
_SEARCH_COUNTS = (("search_number", "search_num"), ("reference_number", "reference_num"))
_SEARCH_MAX = 28


def _problem(field: str, message: str) -> Problem:
    return Problem(field, message, PARAMS_ERROR_CODE, "invalid_argument")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_bools(body: Mapping[str, Any], keys: Sequence[str], prefix: str = "") -> Problem | None:
    for key in keys:
        if key in body and body[key] is not None and not isinstance(body[key], bool):
            return _problem(prefix + key, f"{prefix + key} must be a boolean")
    return None


def _check_tokens(body: Mapping[str, Any]) -> Problem | None:
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            return _problem(key, f"{key} must be a positive integer")
    return None


def _check_plain(body: Mapping[str, Any]) -> Problem | None:
    """seed, user, metadata, penalty_score, stream_options, logprobs."""
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 < seed < MAX_SEED):
        return _problem("seed", f"seed must be an integer in (0, {MAX_SEED})")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        return _problem("user", "user must be a string")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            return _problem("metadata", "metadata must map strings to strings")
        if len(metadata) > MAX_METADATA:
            return _problem("metadata", f"metadata holds at most {MAX_METADATA} pairs")
    penalty = body.get("penalty_score")
    if penalty is not None and (
        isinstance(penalty, bool)
        or not isinstance(penalty, int | float)
        or not math.isfinite(penalty)
        or not 1 <= penalty <= 2
    ):
        return _problem("penalty_score", "penalty_score must be in range [1, 2]")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, Mapping):
            return _problem("stream_options", "stream_options must be an object")
        problem = _check_bools(
            options, ("include_usage", "chunk_include_usage"), prefix="stream_options."
        )
        if problem is not None:
            return problem
    problem = _check_bools(body, ("logprobs", "enable_thinking", "parallel_tool_calls"))
    if problem is not None:
        return problem
    top = body.get("top_logprobs")
    if top is not None and (not _is_int(top) or not 0 <= top <= 20):
        return _problem("top_logprobs", "top_logprobs must be an integer in [0, 20]")
    return None


def _check_response_format(value: object) -> Problem | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or value.get("type") not in _RESPONSE_TYPES:
        return _problem(
            "response_format",
            'response_format must be {"type": "text" | "json_object" | "json_schema"}',
        )
    if value["type"] == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, Mapping) or not isinstance(schema.get("schema"), Mapping):
            return _problem(
                "response_format.json_schema",
                'a json_schema response format needs "json_schema": {"name", "schema": {…}}',
            )
    return None


def _tool_names(tools: object) -> tuple[list[str], Problem | None]:
    if not isinstance(tools, list) or not tools:
        return [], _problem("tools", "tools must be a non-empty list of function tools")
    names: list[str] = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(function, Mapping)
        ):
            return names, _problem(
                f"tools[{index}]", 'each tool must be {"type": "function", "function": {…}}'
            )
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            return names, _problem(
                f"tools[{index}].function.name",
                "a tool name must be 1-64 letters, digits, '_' or '-'",
            )
        if name in names:
            return names, _problem(f"tools[{index}].function.name", f"tool {name!r} twice")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            return names, _problem(
                f"tools[{index}].function.description", "description must be a string"
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            return names, _problem(
                f"tools[{index}].function.parameters", "parameters must be a JSON Schema object"
            )
        names.append(name)
    return names, None


def _check_tools(body: Mapping[str, Any]) -> Problem | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        for key in ("tool_choice", "parallel_tool_calls"):
            if body.get(key) is not None:
                return _problem(key, f"{key} is only allowed together with tools")
        return None
    names, problem = _tool_names(tools)
    if problem is not None or choice is None:
        return problem
    if choice in ("none", "auto", "required"):
        return None
    function = choice.get("function") if isinstance(choice, Mapping) else None
    if (
        not isinstance(choice, Mapping)
        or choice.get("type") != "function"
        or not isinstance(function, Mapping)
    ):
        return _problem(
            "tool_choice",
            'tool_choice must be "none", "auto", "required" or '
            '{"type": "function", "function": {"name": …}}',
        )
    if function.get("name") not in names:
        return _problem(
            "tool_choice", f"tool_choice names {function.get('name')!r}, which is not in tools"
        )
    return None


def search_field(search: Mapping[str, Any], name: str, legacy: str) -> object:
    """A ``web_search`` count under either of its spellings (the 2025 page's ``search_number``
    or the earlier ``search_num``)."""
    return search.get(name, search.get(legacy))


def _check_search(value: object) -> Problem | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return _problem("web_search", "web_search must be an object")
    problem = _check_bools(value, _SEARCH_FLAGS, prefix="web_search.")
    if problem is not None:
        return problem
    mode = value.get("search_mode")
    if mode is not None and mode not in ("auto", "required"):
        return _problem("web_search.search_mode", 'search_mode must be "auto" or "required"')
    for name, legacy in _SEARCH_COUNTS:
        if name in value and legacy in value:
            return _problem(
                f"web_search.{name}", f"{name} and {legacy} are the same field; give one"
            )
        count = search_field(value, name, legacy)
        if count is not None and (not _is_int(count) or not 1 <= count <= _SEARCH_MAX):
            return _problem(f"web_search.{name}", f"{name} must be in [1, {_SEARCH_MAX}]")
    return None


def _check_thinking(body: Mapping[str, Any]) -> Problem | None:
    budget = body.get("thinking_budget")
    if budget is not None and (not _is_int(budget) or budget < MIN_THINKING_BUDGET):
        return _problem(
            "thinking_budget",
            f"thinking_budget must be an integer of at least {MIN_THINKING_BUDGET}",
        )
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in _EFFORTS:
        return _problem("reasoning_effort", "reasoning_effort must be low, medium or high")
    strategy = body.get("thinking_strategy")
    if strategy is not None and strategy not in _STRATEGIES:
        return _problem(
            "thinking_strategy", "thinking_strategy must be short_think or chain_of_draft"
        )
    return None


def check_v2_params(body: Mapping[str, Any]) -> Problem | None:
    """The first problem with the shape or range of a v2 request's fields, or None (see the
    module docstring; the messages are checked by ``_validation.check_v2_messages``)."""
    for check in (
        _check_tokens,
        _check_plain,
        _check_tools,
        _check_thinking,
    ):
        problem = check(body)
        if problem is not None:
            return problem
    return (
        check_stop(body.get("stop"))
        or _check_response_format(body.get("response_format"))
        or _check_search(body.get("web_search"))
    )


def check_openai_params(body: Mapping[str, Any]) -> Problem | None:
    """The first problem with the shape of a request to an OpenAI-compatible server, or None.

    Only OpenAI's own rules: token counts, booleans, ``stream_options``, tools and
    ``response_format``. Qianfan's limits (four 20-character stop words, the seed range,
    ``top_logprobs`` ≤ 20) are not those servers' and are left to them."""
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        return _problem("stream_options", "stream_options must be an object")
    return (
        _check_tokens(body)
        or _check_bools(body, ("logprobs", "parallel_tool_calls"))
        or (_check_bools(options, ("include_usage",), "stream_options.") if options else None)
        or _check_tools(body)
        or _check_response_format(body.get("response_format"))
    )


def thinking_requested(body: Mapping[str, Any]) -> bool | None:
    """The request's ``enable_thinking`` (``None`` when not sent or not a boolean)."""
    value = body.get("enable_thinking")
    return value if isinstance(value, bool) else None


def _named(spec: ModelSpec) -> str:
    return f"model {spec.id!r}"


def _check_switches(body: Mapping[str, Any], spec: ModelSpec) -> Problem | None:
    """The thinking controls ``spec``'s model does not take."""
    enable = thinking_requested(body)
    if spec.reasoning == "none":
        if enable:
            return _problem("enable_thinking", f"{_named(spec)} does not think")
        for key in _THINKING_FIELDS:
            if body.get(key) is not None:
                return _problem(key, f"{_named(spec)} does not think, so it takes no {key}")
    elif spec.reasoning == "always" and enable is False:
        return _problem(
            "enable_thinking", f"{_named(spec)} always thinks; enable_thinking=false cannot stop it"
        )
    return None


def _check_thinking_fields(
    body: Mapping[str, Any], spec: ModelSpec, switches: bool
) -> Problem | None:
    if switches:
        problem = _check_switches(body, spec)
        if problem is not None:
            return problem
    if spec.thinks(thinking_requested(body)):
        for key in _REASONING_REJECTED:
            if body.get(key) is not None:
                return _problem(key, f"reasoning models reject {key} ({_named(spec)} thinks)")
    return None


def check_capabilities(
    body: Mapping[str, Any], spec: ModelSpec, *, thinking_switches: bool = True
) -> Problem | None:
    """The first field of a (shape-checked) v2 request that ``spec``'s model cannot honour, or
    None (see the module docstring). With ``thinking_switches`` false, the thinking controls a
    model does not take pass (Baidu switches only hybrid models and ignores the rest: the
    emulator's view; the SDK refuses them, since they would be ignored)."""
    if spec.tools is False and body.get("tools") is not None:
        return _problem("tools", f"{_named(spec)} does not support function calling (tools)")
    search = body.get("web_search")
    if isinstance(search, Mapping):
        if search.get("enable") and spec.search is False:
            return _problem("web_search", f"{_named(spec)} does not support web search")
        if search.get("search_mode") == "required":
            return _problem(
                "web_search.search_mode",
                'ERNIE models do not support forced search (search_mode "required")',
            )
    if spec.vision is False:
        messages = body.get("messages")
        if isinstance(messages, list):
            for index, position, _ in image_parts(messages):
                return Problem(
                    f"messages[{index}].content[{position}]",
                    f"{_named(spec)} does not take images (use a vision model)",
                    PARAMS_ERROR_CODE,
                    "invalid_messages",
                )
    problem = _check_thinking_fields(body, spec, thinking_switches)
    if problem is not None:
        return problem
    if spec.max_output is not None:
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if _is_int(value) and value > spec.max_output:
                return _problem(key, f"{key} must be at most {spec.max_output} for {_named(spec)}")
    for key in sorted(spec.unsupported):
        if body.get(key) is not None:
            return _problem(key, f"{_named(spec)} does not support {key}")
    return None
