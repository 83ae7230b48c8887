"""One request, two API generations: the fields v1 and v2 name differently, mapped both ways.

The SDK takes one set of parameters (``_requests.CHAT_PARAMETERS``) for both generations, so
one call works on either. Where the other generation has the same thing under another name or
shape, it is translated here; where it has nothing that could honour the field, the request is
refused with an :class:`~wenxin_stream.InvalidRequestError` naming the field — never sent to be
silently ignored (Baidu ignores fields it does not know). Pure functions of dicts; no I/O.

=============================  ===================================  ===========================
v2 (OpenAI-style)              v1 (wenxinworkshop)                  notes
=============================  ===================================  ===========================
``user``                       ``user_id``                          both ways
``max_tokens`` / ``max_com…``  ``max_output_tokens``                ``_requests`` aliases them
``web_search``                 ``disable_search``,                  ``enable`` / citation /
                               ``enable_citation``, ``enable_trace``  trace only, both ways
``tools`` (function tools)     ``functions``                        3.5 / 4.0 families; other
                                                                    v1 models take ``tools``
``tool_choice`` forced         ``tool_choice`` forced (same shape)  ``auto`` is the default
``role: tool`` + id            ``role: function`` + ``name``        from the call answered
assistant ``tool_calls``       assistant ``function_call``          one call per turn in v1
``response_format`` object     ``response_format`` string           no ``json_schema`` in v1
=============================  ===================================  ===========================

An OpenAI-compatible server (``api="openai"``: vLLM, FastDeploy, SGLang serving ERNIE 4.5 —
``shared/ERNIE-CURRENT.md`` §7) takes v2's fields, after :func:`to_v2`, with these changes
(:func:`to_openai`): ``enable_thinking`` moves into ``chat_template_kwargs`` (the chat template
switches thinking there; an explicit ``chat_template_kwargs`` in ``extra_body`` still wins);
refused, each with its reason: ``web_search`` (and v1's search switches: no search there),
``penalty_score`` (use ``repetition_penalty``), ``metadata`` (FastDeploy merges its keys into
the request as engine parameters: Qianfan's log tags must not reach it), ``thinking_budget``
(vLLM has no budget; FastDeploy's is ``reasoning_max_tokens``, sent through ``extra_body``) and
``thinking_strategy`` (Qianfan's only).

Refused on v1 (nothing there honours them): ``seed``, ``metadata``, ``enable_thinking``,
``thinking_budget``, ``thinking_strategy``, ``reasoning_effort``, ``repetition_penalty``,
``stream_options``, ``logprobs``, ``top_logprobs``, ``parallel_tool_calls: true``,
``include_usage: false`` (v1 always reports usage). Refused on v2: ``min_output_tokens``,
``user_setting``, ``enable_system_memory``, ``system_memory_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from ._exceptions import InvalidRequestError
from ._models import ModelInfo
from ._validation import MESSAGES_ERROR_CODE, PARAMS_ERROR_CODE, Problem

__all__ = ["OPENAI_REFUSED", "V1_ONLY", "V2_ONLY", "to_openai", "to_v1", "to_v2"]

V2_ONLY = (
    "seed",
    "metadata",
    "enable_thinking",
    "thinking_budget",
    "thinking_strategy",
    "reasoning_effort",
    "repetition_penalty",
    "stream_options",
    "logprobs",
    "top_logprobs",
)
"""Parameters only v2 honours (refused on v1)."""

V1_ONLY = ("min_output_tokens", "user_setting", "enable_system_memory", "system_memory_id")
"""Parameters only v1 honours (refused on v2)."""

_V1_SEARCH = ("disable_search", "enable_citation", "enable_trace")


def _fail(field: str, message: str, *, messages: bool = False) -> NoReturn:
    code = MESSAGES_ERROR_CODE if messages else PARAMS_ERROR_CODE
    kind = "invalid_messages" if messages else "invalid_argument"
    raise InvalidRequestError(Problem(field, message, code, kind))


def _rename(params: dict[str, Any], source: str, target: str) -> None:
    if source in params:
        if target in params:
            _fail(source, f"{source} and {target} are the same parameter; pass only one")
        params[target] = params.pop(source)


# --- v2 → v1 ---------------------------------------------------------------------------------


def _search_to_v1(params: dict[str, Any]) -> None:
    search = params.pop("web_search", None)
    if search is None:
        return
    if not isinstance(search, Mapping):
        _fail("web_search", "web_search must be an object")
    for key in search:
        if key not in ("enable", "enable_citation", "enable_trace"):
            _fail(f"web_search.{key}", f"v1 has no web_search.{key} (only enable, citation, trace)")
    mapped = {
        "disable_search": not search["enable"] if "enable" in search else None,
        "enable_citation": search.get("enable_citation"),
        "enable_trace": search.get("enable_trace"),
    }
    for key, value in mapped.items():
        if value is None:
            continue
        if key in params and params[key] != value:
            _fail("web_search", f"web_search and {key} disagree; pass one of them")
        params[key] = value


def _function_of(tool: object, index: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if (
        not isinstance(tool, Mapping)
        or tool.get("type") != "function"
        or not isinstance(function, Mapping)
    ):
        _fail(f"tools[{index}]", 'each tool must be {"type": "function", "function": {…}}')
    return dict(function)


def _tools_to_v1(params: dict[str, Any], info: ModelInfo | None) -> None:
    parallel = params.pop("parallel_tool_calls", None)
    if parallel is True:
        _fail("parallel_tool_calls", "v1 returns at most one function call per answer")
    if "tools" not in params or info is None or not info.functions:
        return  # other v1 models take `tools` as it is
    if "functions" in params:
        _fail("tools", "tools and functions are the same parameter on v1; pass only one")
    tools = params.pop("tools")
    if not isinstance(tools, list):
        _fail("tools", "tools must be a list of function tools")
    params["functions"] = [_function_of(tool, index) for index, tool in enumerate(tools)]
    choice = params.get("tool_choice")
    if choice == "auto":
        del params["tool_choice"]
    elif isinstance(choice, str):
        _fail("tool_choice", f'v1 cannot honour tool_choice "{choice}" (only a forced function)')


def _messages_to_v1(messages: list[Any]) -> None:
    """Assistant ``tool_calls`` → ``function_call``; ``tool`` results → ``function`` messages
    named after the call they answer (in place)."""
    names: dict[str, str] = {}
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if calls is not None:
            if not isinstance(calls, list) or len(calls) != 1:
                problem = f"message {index}: v1 takes one function call per turn"
                _fail("messages", problem, messages=True)
            call: Mapping[str, Any] = calls[0] if isinstance(calls[0], Mapping) else {}
            found = call.get("function")
            function: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
            name, arguments = function.get("name"), function.get("arguments", "")
            if not isinstance(name, str):
                _fail("messages", f"message {index}: the tool call has no name", messages=True)
            names[str(call.get("id"))] = name
            del message["tool_calls"]
            message["function_call"] = {"name": name, "arguments": arguments}
            message["content"] = message.get("content") or ""
        elif message.get("role") == "tool":
            name = message.get("name") or names.get(str(message.get("tool_call_id")))
            if not isinstance(name, str) or not name:
                _fail(
                    "messages",
                    f"message {index}: a tool result needs the name of its function on v1",
                    messages=True,
                )
            message.pop("tool_call_id", None)
            message.update(role="function", name=name)


def to_v1(params: dict[str, Any], messages: list[Any], info: ModelInfo | None) -> None:
    """Rewrite v2-style ``params`` and ``messages`` for a v1 request to the model ``info``
    (``None``: a custom endpoint), in place; raises InvalidRequestError for a field v1 cannot
    honour."""
    for key in V2_ONLY:
        if key in params:
            _fail(key, f"{key} is a v2 parameter; v1 has nothing that honours it")
    if params.pop("include_usage", True) is False:
        _fail("include_usage", "v1 always reports usage at the end of the answer")
    _rename(params, "user", "user_id")
    _search_to_v1(params)
    _tools_to_v1(params, info)
    response_format = params.get("response_format")
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind not in ("text", "json_object"):
            _fail("response_format", f"v1 has no {kind!r} response format")
        params["response_format"] = kind
    _messages_to_v1(messages)


# --- v1 → v2 ---------------------------------------------------------------------------------


def to_v2(params: dict[str, Any]) -> None:
    """Rewrite v1-style ``params`` for a v2 request, in place; raises InvalidRequestError for a
    field v2 cannot honour."""
    for key in V1_ONLY:
        if key in params:
            _fail(key, f"{key} is a v1 parameter; v2 has nothing that honours it")
    _rename(params, "user_id", "user")
    if "functions" in params:
        functions = params.pop("functions")
        if "tools" in params:
            _fail("functions", "functions and tools are the same parameter; pass only one")
        if not isinstance(functions, list):
            _fail("functions", "functions must be a list")
        params["tools"] = [{"type": "function", "function": f} for f in functions]
    given = [key for key in _V1_SEARCH if key in params]
    if given:
        if "web_search" in params:
            _fail(given[0], f"{given[0]} and web_search overlap; pass web_search only")
        search: dict[str, Any] = {}
        disable = params.pop("disable_search", None)
        if disable is not None:
            search["enable"] = not disable
        for key in ("enable_citation", "enable_trace"):
            if key in params:
                search[key] = params.pop(key)
        params["web_search"] = search
    if isinstance(params.get("response_format"), str):
        params["response_format"] = {"type": params["response_format"]}


# --- v2 → an OpenAI-compatible server ------------------------------------------------------

OPENAI_REFUSED: dict[str, str] = {
    "web_search": "OpenAI-compatible servers (vLLM, FastDeploy…) have no web search",
    "penalty_score": "penalty_score is Qianfan's; pass repetition_penalty instead",
    "metadata": (
        "metadata is Qianfan's log tags, but FastDeploy merges metadata into the request as "
        "engine parameters; pass what you mean through extra_body"
    ),
    "thinking_budget": (
        "OpenAI-compatible servers take no thinking_budget; FastDeploy's budget is "
        "extra_body={'reasoning_max_tokens': N}"
    ),
    "thinking_strategy": "thinking_strategy is Qianfan's; OpenAI-compatible servers ignore it",
}
"""The v2 fields an OpenAI-compatible server cannot honour, and why (refused by name)."""


def to_openai(params: dict[str, Any]) -> None:
    """Rewrite v2-style ``params`` (after :func:`to_v2`) for an OpenAI-compatible server, in
    place; raises InvalidRequestError for a field it cannot honour (see the module docstring)."""
    for key, reason in OPENAI_REFUSED.items():
        if key in params:
            _fail(key, reason)
    thinking = params.pop("enable_thinking", None)
    if thinking is not None:
        if not isinstance(thinking, bool):
            _fail("enable_thinking", "enable_thinking must be a boolean")
        kwargs = params.get("chat_template_kwargs")
        merged = dict(kwargs) if isinstance(kwargs, Mapping) else {}
        merged.setdefault("enable_thinking", thinking)
        params["chat_template_kwargs"] = merged
