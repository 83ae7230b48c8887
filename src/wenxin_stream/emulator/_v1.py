"""The v1 ("wenxinworkshop") chat route: ``POST /rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{ep}``.

Theory of operation
===================

The checks run in Baidu's order as far as it is known, each answering with v1's error shape,
``{"error_code": N, "error_msg": "…", "id": "as-…"}`` with **HTTP 200** and
``application/json`` (also when ``stream`` is true — v1 errors are never SSE):

1. method (``336101``), endpoint (``3 Unsupported openapi method``), credentials (``110``
   unknown token, ``111`` expired token, ``14`` rejected signature);
2. body: too large (``336003 request body too large``, the connection is closed after the
   answer), not JSON (``336002 Invalid JSON``), not an object (``336001``);
3. ``_validation``: messages (``336006`` or the configured code), parameters (``336003``);
4. the fault SPEC (``336001 Invalid Argument: <reason>``);
5. quotas (``336501`` RPM / ``336502`` TPM);
6. injected faults: ``expire_token`` (``111``, and the token really expires), ``error`` (a v2
   code such as ``error=model_offline`` has no v1 answer: ``336001``).

``functions`` (function calling, the 3.5 / 4.0 families) are answered like v2 tools
(``_tools``): when the question calls for one, or ``tool_choice`` forces it, the answer is a
``function_call`` ``{name, arguments, thoughts}`` with ``result: ""`` and ``finish_reason:
"function_call"`` (a stream sends it in its one content chunk); after a ``function`` message
the answer is text built from the function's result.

A success is either one ``chat.completion`` object, or an event stream of sentence chunks
(``sentence_id`` from 0, ``is_end: false``, running usage with ``completion_tokens`` 0) and a
final empty ``is_end: true`` chunk carrying the final usage, after which the connection
closes — there is no ``data: [DONE]`` in v1 (``ERNIE-PROTOCOL.md`` §1.6–1.7).
"""

from __future__ import annotations

import time
from typing import Any

from .._asgi import BodyTooLarge, Headers, Receive, Request, Send, json_bytes, send_json
from .._error_codes import V1_CODES
from .._models import model_for_endpoint
from .._validation import check_v1_messages, check_v1_params
from ._answers import brief, sentence_pieces
from ._auth import SignatureRequest
from ._chat import (
    Answer,
    BodyNotAnObject,
    Shared,
    plan_answer,
    prompt_tokens,
    read_json_object,
    read_question,
)
from ._faults import FaultSpec, FaultSpecError, strip_directives
from ._roster import today
from ._stream import ENDLESS_CAP, StreamPlan
from ._tools import answer_after_tools, plan_calls

INJECTED_MESSAGE = "Injected error"
"""``error_msg`` of an injected error code the emulator does not know."""


def error_body(code: int, message: str | None, response_id: str) -> dict[str, Any]:
    """v1's error object; ``message`` None takes the code's standard text."""
    if message is None:
        known = V1_CODES.get(code)
        message = known.message if known else INJECTED_MESSAGE
    return {"error_code": code, "error_msg": message, "id": response_id}


def _content(message: Any) -> str:
    """The string content of a (validated) v1 message; "" for a function-call turn."""
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def endpoint_known(shared: Shared, endpoint: str) -> bool:
    """Whether ``endpoint`` is a v1 chat endpoint (built in or configured)."""
    return model_for_endpoint(endpoint) is not None or endpoint in shared.config.custom_endpoints


async def handle(
    shared: Shared, request: Request, receive: Receive, send: Send, endpoint: str
) -> None:
    """Answer one request to the v1 chat route."""
    config = shared.config
    response_id = shared.new_id()
    headers: Headers = [
        (b"x-baidu-request-id", shared.request_id(request.headers).encode("latin-1"))
    ]

    async def fail(code: int, message: str | None = None, *, close: bool = False) -> None:
        await send_json(send, 200, error_body(code, message, response_id), headers, close=close)

    if request.method != "POST":
        return await fail(336101)
    if not endpoint_known(shared, endpoint):
        return await fail(3)
    signed = SignatureRequest(request.method, request.path, request.query, request.headers)
    query = dict(reversed(request.query))
    auth = shared.auth.check_v1(query, signed)
    if not auth.ok:
        assert isinstance(auth.error, int)
        return await fail(auth.error)
    assert auth.identity is not None
    if auth.app_number is not None:
        headers.append((b"appid", b"%d" % auth.app_number))
    try:
        body = await read_json_object(receive, request.headers, config.max_body_bytes)
    except BodyTooLarge:
        return await fail(336003, "request body too large", close=True)
    except BodyNotAnObject as exc:
        if not exc.is_json:
            return await fail(336002)
        return await fail(336001, "Invalid Argument: the request body must be a JSON object")
    problem = check_v1_messages(body.get("messages"))
    if problem is not None:
        return await fail(config.v1_messages_error_code, problem.message)
    problem = check_v1_params(body)
    if problem is not None:
        return await fail(problem.v1_code, problem.message)
    messages: list[dict[str, Any]] = body["messages"]
    raw_prompt: str = messages[-1]["content"]
    try:
        question = read_question(
            shared, request.headers, messages, raw_prompt, _content, auth.identity
        )
    except FaultSpecError as exc:
        return await fail(336001, f"Invalid Argument: {exc}")
    fault, prompt = question.fault, question.prompt
    if isinstance(fault.error, str):
        return await fail(336001, f"Invalid Argument: error={fault.error} is a v2 error code")
    texts = [m["content"] for m in messages if isinstance(m.get("content"), str)]
    if isinstance(body.get("system"), str):
        texts.append(body["system"])
    answer = plan_answer(
        config,
        prompt,
        question.scenario,
        fault,
        sentence_pieces,
        normal_finish="normal",
        stop=body.get("stop"),
        max_tokens=body.get("max_output_tokens"),
        prompt_token_count=prompt_tokens(texts),
        shown=question.shown,
        text=_after_function(messages, prompt),
    )
    call = _function_call(shared, body, messages, prompt)
    if call is not None:
        tokens = prompt_tokens([call["arguments"]])
        answer = Answer(("",), "function_call", False, 0, answer.prompt_tokens, (0, tokens))
    verdict = shared.quotas.admit(
        auth.identity, answer.prompt_tokens, answer.completion_tokens, config.clock()
    )
    headers += shared.quotas.headers(verdict, v2=False)
    if verdict.error is not None:
        return await fail(verdict.error)
    if fault.expire_token:
        shared.auth.expire_token(auth.token)
        return await fail(111)
    stream = body.get("stream") is True
    if isinstance(fault.error, int) and fault.errs_at_once(stream=stream):
        return await fail(fault.error)
    plan = _plan(shared, answer, fault, response_id, stream=stream, call=call)
    whole = None if stream else _complete_body(answer, response_id, call)
    return await shared.respond(receive, send, plan, headers, whole)


def _after_function(messages: list[dict[str, Any]], question: str) -> str | None:
    """The text answer after a ``function`` result (None when the last message is none)."""
    if messages[-1].get("role") != "function":
        return None
    users = [m for m in messages if m.get("role") == "user"]
    asked = strip_directives(_content(users[-1])) if users else question
    result = {"role": "tool", "name": messages[-1].get("name"), "content": _content(messages[-1])}
    return answer_after_tools([result], asked)


def _function_call(
    shared: Shared, body: dict[str, Any], messages: list[dict[str, Any]], question: str
) -> dict[str, Any] | None:
    """The ``function_call`` to answer with, or None (answer in text)."""
    functions = body.get("functions")
    if not isinstance(functions, list) or not functions or messages[-1].get("role") != "user":
        return None
    tools = {
        "tools": [{"type": "function", "function": f} for f in functions if isinstance(f, dict)],
        "tool_choice": body.get("tool_choice", "auto"),
        "parallel_tool_calls": False,
    }
    config = shared.config
    calls = plan_calls(tools, question, today(config), shared.new_call_id)
    if not calls:
        return None
    thoughts = f"用户想知道“{brief(question)}”，需要调用 {calls[0].name} 来获取信息。"
    return {"name": calls[0].name, "arguments": calls[0].arguments, "thoughts": thoughts}


def _complete_body(
    answer: Answer, response_id: str, call: dict[str, Any] | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "result": answer.text,
        "is_truncated": answer.truncated,
        "need_clear_history": answer.safety > 0,
    }
    if call is not None:
        result["function_call"] = call
    if answer.safety:
        result["ban_round"] = -1
    result["finish_reason"] = answer.finish
    result["usage"] = _usage(answer.prompt_tokens, answer.completion_tokens)
    return result


def _plan(
    shared: Shared,
    answer: Answer,
    fault: FaultSpec,
    response_id: str,
    *,
    stream: bool,
    call: dict[str, Any] | None = None,
) -> StreamPlan:
    """The stream plan of a v1 answer: sentence chunks, then the empty ``is_end`` chunk."""
    pieces = answer.pieces
    n_pieces = len(pieces)
    prompt = answer.prompt_tokens
    running = _usage(prompt, 0)
    # Safety 1–2 marks every chunk; 3–4 only the end chunk (the cut point).
    marked = 0 < answer.safety < 3

    def chunk(
        sentence_id: int,
        result: str,
        *,
        is_end: bool,
        flagged: bool,
        finish: str,
        usage: dict[str, int],
    ) -> bytes:
        """One chunk of the stream: a sentence, or the empty end chunk (``is_end``)."""
        fields: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "sentence_id": sentence_id,
            "is_end": is_end,
            "is_truncated": is_end and answer.truncated,
            "result": result,
            "need_clear_history": flagged,
        }
        if flagged:
            fields["ban_round"] = -1
        if call is not None and not is_end:
            fields["function_call"] = call
        fields["finish_reason"] = finish
        fields["usage"] = usage
        return json_bytes(fields)

    def render(index: int) -> bytes:
        piece = pieces[index % n_pieces]
        return chunk(index, piece, is_end=False, flagged=marked, finish="normal", usage=running)

    def end(sent: int) -> bytes:
        usage = _usage(prompt, answer.completion_after(sent))
        return chunk(
            sent, "", is_end=True, flagged=answer.safety > 0, finish=answer.finish, usage=usage
        )

    config = shared.config
    count = ENDLESS_CAP if stream and fault.endless and call is None else n_pieces
    error = fault.error if isinstance(fault.error, int) else 336000
    return StreamPlan(
        count=count,
        render=render,
        end_json=end,
        done_marker=False,
        error_json=json_bytes(error_body(error, None, response_id)),
        ttft=config.ttft if fault.ttft is None else fault.ttft,
        interval=config.interval if fault.interval is None else fault.interval,
        fault=fault,
    )
