"""The rules ERNIE applies to a chat request's messages (both generations) and v1 parameters,
as pure checks shared by client and emulator.

The client runs them before sending, so a bad request fails locally with a clear message and
costs no round trip; the emulator runs the very same checks to answer like Baidu does
(``error_code`` 336006 for message-order problems, 336003 for parameter ranges, HTTP 400
``invalid_messages`` / ``invalid_argument`` / ``invalid_image_url`` on v2). See
``shared/ERNIE-PROTOCOL.md`` §1.4–1.5 and ``shared/ERNIE-CURRENT.md`` §2.5, §3.1, §5. The v2
parameters, and what a model of the catalogue can honour, are checked in ``_parameters``.

v2 messages (:func:`check_v2_messages`): known roles; ``content`` a string or a list of
``text`` / ``image_url`` parts, images only in ``user`` messages, each image URL within Baidu's
limits (``_images``); assistant ``tool_calls`` well formed; every ``tool`` message answering a
call of the assistant turn before it (``tool_call_id``; several in a row for parallel calls);
no ``reasoning_content`` in the history (Qianfan answers 400: the SDK strips it before this
check, the emulator refuses it like Baidu); a last message that is not blank.

Each check returns the first :class:`Problem` found, or ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._images import ImageProblem, describe_image_url

MESSAGES_ERROR_CODE = 336006
"""v1 error code Baidu answers for message-list violations."""

PARAMS_ERROR_CODE = 336003
"""v1 error code Baidu answers for parameter-range violations."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One rule a request breaks: the offending ``field``, a Baidu-style ``message``, and the
    codes the two API generations answer with (``v1_code`` int, ``v2_code`` string)."""

    field: str
    message: str
    v1_code: int
    v2_code: str


def _msg_problem(message: str) -> Problem:
    return Problem("messages", message, MESSAGES_ERROR_CODE, "invalid_messages")


def _param_problem(field: str, message: str) -> Problem:
    return Problem(field, message, PARAMS_ERROR_CODE, "invalid_argument")


def _is_blank(text: str) -> bool:
    return not text.strip(" \n\r\f\t")


def _parts_text(parts: list[Any]) -> str:
    """The text parts of a (checked) content list, joined."""
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, Mapping)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    )


def message_text(message: Any) -> str:
    """The text of a (checked) v2 message: its string content, or its text parts joined;
    "" for anything else (a tool-call turn without content)."""
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return _parts_text(content)
    return ""


def image_parts(messages: Sequence[Any]) -> Iterator[tuple[int, int, Mapping[str, Any]]]:
    """(message index, part index, ``image_url`` object) of every image part of ``messages``."""
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            for position, part in enumerate(content):
                if isinstance(part, Mapping) and part.get("type") == "image_url":
                    image = part.get("image_url")
                    yield index, position, image if isinstance(image, Mapping) else {}


_IMAGE_DETAIL = ("low", "high", "auto")


def _check_parts(index: int, role: object, content: list[Any]) -> Problem | None:
    for position, part in enumerate(content):
        where = f"message {index} part {position}"
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            return _msg_problem(f"{where} must be an object with a type")
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                return _msg_problem(f"{where}: a text part needs a string text")
        elif kind == "image_url":
            if role != "user":
                return _msg_problem(f"{where}: images are accepted in user messages only")
            image = part.get("image_url")
            if not isinstance(image, Mapping):
                return _msg_problem(f"{where}: an image_url part needs an image_url object")
            detail = image.get("detail")
            if detail is not None and detail not in _IMAGE_DETAIL:
                return _msg_problem(f"{where}: image_url.detail must be low or high")
            try:
                describe_image_url(image.get("url"))
            except ImageProblem as exc:
                field = f"messages[{index}].content[{position}].image_url.url"
                return Problem(field, str(exc), MESSAGES_ERROR_CODE, "invalid_image_url")
        else:
            return _msg_problem(f"{where}: unknown content part type {kind!r}")
    return None


def _check_tool_calls(index: int, calls: object) -> tuple[set[str], Problem | None]:
    """The ids of an assistant turn's ``tool_calls``, or the problem with them."""
    ids: set[str] = set()
    if not isinstance(calls, list) or not calls:
        return ids, _msg_problem(f"message {index}: tool_calls must be a non-empty list")
    for position, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if (
            not isinstance(call, Mapping)
            or not isinstance(call.get("id"), str)
            or not call["id"]
            or call.get("type", "function") != "function"
            or not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments", ""), str)
        ):
            return ids, _msg_problem(
                f"message {index} tool call {position} must be "
                '{"id", "type": "function", "function": {"name", "arguments" (a JSON string)}}'
            )
        ids.add(call["id"])
    return ids, None


def check_v1_messages(messages: object) -> Problem | None:
    """Check a v1 ``messages`` list: non-empty, odd length, user/assistant alternation, no
    ``system`` role (it belongs in the ``system`` field), non-empty contents, a ``name`` on
    ``function`` messages, and a last message that is not blank."""
    if not isinstance(messages, list) or not messages:
        return _msg_problem("the messages must not be empty")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            return _msg_problem(f"message {index} must be an object")
        role = message.get("role")
        if role == "system":
            return _msg_problem("the role of message can not be system, put it in the system field")
        if index % 2 == 0:
            if role not in ("user", "function") or (index == 0 and role == "function"):
                return _msg_problem(
                    "the role of message with even index in the messages must be user"
                    + (" or function" if index else "")
                )
        elif role != "assistant":
            return _msg_problem(
                "the role of message with odd index in the messages must be assistant"
            )
        content = message.get("content")
        if content is None or content == "":
            if role == "assistant" and message.get("function_call"):
                continue
            return _msg_problem(f"the content of message {index} must not be empty")
        if not isinstance(content, str):
            return _msg_problem(f"the content of message {index} must be a string")
        if role == "function" and not message.get("name"):
            return _msg_problem(f"message {index} with role function must have a name")
    if len(messages) % 2 == 0:
        return _msg_problem("the length of messages must be an odd number")
    last = messages[-1].get("content")
    if not isinstance(last, str) or _is_blank(last):
        return _msg_problem("the content of the last message must not be blank")
    return None


V2_ROLES = frozenset({"system", "user", "assistant", "tool", "function"})


def check_v2_messages(messages: object, *, alternation: bool = False) -> Problem | None:
    """Check a v2 ``messages`` list (see the module docstring); with ``alternation`` also v1's
    odd/alternating rule (after any leading system messages), which legacy ERNIE models may
    still enforce."""
    if not isinstance(messages, list) or not messages:
        return _msg_problem("the messages must not be empty")
    answered: set[str] = set()  # tool_call ids of the last assistant turn with tool_calls
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            return _msg_problem(f"message {index} must be an object")
        role = message.get("role")
        if role not in V2_ROLES:
            return _msg_problem(f"the role of message {index} is invalid: {role!r}")
        if "reasoning_content" in message:
            return _msg_problem(
                f"message {index} carries reasoning_content: earlier reasoning must not be "
                "sent back (remove it from the history)"
            )
        content = message.get("content")
        calls = message.get("tool_calls") if role == "assistant" else None
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                return _msg_problem(f"message {index} with role tool must have a tool_call_id")
            if call_id not in answered:
                return _msg_problem(
                    f"message {index}: tool_call_id {call_id!r} answers no tool call of the "
                    "assistant message before it"
                )
        elif role != "assistant" or calls is not None:
            answered = set()
        if calls is not None:
            answered, problem = _check_tool_calls(index, calls)
            if problem is not None:
                return problem
        if content is None and calls is None:
            return _msg_problem(f"the content of message {index} must not be empty")
        if isinstance(content, list):
            problem = _check_parts(index, role, content)
            if problem is not None:
                return problem
        elif content is not None and not isinstance(content, str):
            return _msg_problem(f"the content of message {index} is malformed")
    last = messages[-1].get("content")
    if isinstance(last, str) and _is_blank(last):
        return _msg_problem("the content of the last message must not be blank")
    if (
        isinstance(last, list)
        and not any(True for _ in image_parts(messages[-1:]))
        and _is_blank(_parts_text(last))
    ):
        return _msg_problem("the content of the last message must not be blank")
    if alternation:
        rest = [m for m in messages if m.get("role") != "system"]
        converted = [{**m, "role": "function"} if m.get("role") == "tool" else m for m in rest]
        if any(not isinstance(m.get("content"), str) for m in converted if m.get("content")):
            return None
        return check_v1_messages(converted)
    return None


def _number(body: Mapping[str, Any], key: str) -> float | Problem | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _param_problem(key, f"{key} must be a number")
    return float(value)


_RANGES: tuple[tuple[str, float, float, bool], ...] = (
    # name, low, high, low bound exclusive
    ("temperature", 0.0, 1.0, True),
    ("top_p", 0.0, 1.0, False),
    ("penalty_score", 1.0, 2.0, False),
)


def check_v1_params(body: Mapping[str, Any]) -> Problem | None:
    """Check the v1 parameter ranges: temperature (0, 1], top_p [0, 1], penalty_score [1, 2],
    max_output_tokens [2, 2048], at most 4 ``stop`` words of at most 20 characters, and the
    types of ``system``, ``stream`` and the boolean switches."""
    for key, low, high, exclusive in _RANGES:
        value = _number(body, key)
        if isinstance(value, Problem):
            return value
        if value is not None and (value < low or value > high or (exclusive and value == low)):
            interval = f"{'(' if exclusive else '['}{low:g}, {high:g}]"
            return _param_problem(key, f"{key} must be in range {interval}")
    mot = body.get("max_output_tokens")
    if mot is not None and (
        isinstance(mot, bool) or not isinstance(mot, int) or not 2 <= mot <= 2048
    ):
        return _param_problem("max_output_tokens", "max_output_tokens must be in range [2, 2048]")
    problem = check_stop(body.get("stop"))
    if problem is not None:
        return problem
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        return _param_problem("system", "system must be a string")
    for key in ("stream", "disable_search", "enable_citation", "enable_trace"):
        if key in body and not isinstance(body[key], bool):
            return _param_problem(key, f"{key} must be a boolean")
    return None


def check_stop(stop: object) -> Problem | None:
    """Check a ``stop`` list: at most 4 strings of at most 20 characters each."""
    if stop is None:
        return None
    if not isinstance(stop, Sequence) or isinstance(stop, str):
        return _param_problem("stop", "stop must be a list of strings")
    if len(stop) > 4:
        return _param_problem("stop", "stop must have at most 4 elements")
    for word in stop:
        if not isinstance(word, str) or len(word) > 20:
            return _param_problem("stop", "each stop word must be a string of at most 20 chars")
    return None
