"""Continue mode: finishing an interrupted answer without repeating what was shown. Pure.

When a stream breaks after part of the answer reached the caller, a plain retry would start
the answer again and repeat text (``shared/LESSONS.md`` item 4). Continue mode instead asks
the model to go on: the conversation is resent with the partial answer as an ``assistant``
turn followed by a ``user`` turn holding :data:`CONTINUE_PROMPT` (the same move as the qianfan
SDK's "继续" for truncated answers; it keeps v1's odd, alternating message order). Only the
new text is delivered.

Honest limits (also in the README):

- the continuation is a *new* generation: a real model may rephrase, change style, or repeat a
  few words; :class:`OverlapTrimmer` removes a repeated seam (the continuation starting with
  the last characters already shown) but cannot detect a paraphrase;
- it costs a second request (its prompt includes the partial answer, so prompt tokens grow);
- the usage reported is that of the final request — the interrupted attempt never reported
  its own;
- function/tool calls and safety-filtered answers are never continued;
- a ``need_clear_history`` or content-filter ending is final.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CONTINUE_PROMPT = "继续"
"""The user turn that asks the model to go on from where its last answer stopped."""

_MIN_OVERLAP = 2
_DECIDE_AFTER = 24  # characters of the continuation buffered before deciding on an overlap


def continuation_messages(
    messages: Sequence[Mapping[str, Any]], partial: str
) -> list[Mapping[str, Any]]:
    """The conversation to send to continue ``partial`` (the answer so far)."""
    return [
        *messages,
        {"role": "assistant", "content": partial},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]


def overlap(shown: str, new: str) -> int:
    """Length of the longest prefix of ``new`` (at least 2 characters) that ``shown`` ends with."""
    longest = min(len(shown), len(new))
    for size in range(longest, _MIN_OVERLAP - 1, -1):
        if shown.endswith(new[:size]):
            return size
    return 0


class OverlapTrimmer:
    """Drops the start of a continuation that repeats the end of what was already shown.

    The first :data:`_DECIDE_AFTER` characters of the continuation are held back until the
    overlap can be decided (or the stream ends); after that, text passes straight through.
    """

    __slots__ = ("_held", "_settled", "_shown")

    def __init__(self, shown: str) -> None:
        self._shown = shown[-256:]
        self._held = ""
        self._settled = False

    def push(self, text: str) -> str:
        """Feed continuation text; return what may be delivered now."""
        if self._settled:
            return text
        self._held += text
        if len(self._held) < _DECIDE_AFTER:
            return ""
        return self.flush()

    def flush(self) -> str:
        """Decide now (the stream ended); return the held text minus any repeated seam."""
        if self._settled:
            return ""
        self._settled = True
        held, self._held = self._held, ""
        return held[overlap(self._shown, held) :]
