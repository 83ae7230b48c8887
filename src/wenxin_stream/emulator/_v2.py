"""The v2 (OpenAI-compatible) chat route: ``POST /v2/chat/completions``.

Theory of operation
===================

Errors use v2's shape, ``{"error": {"code", "message", "type"}, "id": "as-…"}``, with a real
HTTP status, also when ``stream`` is true (an error is never SSE). The checks, in order:

1. method (405 ``method_not_supported``), credentials (401 ``invalid_iam_token`` /
   ``invalid_appid``);
2. body: too large (413 ``invalid_argument``, connection closed), not JSON or not an object
   (400 ``malformed_json``), ``model`` missing or not allowed (400 ``invalid_model``);
3. ``_validation`` (400 ``invalid_messages`` / ``invalid_argument``) and the types of
   ``stream``, ``stream_options``, ``max_tokens`` (400 ``invalid_argument``);
4. the fault SPEC (400 ``invalid_argument``); quotas (429 ``rpm_rate_limit_exceeded`` /
   ``tpm_rate_limit_exceeded`` with ``Retry-After``); injected ``expire_token`` (401) and
   ``error=CODE`` (the v2 counterpart of the v1 code from ``_error_codes``; unknown codes 500).

A success is one ``chat.completion`` object, or a stream of ``chat.completion.chunk`` deltas
of 2–8 characters: the first delta carries ``role: "assistant"``, ``finish_reason`` is null
until the last content chunk, usage rides on the last chunk with
``stream_options.include_usage`` (cumulative on every chunk with ``chunk_include_usage``), and
``data: [DONE]`` ends the stream (``ERNIE-PROTOCOL.md`` §2.4–2.5).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from .._asgi import (
    BodyTooLarge,
    ClientDisconnected,
    Headers,
    Receive,
    Request,
    Send,
    json_bytes,
    read_body,
    send_json,
)
from .._error_codes import V1_CODES
from .._validation import check_stop, check_v2_messages
from ._answers import delta_pieces
from ._auth import SignatureRequest
from ._chat import (
    Answer,
    Shared,
    continuation_of,
    find_scenario,
    plan_answer,
    prompt_tokens,
    select_fault,
)
from ._faults import FaultSpec, FaultSpecError, strip_directives
from ._stream import ENDLESS_CAP, StreamPlan, deliver, sse_headers

_IRE = "invalid_request_error"

_AUTH_ERRORS = {
    "invalid_iam_token": "IAM Certification failed",
    "invalid_appid": "appid is invalid or has no permission",
}


def error_body(code: str, message: str, kind: str, response_id: str) -> dict[str, Any]:
    """v2's error object."""
    return {"error": {"code": code, "message": message, "type": kind}, "id": response_id}


def injected_error(code: int) -> tuple[int, str, str, str]:
    """The v2 answer to an injected v1 error code: (status, code, message, type)."""
    known = V1_CODES.get(code)
    if known is None:
        return 500, "internal_error", "Injected error", "server_error"
    return known.v2_status, known.v2_code, known.message, known.v2_type


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _text_of(message: Any) -> str:
    """The text of a (validated) message: its string content, or its text parts joined."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def _check_body(body: dict[str, Any]) -> tuple[str, str] | None:
    """The first (code, message) problem of a parsed body besides the model, or None."""
    if "stream" in body and not isinstance(body["stream"], bool):
        return "invalid_argument", "stream must be a boolean"
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return "invalid_argument", "stream_options must be an object"
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            return "invalid_argument", f"{key} must be a positive integer"
    problem = check_stop(body.get("stop"))
    if problem is not None:
        return problem.v2_code, problem.message
    return None


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

    if request.method != "POST":
        return await fail(405, "method_not_supported", "Only POST method is supported")
    signed = SignatureRequest(request.method, request.path, request.query, request.headers)
    auth = shared.auth.check_v2(signed)
    if not auth.ok:
        assert isinstance(auth.error, str)
        return await fail(401, auth.error, _AUTH_ERRORS[auth.error], "access_denied")
    assert auth.identity is not None
    try:
        raw = await read_body(receive, request.headers, config.max_body_bytes)
    except BodyTooLarge:
        return await fail(413, "invalid_argument", "request body too large", close=True)
    except ClientDisconnected:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return await fail(400, "malformed_json", "Invalid Argument")
    if not isinstance(body, dict):
        return await fail(400, "malformed_json", "Invalid Argument")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        return await fail(400, "invalid_model", "model is empty")
    if config.v2_models is not None and model not in config.v2_models:
        return await fail(400, "invalid_model", f"model {model!r} is not supported")
    problem = check_v2_messages(body.get("messages"), alternation=config.v2_alternation)
    if problem is not None:
        return await fail(400, problem.v2_code, problem.message)
    body_problem = _check_body(body)
    if body_problem is not None:
        return await fail(400, *body_problem)
    messages: list[Any] = body["messages"]
    users = [m for m in messages if m.get("role") == "user"]
    raw_prompt = _text_of(users[-1]) if users else ""
    continued = continuation_of(messages, _text_of)
    prompt = continued[0] if continued else strip_directives(raw_prompt)
    scenario = find_scenario(config.scenarios, prompt)
    try:
        fault = select_fault(
            shared, request.headers.get("x-wenxin-fault"), raw_prompt, scenario, auth.identity
        )
    except FaultSpecError as exc:
        return await fail(400, "invalid_argument", f"Invalid Argument: {exc}")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    answer = plan_answer(
        config,
        prompt,
        scenario,
        fault,
        lambda text: delta_pieces(text, config.seed),
        normal_finish=config.v2_finish_reason,
        stop=body.get("stop"),
        max_tokens=max_tokens,
        prompt_token_count=prompt_tokens(_text_of(m) for m in messages),
        shown=continued[1] if continued else "",
    )
    verdict = shared.quotas.admit(
        auth.identity, answer.prompt_tokens, answer.completion_tokens, config.clock()
    )
    headers += shared.quotas.headers(verdict, v2=True)
    if verdict.error is not None:
        headers.append((b"retry-after", b"%d" % verdict.retry_after))
        known = V1_CODES[verdict.error]
        return await fail(429, known.v2_code, known.message, known.v2_type)
    if fault.expire_token:
        shared.auth.expire_token(auth.token)
        return await fail(
            401, "invalid_iam_token", _AUTH_ERRORS["invalid_iam_token"], "access_denied"
        )
    stream = body.get("stream") is True
    if fault.error is not None and not (stream and fault.error_after is not None):
        status, code, message, kind = injected_error(fault.error)
        return await fail(status, code, message, kind)
    options = body.get("stream_options") or {}
    plan = _plan(
        shared,
        answer,
        fault,
        response_id,
        model,
        stream=stream,
        include_usage=options.get("include_usage") is True,
        every_chunk=options.get("chunk_include_usage") is True,
    )
    if not stream:
        result = _complete_body(answer, response_id, model)
        await deliver(send, plan, 200, headers, json_bytes(result))
        return None
    start_headers = sse_headers(headers, charset=config.sse_charset)
    await send({"type": "http.response.start", "status": 200, "headers": start_headers})
    await shared.stream(receive, send, plan)
    return None


def _choice_flags(choice: dict[str, Any], flag: int) -> dict[str, Any]:
    choice["flag"] = flag
    if flag:
        choice["ban_round"] = -1
    return choice


def _complete_body(answer: Answer, response_id: str, model: str) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": answer.text},
        "finish_reason": answer.finish,
    }
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_choice_flags(choice, answer.safety)],
        "usage": _usage(answer.prompt_tokens, answer.completion_tokens),
    }


def _plan(
    shared: Shared,
    answer: Answer,
    fault: FaultSpec,
    response_id: str,
    model: str,
    *,
    stream: bool,
    include_usage: bool,
    every_chunk: bool,
) -> StreamPlan:
    """The stream plan of a v2 answer: deltas, the last one with ``finish_reason``."""
    pieces: Sequence[str] = answer.pieces
    if answer.safety >= 3:
        pieces = (*pieces, "")  # the empty chunk that reports the filter
    n_pieces = len(pieces)
    count = ENDLESS_CAP if stream and fault.endless else n_pieces
    prompt = answer.prompt_tokens
    # Safety 1–2 marks every chunk; 3–4 only the final (filter) chunk.
    all_flag = answer.safety if 0 < answer.safety < 3 else 0

    def render(index: int) -> bytes:
        last = index == count - 1
        delta = (
            {"role": "assistant", "content": pieces[0]}
            if index == 0
            else {"content": pieces[index % n_pieces]}
        )
        choice = {"index": 0, "delta": delta, "finish_reason": answer.finish if last else None}
        flag = answer.safety if last and answer.safety else all_flag
        chunk: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [_choice_flags(choice, flag)],
        }
        if every_chunk or (include_usage and last):
            chunk["usage"] = _usage(prompt, answer.completion_after(index + 1))
        return json_bytes(chunk)

    config = shared.config
    error = fault.error if fault.error is not None else 336000
    status_code, code, message, kind = injected_error(error)
    del status_code
    return StreamPlan(
        count=count,
        render=render,
        end_json=None,
        done_marker=True,
        error_json=json_bytes(error_body(code, message, kind, response_id)),
        ttft=config.ttft if fault.ttft is None else fault.ttft,
        interval=config.v2_interval if fault.interval is None else fault.interval,
        fault=fault,
    )
