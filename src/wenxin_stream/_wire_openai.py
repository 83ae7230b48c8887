"""OpenAI-compatible servers' responses (vLLM, FastDeploy, SGLang…): bytes in, v2's events out.

A self-hosted ERNIE 4.5 answers in OpenAI's dialect, which is v2's: the same chunks, deltas,
tool-call fragments, ``usage`` on the last chunk and ``data: [DONE]``. So the parser *is*
``_wire_v2``'s, with three differences (``shared/ERNIE-CURRENT.md`` §7):

* **errors** have other shapes and no Baidu codes: OpenAI's ``{"error": {message, type, param,
  code}}``, vLLM's and older FastDeploy's flat ``{"object": "error", …, "code": 400}`` (nested
  under ``error`` inside a stream), ``{"error": "Unauthorized"}``; they are classified by
  :func:`~wenxin_stream._exceptions.api_error_from_openai`. vLLM and FastDeploy send
  ``data: [DONE]`` right after an error inside a stream: the error is raised first, so such a
  stream never looks finished;
* **reasoning** comes as ``reasoning_content`` (FastDeploy, older vLLM) or ``reasoning``
  (current vLLM) — ``_wire_v2`` already reads both — and becomes the same ReasoningDelta;
* **extra fields**: these servers add fields Qianfan does not send — vLLM's ``logprobs: null``
  and ``stop_reason`` on every choice, FastDeploy's ``arrival_time``, null token-id fields and
  ``metrics``, OpenAI's ``system_fingerprint`` / ``service_tier`` / ``obfuscation``. A field
  whose value is ``null``, and the telemetry of :data:`IGNORED_FIELDS`, carry nothing for the
  caller and are dropped; any other unknown field is kept (UnknownFieldsEvent, or
  ``ChatResult.extra``) as on v2, so an answer's events are those a v2 stream gives;
* **``finish_reason: "recover_stop"``** (FastDeploy: its engine recovered from a failure and
  stopped the answer) is not a finish: the text up to it is delivered, then the next event
  raises :func:`recover_stop_error` (retryable, so continue mode picks the answer up), and a
  non-stream answer ending so is that error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ._events import ChatResult, FinishEvent, StreamEvent
from ._exceptions import (
    ApiGeneration,
    InternalServerError,
    WenxinError,
    api_error_from_openai,
)
from ._stream_parser import load_json_object
from ._wire_v2 import V2StreamParser, parse_v2_response

__all__ = ["IGNORED_FIELDS", "RECOVER_STOP", "OpenAIStreamParser", "parse_openai_body"]

RECOVER_STOP = "recover_stop"
"""FastDeploy's ``finish_reason`` for an answer its engine cut while recovering."""

IGNORED_FIELDS = frozenset({"system_fingerprint", "service_tier", "obfuscation", "arrival_time"})
"""Fields of a chunk or choice that are telemetry, not part of the answer."""


def _extras(fields: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """The unknown fields worth reporting: not known, not null, not telemetry."""
    return {
        key: value
        for key, value in fields.items()
        if value is not None and key not in known and key not in IGNORED_FIELDS
    }


def is_error_body(body: Mapping[str, Any]) -> bool:
    """Whether a JSON object is an error (any of the shapes above) rather than an answer."""
    if body.get("choices"):
        return False
    return "error" in body or body.get("object") == "error" or "detail" in body


def recover_stop_error(headers: Mapping[str, str] | None = None) -> InternalServerError:
    """The error of an answer that ended with ``finish_reason: "recover_stop"``."""
    return InternalServerError(
        "the server stopped the answer early (finish_reason recover_stop: its engine "
        "recovered from a failure); the answer is incomplete",
        api="openai",
        code=RECOVER_STOP,
        status_code=200,
        headers=headers,
    )


class OpenAIStreamParser(V2StreamParser):
    """Sans-I/O parser of an OpenAI-compatible chat stream (see the module docstring)."""

    _api: ClassVar[ApiGeneration] = "openai"

    __slots__ = ("_recovered",)

    def _init_state(self) -> None:
        super()._init_state()
        self._recovered = False

    def _handle(self, data: str, out: list[StreamEvent]) -> None:
        if self._recovered:  # whatever follows a recover_stop, [DONE] included
            raise recover_stop_error(self._headers)
        super()._handle(data, out)
        if self._raw_reason == RECOVER_STOP:
            self._recovered = True
            self._raw_reason = None
            self._finish_reason = None
            for position in range(len(out) - 1, -1, -1):
                if type(out[position]) is FinishEvent:
                    del out[position]
                    break

    def _extras(self, fields: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
        return _extras(fields, known)

    def _error_from(self, value: dict[str, Any]) -> WenxinError | None:
        if is_error_body(value) or "code" in value:
            return api_error_from_openai(200, value, headers=self._headers)
        return None

    def _chunk_error(self, chunk: dict[str, Any]) -> WenxinError | None:
        if is_error_body(chunk):
            return api_error_from_openai(200, chunk, headers=self._headers)
        return None


def parse_openai_body(
    status: int, raw: bytes | str, *, headers: Mapping[str, str] | None = None
) -> ChatResult:
    """A whole non-stream answer (status and body bytes) as a :class:`ChatResult`, or the
    APIError it carries (any non-2xx status, whatever the body; an error object even with
    200)."""
    if not 200 <= status < 300:
        raise api_error_from_openai(status, raw, headers=headers)
    body = load_json_object(raw, api="openai")
    if is_error_body(body):
        raise api_error_from_openai(status, body, headers=headers)
    result = parse_v2_response(body, headers=headers, extras=_extras)
    if result.raw_finish_reason == RECOVER_STOP:
        raise recover_stop_error(headers)
    return result
