"""The v2 (OpenAI-compatible) chat route: ``POST /v2/chat/completions``.

Theory of operation
===================

Errors use v2's shape, ``{"error": {"code", "message", "type"}, "id": "as-…"}``, with a real
HTTP status, also when ``stream`` is true (an error is never SSE). The checks, in order:

1. credentials (401 ``invalid_iam_token`` / ``invalid_appid``; also for a ``GET``, as Baidu
   answers an unauthenticated one), then the method (405 ``method_not_supported``);
2. body: too large (413 ``invalid_argument``, connection closed), not JSON or not an object
   (400 ``malformed_json``), ``model`` missing (400 ``invalid_model`` "model is empty"), then
   the model against the roster (``_roster``: 401 ``invalid_model`` for an unknown id, 403
   ``model_offline`` for a retired one);
3. the shared checks: messages and images (``_validation``: 400 ``invalid_messages`` /
   ``invalid_image_url``), every field's shape (``_parameters.check_v2_params``: 400
   ``invalid_argument``), and — unless ``unsupported_params="ignore"`` — what the model can
   honour (``_parameters.check_capabilities``: tools, web search, images, ``logprobs`` on a
   thinking model, ``max_tokens`` over the model's limit, X1 Turbo's unsupported fields).
   ``enable_thinking`` and the other thinking controls switch only the models that take them
   and are ignored by the rest, as Baidu documents;
4. the fault SPEC (400 ``invalid_argument``); quotas (429 ``rpm_rate_limit_exceeded`` /
   ``tpm_rate_limit_exceeded`` with ``Retry-After``); injected ``expire_token`` (401) and
   ``error=CODE`` (a v1 code's v2 counterpart, or a v2 code such as ``model_offline``).

A success is planned by ``_v2_answer`` (thinking, tool calls, search, images, usage) and sent
as one ``chat.completion`` object or as a stream of ``chat.completion.chunk`` deltas ended by
``data: [DONE]`` (``ERNIE-PROTOCOL.md`` §2.4–2.5, ``ERNIE-CURRENT.md`` §2–5, §8).
"""

from __future__ import annotations

from typing import Any

from .._asgi import BodyTooLarge, Headers, Receive, Request, Send, json_bytes, send_json
from .._error_codes import V1_CODES, V2_CODES
from .._models import ModelSpec
from .._parameters import check_capabilities, check_v2_params
from .._validation import check_v2_messages, message_text
from ._answers import default_answer, delta_pieces
from ._auth import SignatureRequest
from ._chat import (
    Answer,
    BodyNotAnObject,
    Question,
    Shared,
    plan_answer,
    prompt_tokens,
    read_json_object,
    read_question,
)
from ._faults import FaultSpec, FaultSpecError
from ._roster import resolve, today
from ._search import cite, plan_search
from ._tools import PlannedCall, answer_after_tools, plan_calls
from ._v2_answer import TOOLS_PROMPT_TOKENS, V2Answer, complete_body, plan_reasoning, plan_v2
from ._v2_answer import stream_plan as _stream_plan
from ._vision import answer_about_images

_IRE = "invalid_request_error"

_AUTH_ERRORS = {
    "invalid_iam_token": "IAM Certification failed",
    "invalid_appid": "appid is invalid or has no permission",
}


def error_body(code: str, message: str, kind: str, response_id: str) -> dict[str, Any]:
    """v2's error object."""
    return {"error": {"code": code, "message": message, "type": kind}, "id": response_id}


def injected_error(code: int | str) -> tuple[int, str, str, str]:
    """The v2 answer to an injected error (a v1 code's v2 counterpart, or a v2 code):
    (status, code, message, type)."""
    if isinstance(code, str):
        v2 = V2_CODES[code]
        return v2.status, v2.code, v2.message, v2.type
    known = V1_CODES.get(code)
    if known is None:
        return 500, "internal_error", "Injected error", "Internal_error"
    return known.v2_status, known.v2_code, known.message, known.v2_type


def mid_stream_error(fault: FaultSpec) -> tuple[int, str, str, str]:
    """The error a stream sends when it fails after it began: the injected one (``error`` with
    ``error_after``), else an internal error (336000's v2 counterpart); as
    :func:`injected_error`."""
    return injected_error(fault.error if fault.error is not None else 336000)


async def handle(shared: Shared, request: Request, receive: Receive, send: Send) -> None:
    """Answer one request to the v2 chat route."""
    config = shared.config
    response_id = shared.new_id()
    headers: Headers = [
        (b"x-baidu-request-id", shared.request_id(request.headers).encode("latin-1"))
    ]

    async def fail(
        status: int, code: str, message: str, kind: str = _IRE, *, close: bool = False
    ) -> None:
        body = error_body(code, message, kind, response_id)
        await send_json(send, status, body, headers, close=close)

    signed = SignatureRequest(request.method, request.path, request.query, request.headers)
    auth = shared.auth.check_v2(signed)
    if not auth.ok:
        assert isinstance(auth.error, str)
        return await fail(401, auth.error, _AUTH_ERRORS[auth.error])
    assert auth.identity is not None
    if request.method != "POST":
        return await fail(405, "method_not_supported", "Only POST requests are accepted")
    try:
        body = await read_json_object(receive, request.headers, config.max_body_bytes)
    except BodyTooLarge:
        return await fail(413, "invalid_argument", "request body too large", close=True)
    except BodyNotAnObject:
        return await fail(400, "malformed_json", "Invalid Argument")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        return await fail(400, "invalid_model", "model is empty")
    resolved = resolve(config, model)
    if resolved.error is not None:
        return await fail(*resolved.error)
    spec = resolved.spec
    assert spec is not None
    problem = check_v2_messages(body.get("messages"), alternation=config.v2_alternation)
    if problem is None and "stream" in body and not isinstance(body["stream"], bool):
        return await fail(400, "invalid_argument", "stream must be a boolean")
    problem = problem or check_v2_params(body)
    if problem is None and config.unsupported_params == "reject":
        problem = check_capabilities(body, spec, thinking_switches=False)
    if problem is not None:
        return await fail(400, problem.v2_code, problem.message)
    messages: list[Any] = body["messages"]
    users = [m for m in messages if m.get("role") == "user"]
    raw_prompt = message_text(users[-1]) if users else ""
    try:
        question = read_question(
            shared, request.headers, messages, raw_prompt, message_text, auth.identity
        )
    except FaultSpecError as exc:
        return await fail(400, "invalid_argument", f"Invalid Argument: {exc}")
    fault = question.fault
    plan = plan_request(shared, body, spec, messages, question)
    verdict = shared.quotas.admit(
        auth.identity, plan.answer.prompt_tokens, plan.completion_tokens, config.clock()
    )
    headers += shared.quotas.headers(verdict, v2=True)
    if verdict.error is not None:
        headers.append((b"retry-after", b"%d" % verdict.retry_after))
        known = V1_CODES[verdict.error]
        return await fail(429, known.v2_code, known.message, known.v2_type)
    if fault.expire_token:
        shared.auth.expire_token(auth.token)
        return await fail(401, "invalid_iam_token", _AUTH_ERRORS["invalid_iam_token"])
    stream = body.get("stream") is True
    if fault.error is not None and fault.errs_at_once(stream=stream):
        status, code, message, kind = injected_error(fault.error)
        return await fail(status, code, message, kind)
    options = body.get("stream_options") or {}
    _, code, message, kind = mid_stream_error(fault)
    stream_plan = _stream_plan(
        shared,
        plan,
        fault,
        response_id,
        model,
        stream=stream,
        include_usage=options.get("include_usage") is True,
        every_chunk=options.get("chunk_include_usage") is True,
        error_json=json_bytes(error_body(code, message, kind, response_id)),
    )
    whole = None if stream else complete_body(config, plan, response_id, model)
    return await shared.respond(receive, send, stream_plan, headers, whole)


def plan_request(
    shared: Shared,
    body: dict[str, Any],
    spec: ModelSpec,
    messages: list[Any],
    question: Question,
) -> V2Answer:
    """Plan the answer to a checked request (see ``_v2_answer``); the OpenAI-compatible route
    (``_openai``) plans with it too."""
    config = shared.config
    prompt, fault = question.prompt, question.fault
    ignored = spec.unsupported if config.unsupported_params == "ignore" else frozenset()
    tools = body.get("tools") if spec.tools is not False else None
    search = plan_search(body.get("web_search"), prompt) if spec.search is not False else None
    after_tools = answer_after_tools(messages, prompt)
    calls: tuple[PlannedCall, ...] = ()
    if tools and after_tools is None:
        calls = plan_calls({**body, "tools": tools}, prompt, today(config), shared.new_call_id)
    scenario = question.scenario
    if scenario is not None and scenario.answer:
        text = scenario.answer
    elif after_tools is not None:
        text = after_tools
    else:
        images = answer_about_images(messages, prompt, config.seed)
        text = images if images is not None else default_answer(prompt, config.seed)
    if search is not None and search.citation:
        text = cite(text, len(search.results))
    extra = (TOOLS_PROMPT_TOKENS if body.get("tools") else 0) + (search.tokens if search else 0)
    answer: Answer = plan_answer(
        config,
        prompt,
        None,  # the scenario's answer is in `text` already
        fault,
        lambda text: delta_pieces(text, config.seed),
        normal_finish=config.v2_finish_reason,
        stop=None if "stop" in ignored else body.get("stop"),
        max_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
        prompt_token_count=prompt_tokens(message_text(m) for m in messages) + extra,
        shown=question.shown,
        text=text,
    )
    reasoning = plan_reasoning(config, spec, body, prompt)
    return plan_v2(config, answer, reasoning, calls, search, fault)
