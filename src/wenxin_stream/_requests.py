"""Building ERNIE requests, both generations, as pure data: no I/O, no credentials attached.

A builder takes what the caller asked for, applies ERNIE's rules (``_validation``) and returns a
:class:`PreparedRequest` (method, path, query, JSON body) that the SDK's transport sends after
adding authentication (an ``access_token`` query parameter, a ``bce-auth-v1`` signature or a
``Bearer`` key). A request that breaks a rule raises
:class:`~wenxin_stream._exceptions.InvalidRequestError` here, before anything goes on the wire.

v1 (:func:`build_v1_chat`): the model lives in the URL. A model name (canonical, v2 spelling or
alias, any case) or a known endpoint name resolves through ``_models``; a user-deployed service
is reached only by passing its endpoint explicitly as ``endpoint=``, so a typo in a model name
is a clear local error instead of a remote "Unsupported openapi method". Leading ``system``
messages move into the ``system`` field (joined by a blank line, after an explicit ``system=``);
a system message anywhere else is an error. ``max_tokens`` and ``max_completion_tokens`` are
accepted as the OpenAI spellings of ``max_output_tokens``.

v2 (:func:`build_v2_chat`): OpenAI's shape. ``max_completion_tokens`` and ``max_output_tokens``
are accepted as spellings of ``max_tokens``; when streaming, ``stream_options.include_usage``
is on unless the caller turns it off, so streamed answers always report their usage.
``reasoning_content`` (and vLLM's ``reasoning``) is removed from every message of the history:
earlier reasoning is not sent back, and Qianfan answers 400 when it is. The request is checked
by ``_validation`` (messages, images), ``_parameters`` (every field's shape) and — when the
catalogue knows the model — against what that model can honour (``_models``,
``_parameters.check_capabilities``); an id the catalogue does not know is sent unchecked.

OpenAI-compatible servers (:func:`build_openai_chat`, ``api="openai"``): v2's body, posted to
``{base_url}/chat/completions`` (the base URL ends in ``/v1``), with the fields such a server
names differently moved (``enable_thinking`` into ``chat_template_kwargs``) and the Qianfan-only
ones refused (``_dialects.to_openai``); only OpenAI's own shape rules apply
(``_parameters.check_openai_params``), and a model id is required (the name the server serves).

All: a field the other generation names differently is translated, and a field the chosen
generation cannot honour is refused (``_dialects``); parameters the builder does not know pass
through into the body unchanged (Baidu adds fields over time); parameters whose value is
``None`` are left out (``None`` means "not given"); ``extra_body`` is merged into the body
last, as is, unchecked (openai-python's ``extra_body``: the way to send a field no signature
names). The body is frozen, and serialised once as it is built (compact UTF-8 JSON:
:meth:`PreparedRequest.body_bytes`).

The clients' ``chat.stream`` / ``chat.create`` name every parameter of
:data:`CHAT_PARAMETERS` explicitly, so a misspelt keyword (``temprature=``) is a
:class:`TypeError` at the call instead of a field sent to ERNIE; :func:`chat_params` collects
them for the builders.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ._dialects import to_openai, to_v1, to_v2
from ._events import freeze
from ._exceptions import InvalidRequestError
from ._models import (
    V1_CHAT_PREFIX,
    V2_CHAT_PATH,
    ModelInfo,
    find_model,
    lookup_model,
    model_for_endpoint,
)
from ._parameters import check_capabilities, check_openai_params, check_v2_params
from ._redact import MASK
from ._validation import (
    PARAMS_ERROR_CODE,
    Problem,
    check_v1_messages,
    check_v1_params,
    check_v2_messages,
)

__all__ = [
    "CHAT_PARAMETERS",
    "OAUTH_TOKEN_PATH",
    "PreparedRequest",
    "build_oauth_token_query",
    "build_oauth_token_request",
    "build_openai_chat",
    "build_v1_chat",
    "build_v2_chat",
    "chat_params",
]

OAUTH_TOKEN_PATH = "/oauth/2.0/token"  # noqa: S105 (a path, not a secret)
OPENAI_CHAT_PATH = "/chat/completions"
"""The chat path under an OpenAI-compatible server's base URL (which ends in ``/v1``)."""
"""Path of the v1 OAuth (client-credentials) token endpoint on the v1 host."""

CHAT_PARAMETERS: tuple[str, ...] = (
    # both generations (v1 §1.4, v2 §2.3 of ERNIE-PROTOCOL.md)
    "system",
    "temperature",
    "top_p",
    "penalty_score",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "max_output_tokens",
    "max_tokens",
    "max_completion_tokens",
    "response_format",
    "tools",
    "tool_choice",
    # v1
    "functions",
    "disable_search",
    "enable_citation",
    "enable_trace",
    "min_output_tokens",
    "user_id",
    "user_setting",
    "enable_system_memory",
    "system_memory_id",
    # v2
    "user",
    "seed",
    "repetition_penalty",
    "parallel_tool_calls",
    "web_search",
    "metadata",
    "enable_thinking",
    "thinking_budget",
    "thinking_strategy",
    "reasoning_effort",
    "logprobs",
    "top_logprobs",
    "stream_options",
    "include_usage",
)
"""The request parameters ``chat.stream`` and ``chat.create`` take by name, in the order of
their signatures. ``max_output_tokens`` (v1), ``max_tokens`` and ``max_completion_tokens`` (v2)
are one parameter in three spellings; ``system`` becomes v1's ``system`` field or a leading v2
system message; ``include_usage`` is v2's ``stream_options.include_usage``; the rest is
translated between the generations or refused as ``_dialects`` says."""


def chat_params(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The request parameters among a call's arguments (its ``locals()``): every name of
    :data:`CHAT_PARAMETERS` whose value is not ``None``."""
    return {name: value for name in CHAT_PARAMETERS if (value := arguments.get(name)) is not None}


_SECRET_QUERY_KEYS = frozenset({"access_token", "client_id", "client_secret"})
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True, repr=False)
class PreparedRequest:
    """An HTTP request ready to be authenticated and sent.

    ``query`` holds (name, value) pairs; ``json_body`` the frozen JSON body (``None`` for no
    body); ``stream`` whether the response is expected as a stream; ``encoded`` the body as
    :meth:`body_bytes` gives it, when the builder serialised it already. The repr shows the
    field names of the body and masks secret query values, never the secrets themselves.
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    json_body: Mapping[str, Any] | None = None
    stream: bool = False

    encoded: bytes | None = dataclasses.field(default=None, compare=False)

    def body_bytes(self) -> bytes:
        """The body as compact UTF-8 JSON (``b""`` when there is none)."""
        if self.encoded is not None:
            return self.encoded
        if self.json_body is None:
            return b""
        return _json_bytes(self.json_body)

    def __repr__(self) -> str:
        query = tuple(
            (name, MASK if name.lower() in _SECRET_QUERY_KEYS else value)
            for name, value in self.query
        )
        fields = None if self.json_body is None else tuple(self.json_body)
        return (
            f"PreparedRequest(method={self.method!r}, path={self.path!r}, query={query!r}, "
            f"stream={self.stream!r}, body_fields={fields!r})"
        )


def _json_bytes(body: object) -> bytes:
    # `default=dict`: a frozen mapping (or one a caller passed in) is written as its dict
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=dict).encode()


def _post(path: str, body: dict[str, Any], stream: bool) -> PreparedRequest:
    """The POST of a built ``body``, frozen, and serialised now from the plain dict: the JSON
    encoder walks a dict in C, and a frozen one through a Python call per object (25 against
    17 µs for a 19-message history, and the history is sent with every question)."""
    return PreparedRequest("POST", path, (), freeze(body), stream, _json_bytes(body))


def _fail(
    field: str, message: str, *, v1_code: int = PARAMS_ERROR_CODE, hint: str = ""
) -> NoReturn:
    raise InvalidRequestError(Problem(field, message, v1_code, "invalid_argument"), hint=hint)


def _check(problem: Problem | None) -> None:
    if problem is not None:
        raise InvalidRequestError(problem)


def _copy_messages(messages: object) -> list[Any]:
    """A fresh list of fresh dicts (the caller's objects are never modified); anything that is
    not a sequence of mappings is passed through for the validator to reject."""
    if isinstance(messages, Sequence) and not isinstance(messages, str | bytes):
        return [dict(m) if isinstance(m, Mapping) else m for m in messages]
    _fail("messages", "the messages must be a list of message objects", v1_code=336006)


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def _alias(params: dict[str, Any], target: str, *aliases: str) -> None:
    """Rename the one spelling of ``target`` the caller used; two spellings are an error."""
    given = [name for name in (target, *aliases) if name in params]
    if len(given) > 1:
        _fail(target, f"{' and '.join(given)} are the same parameter; pass only one of them")
    if given and given[0] != target:
        params[target] = params.pop(given[0])


def _resolve_endpoint(
    model_or_endpoint: str | None, endpoint: str | None
) -> tuple[str, ModelInfo | None]:
    if endpoint is not None:
        if not isinstance(endpoint, str) or not _ENDPOINT.fullmatch(endpoint):
            _fail(
                "endpoint",
                f"endpoint {endpoint!r} is not a valid endpoint name "
                "(letters, digits, '.', '_' and '-')",
                v1_code=336005,
            )
        if model_or_endpoint is not None:
            info = find_model(model_or_endpoint) or model_for_endpoint(model_or_endpoint)
            if info is None or info.endpoint != endpoint:
                _fail(
                    "endpoint",
                    f"model {model_or_endpoint!r} and endpoint {endpoint!r} disagree; "
                    "pass one of them",
                    v1_code=336005,
                )
        return endpoint, model_for_endpoint(endpoint)
    if not isinstance(model_or_endpoint, str) or not model_or_endpoint.strip():
        _fail("model", "a model name (or endpoint=...) is required", v1_code=336005)
    info = find_model(model_or_endpoint) or model_for_endpoint(model_or_endpoint)
    if info is None:
        _fail(
            "model",
            f"unknown v1 model {model_or_endpoint!r}",
            v1_code=336005,
            hint=(
                "for a custom (user-deployed) service pass its endpoint name explicitly, "
                f"as endpoint={model_or_endpoint!r}, instead of a model name"
            ),
        )
    return info.endpoint, info


def _split_system(messages: list[Any], explicit: object) -> tuple[str | None, list[Any]]:
    """Move leading system messages (after an explicit ``system=``) into one system text."""
    parts: list[str] = []
    if explicit is not None:
        if not isinstance(explicit, str):
            _fail("system", "system must be a string")
        parts.append(explicit)
    start = 0
    while start < len(messages):
        message = messages[start]
        if not isinstance(message, Mapping) or message.get("role") != "system":
            break
        content = message.get("content")
        if not isinstance(content, str):
            _fail(
                "messages",
                f"the content of system message {start} must be a string",
                v1_code=336006,
            )
        parts.append(content)
        start += 1
    rest = messages[start:]
    for index, message in enumerate(rest, start):
        if isinstance(message, Mapping) and message.get("role") == "system":
            _fail(
                "messages",
                f"message {index} has role system; v1 accepts system text only at the start "
                "of messages (it is moved into the system field)",
                v1_code=336006,
            )
    return ("\n\n".join(parts) if parts else None), rest


def build_v1_chat(
    model_or_endpoint: str | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    stream: bool,
    endpoint: str | None = None,
    extra_body: Mapping[str, Any] | None = None,
    **params: Any,
) -> PreparedRequest:
    """A v1 chat request: ``POST /rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}``.

    Args:
        model_or_endpoint: A model name (``"ERNIE-4.0-8K"``, ``"ernie-speed-128k"``,
            ``"ERNIE-Bot"``…) or a known endpoint name (``"completions_pro"``); ``None`` when
            ``endpoint`` is given.
        messages: The conversation; leading ``system`` messages become the ``system`` field.
        stream: Whether to ask for an SSE stream.
        endpoint: The endpoint of a custom (user-deployed) service, taken as is.
        extra_body: Fields merged into the body last, as they are (unchecked).
        params: Body fields (``temperature``, ``top_p``, ``penalty_score``, ``system``,
            ``stop``, ``max_output_tokens`` or ``max_tokens``, ``functions``…); unknown ones
            pass through, ``None`` values are left out.

    Raises:
        InvalidRequestError: The model is unknown, the request breaks a v1 rule (message
            order, empty contents, parameter ranges, stop words…), or it asks for something v1
            cannot honour (``_dialects``).
    """
    name, info = _resolve_endpoint(model_or_endpoint, endpoint)
    path = V1_CHAT_PREFIX + name
    body_params = _params(params)
    if "model" in body_params:
        _fail("model", "v1 takes the model as the first argument (it selects the URL), not model=")
    _alias(body_params, "max_output_tokens", "max_tokens", "max_completion_tokens")
    copied = _copy_messages(messages)
    to_v1(body_params, copied, info)
    system, rest = _split_system(copied, body_params.pop("system", None))
    _check(check_v1_messages(rest))
    body: dict[str, Any] = {"messages": rest, "stream": stream}
    if system is not None:
        body["system"] = system
    body.update(body_params)
    _check(check_v1_params(body))
    if extra_body:
        body.update(extra_body)
    return _post(path, body, stream)


def _chat_messages(messages: object, system: object) -> list[Any]:
    """The messages of a v2-shaped body (copied, any ``reasoning_content`` dropped), with v1's
    ``system`` field as a leading ``system`` message when it is not blank."""
    msgs = [_without_reasoning(m) for m in _copy_messages(messages)]
    if system is not None:
        if not isinstance(system, str):
            _fail("system", "system must be a string")
        if system.strip():
            msgs.insert(0, {"role": "system", "content": system})
    return msgs


def _chat_body(
    model: str,
    msgs: list[Any],
    body_params: dict[str, Any],
    *,
    stream: bool,
    include_usage: bool | None,
) -> dict[str, Any]:
    """A v2-shaped chat body; when streaming, usage asked for in ``stream_options`` (unless
    ``include_usage`` says no). ``stream_options`` without streaming is refused: v2, vLLM and
    FastDeploy all refuse it."""
    options = body_params.pop("stream_options", None)
    if options is not None and not isinstance(options, Mapping):
        _fail("stream_options", "stream_options must be an object")
    body: dict[str, Any] = {"model": model, "messages": msgs, "stream": stream}
    body.update(body_params)
    if stream:
        merged = dict(options or {})
        if include_usage is not None:
            merged["include_usage"] = include_usage
        else:
            merged.setdefault("include_usage", True)
        body["stream_options"] = merged
    elif include_usage is not None or options is not None:
        _fail("stream_options", "stream_options / include_usage are only allowed when streaming")
    return body


def build_v2_chat(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    stream: bool,
    include_usage: bool | None = None,
    alternation: bool = False,
    extra_body: Mapping[str, Any] | None = None,
    **params: Any,
) -> PreparedRequest:
    """A v2 chat request: ``POST /v2/chat/completions`` with an OpenAI-style body.

    Args:
        model: The v2 model name (``"ernie-4.0-8k"``, ``"ernie-4.5-turbo-128k"``, a custom
            service's API name…), sent as given.
        messages: The conversation (``system``/``user``/``assistant``/``tool`` messages).
        stream: Whether to ask for an SSE stream.
        include_usage: Ask for usage in the last stream chunk; ``None`` means yes when
            streaming. Only allowed when streaming.
        alternation: Also apply v1's odd-count/alternation rule, which legacy ERNIE models
            may still enforce.
        extra_body: Fields merged into the body last, as they are (unchecked).
        params: Body fields (``temperature``, ``max_tokens``, ``stop``, ``tools``,
            ``web_search``…); unknown ones pass through, ``None`` values are left out.
            ``system`` (v1's persona field, which v2 does not read) becomes a leading
            ``system`` message, so one call works on both generations.

    Raises:
        InvalidRequestError: The request breaks a v2 rule (empty model, message roles, blank
            last message, images, stop words, ``max_tokens`` not a positive integer, tools,
            web search…) or asks a catalogue model for what it cannot honour.
    """
    if not isinstance(model, str) or not model.strip():
        _fail("model", "model is empty", v1_code=336005)
    msgs = _chat_messages(messages, params.pop("system", None))
    _check(check_v2_messages(msgs, alternation=alternation))
    body_params = _params(params)
    _alias(body_params, "max_tokens", "max_completion_tokens", "max_output_tokens")
    to_v2(body_params)
    body = _chat_body(model, msgs, body_params, stream=stream, include_usage=include_usage)
    _check(check_v2_params(body))
    spec = lookup_model(model)
    if spec is not None:
        _check(check_capabilities(body, spec))
    if extra_body:
        body.update(extra_body)
    return _post(V2_CHAT_PATH, body, stream)


def build_openai_chat(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    stream: bool,
    include_usage: bool | None = None,
    extra_body: Mapping[str, Any] | None = None,
    **params: Any,
) -> PreparedRequest:
    """A chat request to an OpenAI-compatible server: ``POST /chat/completions`` (under a base
    URL ending in ``/v1``) with v2's body, changed as the module docstring says.

    Args:
        model: The id the server serves (vLLM: the Hugging Face repo id or
            ``--served-model-name``, e.g. ``baidu/ERNIE-4.5-21B-A3B-PT``); required.
        messages, stream, include_usage, extra_body, params: as for :func:`build_v2_chat`
            (usage is asked for with ``stream_options.include_usage`` when streaming).

    Raises:
        InvalidRequestError: no model, messages that break the shared rules, a field such a
            server cannot honour (``web_search``, ``penalty_score``, ``metadata``…) or one
            of the wrong shape.
    """
    if not isinstance(model, str) or not model.strip():
        _fail(
            "model",
            "model is empty: an OpenAI-compatible server needs the id it serves "
            "(e.g. baidu/ERNIE-4.5-21B-A3B-PT); pass model= to the client or the call",
            v1_code=336005,
        )
    msgs = _chat_messages(messages, params.pop("system", None))
    _check(check_v2_messages(msgs))
    body_params = _params(params)
    _alias(body_params, "max_tokens", "max_completion_tokens", "max_output_tokens")
    to_v2(body_params)
    to_openai(body_params)
    body = _chat_body(model, msgs, body_params, stream=stream, include_usage=include_usage)
    _check(check_openai_params(body))
    if extra_body:
        body.update(extra_body)
    return _post(OPENAI_CHAT_PATH, body, stream)


_REASONING_KEYS = ("reasoning_content", "reasoning")


def _without_reasoning(message: Any) -> Any:
    """A message without the reasoning of an earlier answer (a copy; others as they are)."""
    if isinstance(message, dict) and any(key in message for key in _REASONING_KEYS):
        return {key: value for key, value in message.items() if key not in _REASONING_KEYS}
    return message


def _check_key(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        _fail(field, f"{field} must be a non-empty string", v1_code=100)
    if value != value.strip() or any(ch.isspace() for ch in value):
        _fail(field, f"{field} contains whitespace (a copy-and-paste slip?)", v1_code=100)
    return value


def build_oauth_token_query(api_key: str, secret_key: str) -> tuple[tuple[str, str], ...]:
    """The query pairs of a v1 OAuth token request: ``grant_type=client_credentials``,
    ``client_id`` (the app's API Key) and ``client_secret`` (its Secret Key).

    Raises:
        InvalidRequestError: A key is empty or contains whitespace.
    """
    return (
        ("grant_type", "client_credentials"),
        ("client_id", _check_key("api_key", api_key)),
        ("client_secret", _check_key("secret_key", secret_key)),
    )


def build_oauth_token_request(api_key: str, secret_key: str) -> PreparedRequest:
    """The v1 OAuth token request: ``POST /oauth/2.0/token?grant_type=…`` (parameters in the
    query string, no body); its repr masks the keys."""
    return PreparedRequest("POST", OAUTH_TOKEN_PATH, build_oauth_token_query(api_key, secret_key))
