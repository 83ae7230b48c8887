"""The OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models``, as a
self-hosted ERNIE 4.5 serves them under vLLM or FastDeploy (``EmulatorConfig.openai_flavour``).

Theory of operation
===================

The answer is planned exactly as on v2 (``_v2.plan_request``: the seeded text, thinking, tool
calls, ``stop`` / ``max_tokens``, the content faults, continuations) and rendered by
``_v2_answer``; ``_openai_wire.adapt`` then gives each chunk (or the whole answer) the
flavour's fields. So pacing (``ttft``, ``v2_interval``, ``thinking_interval``) and every fault
key of ``docs/EMULATOR.md`` work here too; Qianfan's quotas (``rpm`` / ``tpm``) answer 429 in
the flavour's shape, which a rate-limiting proxy in front of such a server would send.

The checks, in order, each answered in the flavour's error shape (``_openai_wire``):

1. the API key, only when ``openai_api_key`` is set (``Authorization: Bearer KEY``; both
   routes): 401;
2. the method (405), the body (413 too large, 400 not a JSON object);
3. ``model``: absent means the served one; FastDeploy also takes ``"default"``; any other id
   is vLLM's 404 "The model … does not exist." or FastDeploy's 400 ``model_not_support``;
4. ``stream_options`` without ``stream: true`` (400, as both servers refuse it), the messages
   (``_validation``) and OpenAI's field shapes (``_parameters.check_openai_params``): 400;
5. the context: prompt tokens plus ``max_tokens`` over ``openai_max_model_len`` → 400 with
   each server's wording (FastDeploy's code ``context_length_exceeded``);
6. the fault SPEC (400), quotas (429 with ``Retry-After``), ``expire_token`` (401) and
   ``error=CODE`` (the status of the code's v2 counterpart; a too-long code is a context error).

Thinking: the emulated model is hybrid — it thinks when ``chat_template_kwargs.enable_thinking``
is true (FastDeploy also reads it from ``metadata``, its deprecated way, and
``chat_template_kwargs.options.thinking_mode`` ``"open"``); FastDeploy's
``reasoning_max_tokens`` caps the thinking. A stream that fails after it began sends the error
as a ``data:`` line and then ``data: [DONE]``, as both servers do. No web search, no safety
flags: a self-hosted server has neither.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import uuid
from typing import Any

from .._asgi import BodyTooLarge, Headers, Receive, Request, Send, json_bytes, send_json
from .._error_codes import V1_CODES
from .._models import ModelSpec
from .._parameters import check_openai_params
from .._validation import check_v2_messages, message_text
from ._chat import BodyNotAnObject, Shared, prompt_tokens, read_json_object, read_question
from ._config import EmulatorConfig
from ._faults import FaultSpecError
from ._openai_wire import (
    DEFAULT_MODELS,
    Flavour,
    adapt,
    auth_error,
    error_body,
    models_body,
    stream_error_body,
)
from ._stream import StreamPlan
from ._v2 import injected_error, mid_stream_error, plan_request
from ._v2_answer import complete_body, stream_plan

__all__ = ["CHAT_PATH", "MODELS_PATH", "handle_chat", "list_models", "served_model"]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
_TOO_LONG = frozenset({"tokens_too_long", "characters_too_long"})


def served_model(config: EmulatorConfig) -> str:
    """The model id the emulated server serves."""
    return config.openai_model or DEFAULT_MODELS[config.openai_flavour]


def _spec(config: EmulatorConfig) -> ModelSpec:
    """The served model as the planner sees it: a hybrid thinker with tools, no search."""
    model = served_model(config)
    return ModelSpec(
        id=model,
        name=model,
        family="ernie-4.5-self-hosted",
        reasoning="hybrid",
        context=config.openai_max_model_len,
        tools=True,
        search=False,
        vision=False,
    )


def _view(config: EmulatorConfig) -> EmulatorConfig:
    """The configuration the v2 renderer is given: the flavour's usage details, reasoning left
    out of answer chunks, tool calls with ``index``, ``stop`` as the normal finish."""
    return dataclasses.replace(
        config,
        reasoning_in_answer="absent",
        reasoning_tokens_detail=config.openai_flavour == "fastdeploy",
        tool_call_index=True,
        v2_finish_reason="stop",
    )


def _authorized(config: EmulatorConfig, request: Request) -> bool:
    key = config.openai_api_key
    if key is None:
        return True
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), key.encode())


def _identity(config: EmulatorConfig) -> str:
    """Quotas and ``times=N`` counters are per key (one key, or none, per server)."""
    return "openai-key" if config.openai_api_key is not None else "openai-anonymous"


def _thinking(flavour: Flavour, body: dict[str, Any]) -> bool | None:
    """Whether the request switches thinking on or off (``None``: it says nothing)."""
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict):
        value = kwargs.get("enable_thinking")
        if isinstance(value, bool):
            return value
        options = kwargs.get("options")
        mode = options.get("thinking_mode") if isinstance(options, dict) else None
        if mode in ("open", "close"):
            return bool(mode == "open")
    metadata = body.get("metadata")
    if flavour == "fastdeploy" and isinstance(metadata, dict):
        value = metadata.get("enable_thinking")
        if isinstance(value, bool):
            return value
    return None


def _planning_body(flavour: Flavour, body: dict[str, Any]) -> dict[str, Any]:
    """The request as the v2 planner reads it: the thinking switch and budget under v2's
    names, and nothing a self-hosted server does not do (search)."""
    planned = {k: v for k, v in body.items() if k not in ("web_search", "enable_thinking")}
    thinking = _thinking(flavour, body)
    planned["enable_thinking"] = bool(thinking)
    budget = body.get("reasoning_max_tokens")
    if flavour == "fastdeploy" and isinstance(budget, int) and not isinstance(budget, bool):
        planned["thinking_budget"] = budget
    else:
        planned.pop("thinking_budget", None)
    return planned


def _context_error(flavour: Flavour, limit: int, prompt: int, answer: int | None) -> str:
    if flavour == "vllm":
        asked = prompt + (answer or 0)
        return (
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{asked} tokens ({prompt} in the messages, {answer or 0} in the completion). "
            "Please reduce the length of the messages or completion."
        )
    return (
        f"Input text is too long, length of prompt token({prompt}) + max_tokens({answer or 0}) "
        f"> max_model_len({limit})"
    )


async def list_models(shared: Shared, request: Request, send: Send) -> None:
    """``GET /v1/models``."""
    config = shared.config
    flavour = config.openai_flavour
    if not _authorized(config, request):
        await send_json(send, 401, auth_error(flavour))
        return
    body = models_body(flavour, served_model(config), config.openai_max_model_len, 0)
    await send_json(send, 200, body)


async def handle_chat(shared: Shared, request: Request, receive: Receive, send: Send) -> None:
    """Answer one request to ``/v1/chat/completions`` (see the module docstring)."""
    config = shared.config
    flavour: Flavour = config.openai_flavour
    response_id = f"chatcmpl-{uuid.uuid4().hex}"
    headers: Headers = [(b"x-request-id", response_id.encode("ascii"))]

    async def fail(
        status: int, message: str, *, code: str | None = None, close: bool = False
    ) -> None:
        body = error_body(flavour, status, message, code=code)
        await send_json(send, status, body, headers, close=close)

    if not _authorized(config, request):
        return await send_json(send, 401, auth_error(flavour), headers)
    if request.method != "POST":
        return await fail(405, "Method Not Allowed")
    try:
        body = await read_json_object(receive, request.headers, config.max_body_bytes)
    except BodyTooLarge:
        return await fail(413, "request body too large", close=True)
    except BodyNotAnObject as exc:
        what = "must be a JSON object" if exc.is_json else "is not valid JSON"
        return await fail(400, f"the request body {what}", code="invalid_value")
    served = served_model(config)
    model = body.get("model")
    if model is None or (flavour == "fastdeploy" and model == "default"):
        model = served
    if model != served:
        if flavour == "vllm":
            return await fail(404, f"The model `{model}` does not exist.")
        message = f"Unsupported model: [{model}], support [{served}] or default"
        return await fail(400, message, code="model_not_support")
    stream = body.get("stream") is True
    if "stream" in body and not isinstance(body["stream"], bool):
        return await fail(400, "stream must be a boolean", code="invalid_value")
    if body.get("stream_options") is not None and not stream:
        return await fail(400, "Stream options can only be defined when `stream=True`.")
    problem = check_v2_messages(body.get("messages")) or check_openai_params(body)
    if problem is not None:
        return await fail(400, problem.message, code="invalid_value")
    messages: list[Any] = body["messages"]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    used = prompt_tokens(message_text(m) for m in messages)
    limit = config.openai_max_model_len
    if used + (max_tokens or 0) > limit:
        message = _context_error(flavour, limit, used, max_tokens)
        return await fail(400, message, code="context_length_exceeded")
    users = [m for m in messages if m.get("role") == "user"]
    raw_prompt = message_text(users[-1]) if users else ""
    identity = _identity(config)
    try:
        question = read_question(
            shared, request.headers, messages, raw_prompt, message_text, identity
        )
    except FaultSpecError as exc:
        return await fail(400, f"Invalid Argument: {exc}", code="invalid_value")
    fault = question.fault
    planning = _planning_body(flavour, body)
    plan = plan_request(shared, planning, _spec(config), messages, question)
    verdict = shared.quotas.admit(
        identity, plan.answer.prompt_tokens, plan.completion_tokens, config.clock()
    )
    if verdict.error is not None:
        headers.append((b"retry-after", b"%d" % verdict.retry_after))
        return await fail(429, V1_CODES[verdict.error].message, code="rate_limit_exceeded")
    if fault.expire_token:
        return await send_json(send, 401, auth_error(flavour), headers)
    if fault.error is not None and fault.errs_at_once(stream=stream):
        status, code, message, _ = injected_error(fault.error)
        too_long = code in _TOO_LONG
        return await fail(status, message, code="context_length_exceeded" if too_long else None)
    sent_options = body.get("stream_options")
    options: dict[str, Any] = sent_options if isinstance(sent_options, dict) else {}
    if flavour == "vllm":
        include_usage = options.get("include_usage") is True
    else:  # FastDeploy: on by default once stream_options is sent
        include_usage = sent_options is not None and options.get("include_usage") is not False
    status, _, message, _ = mid_stream_error(fault)
    view = _view(config)
    planned = stream_plan(
        shared,
        plan,
        fault,
        response_id,
        served,
        stream=stream,
        include_usage=include_usage,
        every_chunk=options.get("continuous_usage_stats") is True,
        error_json=json_bytes(stream_error_body(flavour, status, message)),
        config=view,
    )
    if stream:
        return await shared.respond(receive, send, _adapted(flavour, planned), headers, None)
    whole = adapt(flavour, complete_body(view, plan, response_id, served), stream=False)
    return await shared.respond(receive, send, planned, headers, whole)


def _adapted(flavour: Flavour, plan: StreamPlan) -> StreamPlan:
    """``plan`` with every chunk in the flavour's shape and ``[DONE]`` after an error."""
    render = plan.render

    def adapted(index: int) -> bytes:
        chunk = json.loads(render(index))
        return json_bytes(adapt(flavour, chunk, stream=True, first=index == 0))

    return dataclasses.replace(plan, render=adapted, done_after_error=True)
