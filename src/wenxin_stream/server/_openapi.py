"""The OpenAPI 3.1 document of ``wenxin serve`` (``GET /openapi.json``), written by hand.

It describes the routes of ``docs/SERVER-API.md`` — the contract — and nothing else: request
bodies (as strict as JSON Schema can say: non-blank text, ranges, nullable optional fields),
the JSON answers, the one error shape every 4xx/5xx uses, and the event streams. An event
stream's ``schema`` describes ONE event, ``{event, id, data}``, as OpenAPI 3.1 tools read it
(3.2's ``itemSchema``): ``data`` is JSON text whose ``contentSchema`` is the event's payload
(``StreamStart`` / ``StreamDelta`` / ``StreamEnd``; ``ChatCompletionChunk`` or an error, then
``[DONE]``, on the OpenAI route). The WebSocket (``/api/ws``) cannot be expressed in OpenAPI:
its ``GET`` is documented as what a plain HTTP request gets (426) and what an upgrade gets
(101), and its frames are in the contract. Built fresh per call from small helpers (it is
requested rarely), so nothing here is shared mutable state. ``tests/server/test_openapi_fuzz``
runs schemathesis against it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["document"]

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": "#/components/responses/Error"} for s in statuses}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_S = {"type": "string"}
_NS = {"type": ["string", "null"]}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_N = {"type": ["number", "null"]}
_TEXT = {"type": "string", "pattern": "[^\\s\\x1c-\\x1f\\x85]"}
"""Text that is not blank (Python's whitespace: ECMA's ``\\s`` and ``\\x1c-\\x1f``,
``\\x85``)."""


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


def _json_text(schema: dict[str, Any]) -> dict[str, Any]:
    """An SSE ``data`` field: JSON text whose content is ``schema``."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def _event(name: str, payload: str) -> dict[str, Any]:
    return _obj(["event", "data"], event={"const": name}, id=_S, data=_json_text(_ref(payload)))


_NATIVE_EVENTS = {"oneOf": [_event("start", "StreamStart"), _event("delta", "StreamDelta"),
                            _event("reasoning", "StreamDelta"),
                            _event("search_results", "StreamSearchResults"),
                            _event("tool_call", "StreamToolCall"),
                            _event("end", "StreamEnd")]}  # fmt: skip
_OPENAI_EVENTS = {"oneOf": [
    _obj(["data"], data={"const": "[DONE]"}),
    _obj(["data"], data={"type": "string", "pattern": "^\\{",
                         "contentMediaType": "application/json",
                         "contentSchema": {"oneOf": [_ref("ChatCompletionChunk"),
                                                     _ref("Error")]}}),
]}  # fmt: skip
_SSE = {"content": {"text/event-stream": {"schema": _NATIVE_EVENTS}}}
_ID = {"name": "id", "in": "path", "required": True, "schema": _S}
_AUTH: list[dict[str, list[str]]] = [{"apiKey": []}, {}]
_UPSTREAM = {"enum": ["emulator", "ernie"]}


def _schemas() -> dict[str, Any]:
    usage = _obj(["prompt_tokens", "completion_tokens", "total_tokens"],
                 prompt_tokens={"type": "integer"}, completion_tokens={"type": "integer"},
                 total_tokens={"type": "integer"})  # fmt: skip
    # who continued an answer taken over from another instance (docs/SCALING.md)
    continued = _nullable(
        _obj(["by", "token", "at_chars"], by=_NS, token={"type": "integer"},
             at_chars={"type": "integer"})
    )  # fmt: skip
    message = _obj(
        ["id", "role", "content", "status"],
        id=_S, role={"enum": ["user", "assistant", "system"]}, content=_S,
        status={"enum": ["complete", "partial", "streaming"]}, end_reason=_NS, model=_NS,
        usage={"oneOf": [_ref("Usage"), {"type": "null"}]}, ttft_ms=_N, total_ms=_N,
        generated_chars={"type": ["integer", "null"]},
        delivered_chars={"type": ["integer", "null"]}, created_at=_S, reasoning=_NS,
        search_results=_nullable({"type": "array", "items": _ref("SearchResult")}),
        tool_calls=_nullable({"type": "array", "items": _ref("StreamToolCall")}),
        continued=continued,
    )  # fmt: skip
    summary = _obj(["id", "title", "model"], id=_S, title=_S, model=_S, created_at=_S,
                   updated_at=_S, message_count={"type": "integer"})  # fmt: skip
    conversation = _obj(["id", "title", "model", "messages"], id=_S, title=_S, model=_S,
                        system=_NS, created_at=_S, updated_at=_S,
                        messages={"type": "array", "items": _ref("Message")})  # fmt: skip
    error = _obj(["error"], error=_obj(["message", "type", "code"], message=_S, type=_S,
                                       code=_S, param=_NS,
                                       upstream_code={"type": ["integer", "string"]}))  # fmt: skip
    in_band = _obj(["code", "message", "type", "status"], code=_S, message=_S, type=_S,
                   status={"type": "integer"}, retry_after={"type": "integer", "minimum": 1},
                   upstream_code={"type": ["integer", "string"]})  # fmt: skip
    start = _obj(["model"], stream_id=_S, conversation_id=_S, message_id=_S, model=_S)
    delta = _obj(["text"], text=_S)
    source = _obj(["index", "url", "title"], index={"type": "integer"}, url=_S, title=_S)
    found = _obj(["results"], results={"type": "array", "items": _ref("SearchResult")})
    tool_call = _obj(["id", "name", "arguments"], id=_S, name=_S, arguments=_S)
    end = _obj(["end_reason"], end_reason=_S, finish_reason=_NS,
               usage={"oneOf": [_ref("Usage"), {"type": "null"}]}, ttft_ms=_N, total_ms=_N,
               reasoning_chars={"type": "integer"}, message_id=_S,
               error=_ref("InBandError"))  # fmt: skip
    chunk_choice = _obj(["index", "delta", "finish_reason"], index={"type": "integer"},
                        delta=_obj([], role={"const": "assistant"}, content=_S,
                                   reasoning_content=_S,
                                   tool_calls={"type": "array", "items": {"type": "object"}}),
                        finish_reason={"enum": ["stop", "length", "content_filter",
                                                "tool_calls", "function_call", None]})  # fmt: skip
    chunk = _obj(["id", "object", "created", "model", "choices"], id=_S,
                 object={"const": "chat.completion.chunk"}, created={"type": "integer"},
                 model=_S, choices={"type": "array", "items": chunk_choice},
                 usage=_ref("Usage"),
                 search_results={"type": "array", "items": _ref("SearchResult")})  # fmt: skip
    completion = _obj(["id", "object", "created", "model", "choices", "usage"], id=_S,
                      object={"const": "chat.completion"}, created={"type": "integer"}, model=_S,
                      choices={"type": "array", "items": _obj(
                          ["index", "message", "finish_reason"], index={"type": "integer"},
                          message=_obj(["role", "content"], role={"const": "assistant"},
                                       content=_S),
                          finish_reason={"enum": ["stop", "length", "content_filter",
                                                  "tool_calls", "function_call"]})},
                      usage={"oneOf": [_ref("Usage"), {"type": "null"}]})  # fmt: skip
    chat_message = _obj(["role", "content"],
                        role={"enum": ["system", "developer", "user", "assistant"]},
                        content={"oneOf": [_TEXT, {"type": "array", "minItems": 1,
                                                   "items": _obj(["type", "text"],
                                                                 type={"const": "text"},
                                                                 text=_TEXT)}]})  # fmt: skip
    stop_word = {"type": "string", "maxLength": 20}
    completion_request = _obj(
        ["model", "messages"], model=_TEXT,
        messages={"type": "array", "items": _ref("ChatMessage"), "minItems": 1},
        stream={"type": ["boolean", "null"]},
        stream_options=_nullable(_obj([], include_usage={"type": "boolean"})),
        temperature={"type": ["number", "null"], "minimum": 0, "maximum": 2},
        top_p={"type": ["number", "null"], "minimum": 0, "maximum": 1},
        max_tokens={"type": ["integer", "null"], "minimum": 1},
        stop=_nullable({"oneOf": [stop_word, {"type": "array", "maxItems": 4,
                                              "items": stop_word}]}),
        user=_NS,
    )  # fmt: skip
    return {
        "Usage": usage,
        "Message": message,
        "ConversationSummary": summary,
        "Conversation": conversation,
        "Error": error,
        "InBandError": in_band,
        "StreamStart": start,
        "StreamDelta": delta,
        "StreamSearchResults": found,
        "StreamToolCall": tool_call,
        "SearchResult": source,
        "StreamEnd": end,
        "ChatMessage": chat_message,
        "ChatCompletionRequest": completion_request,
        "ChatCompletion": completion,
        "ChatCompletionChunk": chunk,
    }


_STREAM_DOC = (
    "Events `start` (with `model`, `message_id` and `question_id`), `reasoning` "
    '(`{"text"}`: thinking, before the answer), '
    '`search_results` (`{"results"}`, once, before the text citing them), `delta` '
    '(`{"text"}`), `tool_call` (`{"id", "name", "arguments"}`, one per complete call), `end` '
    "(`end_reason`, `finish_reason`, `usage`, `ttft_ms`, `total_ms`, `reasoning_chars`, "
    "`message_id`, and `error` after a failure); ids `<stream_id>:<seq>`; `: ping` comments "
    "at least every `--ping-interval` seconds."
)


def _paths() -> dict[str, Any]:
    model = {"type": ["string", "null"], "description": "blank or null: the default model"}
    conv_body = _obj([], title=_NS, model=model, system=_NS)
    rename_body = _obj(["title"], title={**_TEXT, "maxLength": 200})
    img = {"type": "string", "pattern": "^(https?://|data:image/)"}
    ask_body = _obj(["content"], content=_TEXT, model=model, system=_NS,
                    enable_thinking={"type": ["boolean", "null"]},
                    web_search={"type": ["boolean", "object", "null"]},
                    images=_nullable({"type": "array", "maxItems": 10, "items": img}),
                    replace={**_NS, "description": "the id of the last question: its "
                             "exchange is replaced (404 unknown; 409 not the last, or still "
                             "streaming)"})  # fmt: skip
    model_info = _obj(["id", "name", "family", "group", "capabilities", "reasoning", "default",
                       "retired"],
                      id=_S, name=_S, family=_S, group={"enum": ["current", "light", "legacy"]},
                      context_window={"type": ["integer", "null"]},
                      max_output_tokens={"type": ["integer", "null"]},
                      capabilities={"type": "array", "items": {
                          "enum": ["reasoning", "tools", "search", "vision"]}},
                      reasoning={"enum": ["hybrid", "always", None]},
                      default={"type": "boolean"}, retired={"type": "boolean"})  # fmt: skip
    return {
        "/healthz": {"get": {"summary": "Liveness", "security": [],
                             "responses": {"200": _json(_obj(["status"], status=_S))}}},
        "/readyz": {"get": {"summary": "Readiness (503 while starting or shutting down, or "
                                       "while a route has no channel that can serve)",
                            "security": [],
                            "responses": {"200": _json(_obj(["status", "upstream"], status=_S,
                                                            upstream=_UPSTREAM,
                                                            channels_down=_STRINGS)),
                                          **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {
            "200": {"description": "OK", "content": {"text/plain": {"schema": _S}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": {"200": _json({"type": "object"})}}},
        "/api/admin/channels": {"get": {
            "summary": "Health of every upstream channel (admin key, or dev mode)",
            "security": [],
            "responses": {"200": _json(_obj(
                ["gateway", "channels", "channels_down", "routes_down"],
                gateway={"type": "boolean"}, channels_down=_STRINGS, routes_down=_STRINGS,
                channels={"type": "array", "items": _obj(
                    ["name", "kind", "state", "consecutive_failures", "cooldown_left",
                     "in_flight", "requests"],
                    name=_S, kind=_S, base_url=_S, models=_STRINGS,
                    weight={"type": "integer"}, priority={"type": "integer"},
                    state={"enum": ["closed", "half_open", "open"]},
                    consecutive_failures={"type": "integer"},
                    times_opened={"type": "integer"}, cooldown_left={"type": "number"},
                    rate_limit_wait={"type": "number"}, in_flight={"type": "integer"},
                    requests={"type": "object", "additionalProperties": {"type": "integer"}},
                    failovers={"type": "object", "additionalProperties": {"type": "integer"}},
                    ttft_avg_ms=_N, last_error=_NS)})),
                **_errors(401, 403)}}},
        "/api/info": {"get": {"summary": "Server and upstream", "security": [], "responses": {
            "200": _json(_obj(["version", "upstream", "api", "default_model", "models",
                               "auth_required"], version=_S, upstream=_S, api=_S,
                              default_model=_S, models={"type": "array", "items": _S},
                              auth_required={"type": "boolean"}))}}},
        "/api/conversations": {
            "get": {"summary": "List conversations, newest first",
                    "parameters": [{"name": "limit", "in": "query",
                                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                    "responses": {"200": _json(_obj(["conversations"], conversations={
                        "type": "array", "items": _ref("ConversationSummary")})),
                        **_errors(400, 401)}},
            "post": {"summary": "Create a conversation",
                     "requestBody": {"content": {"application/json": {"schema": conv_body}}},
                     "responses": {"201": _json(_ref("Conversation"), "Created"),
                                   **_errors(400, 401, 404, 413)}},
        },
        "/api/conversations/{id}": {
            "parameters": [_ID],
            "get": {"summary": "A conversation with its messages",
                    "responses": {"200": _json(_ref("Conversation")), **_errors(401, 404)}},
            "patch": {"summary": "Rename a conversation",
                      "requestBody": {"required": True, "content": {"application/json": {
                          "schema": rename_body}}},
                      "responses": {"200": _json(_ref("ConversationSummary")),
                                    **_errors(400, 401, 404, 413)}},
            "delete": {"summary": "Delete a conversation",
                       "responses": {"204": {"description": "Deleted"}, **_errors(401, 404)}},
        },
        "/api/conversations/{id}/messages": {
            "parameters": [_ID],
            "post": {"summary": "Ask; the answer streams as server-sent events",
                     "description": _STREAM_DOC,
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": ask_body}}},
                     "responses": {"200": {"description": "The answer", **_SSE},
                                   **_errors(400, 401, 404, 409, 413, 429, 503)}},
        },
        "/api/streams/{id}": {
            "parameters": [_ID, {"name": "Last-Event-ID", "in": "header", "schema": _S},
                           {"name": "last_event_id", "in": "query", "schema": _S}],
            "get": {"summary": "Resume a stream after Last-Event-ID (within the grace window)",
                    "description": _STREAM_DOC,
                    "responses": {"200": {"description": "The rest of the answer", **_SSE},
                                  **_errors(400, 401, 404)}},
        },
        "/api/streams/{id}/cancel": {
            "parameters": [_ID],
            "post": {"summary": "Stop a stream",
                     "responses": {"202": _json(_obj(["stream_id", "status"], stream_id=_S,
                                                     status=_S), "Accepted"),
                                   **_errors(401, 404)}},
        },
        "/api/ws": {"get": {
            "summary": "WebSocket: several asks per socket, in-band cancel",
            "description": "JSON text frames; see docs/SERVER-API.md (`auth`, `ask`, "
                           "`cancel` → `start`, `delta`, `end`, `error`). A WebSocket "
                           "handshake gets 101; a plain HTTP GET gets 426.",
            "security": [],
            "responses": {"101": {"description": "Switching protocols (a WebSocket "
                                                 "handshake)"},
                          **_errors(426)}}},
        "/v1/chat/completions": {"post": {
            "summary": "OpenAI-compatible chat completions (stream or not)",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("ChatCompletionRequest")}}},
            "responses": {"200": {"description": "`chat.completion`, or a stream of "
                                                 "`chat.completion.chunk` ending in [DONE] "
                                                 "(an error event before [DONE] when the "
                                                 "answer was cut)",
                                  "content": {"application/json": {
                                                  "schema": _ref("ChatCompletion")},
                                              "text/event-stream": {
                                                  "schema": _OPENAI_EVENTS}}},
                          **_errors(400, 401, 404, 413, 429, 502, 503, 504)}}},
        "/v1/models": {"get": {"summary": "Live models, with context window, output limit "
                                          "and capabilities as extra fields", "responses": {
            "200": _json(_obj(["object", "data"], object={"const": "list"},
                              data={"type": "array", "items": {"type": "object"}}))}}},
        "/v1/models/{id}": {"parameters": [_ID], "get": {
            "summary": "One model or alias (403 model_offline when retired)",
            "responses": {"200": _json(_obj(["id", "object"], id=_S, object={"const": "model"})),
                          **_errors(401, 403, 404)}}},
        "/api/models": {"get": {"summary": "The catalogue for the page's model picker",
                                "responses": {"200": _json(_obj(["models"], models={
                                    "type": "array", "items": model_info})),
                                              **_errors(401)}}},
        "/api/usage": {"get": {
            "summary": "The caller's own usage, spend and budgets (never another key's)",
            "description": "Beijing days, both included; default: this month up to today. "
                           "Costs are CNY as exact decimal strings.",
            "parameters": [{"name": name, "in": "query",
                            "schema": {"type": "string", "format": "date"}}
                           for name in ("from", "to")],
            "responses": {"200": _json(_obj(
                ["object", "key_id", "from", "to", "days", "totals", "budgets"],
                object={"const": "usage"}, key_id=_S, days={"type": "array", "items": _obj(
                    ["day", "model", "requests", "answers", "total_tokens", "cost_cny"],
                    day=_S, model=_S, cost_cny=_S)},
                totals=_obj(["requests", "answers", "total_tokens", "cost_cny"], cost_cny=_S),
                budgets={"type": "array", "items": _obj(
                    ["period", "label", "tokens_spent", "cny_spent", "resets_at"],
                    period={"enum": ["day", "month"]}, tokens_limit={"type": ["integer", "null"]},
                    cny_limit=_NS, cny_spent=_S, resets_at={"type": "integer"})},
                **{"from": _S, "to": _S})),
                **_errors(400, 401, 503)}}},
    }  # fmt: skip


def document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for server ``version``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wenxin serve",
            "version": version,
            "description": "Real-time ERNIE (文心一言) Q&A: SSE, WebSocket and an "
            "OpenAI-compatible API. Contract: docs/SERVER-API.md.",
        },
        "servers": [{"url": "/"}],
        "security": _AUTH,
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": {"Error": _json(_ref("Error"), "An error (OpenAI's shape)")},
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "wx-… key; none "
                           "needed in dev mode"},
            },
        },
    }  # fmt: skip
