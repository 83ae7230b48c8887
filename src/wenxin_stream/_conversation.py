"""Multi-turn conversations whose history is always valid for ERNIE v1.

Theory of operation
===================

ERNIE v1 accepts a conversation only in one shape (``shared/ERNIE-PROTOCOL.md`` §1.5): an odd
number of messages, ``user`` and ``assistant`` alternating and starting with ``user``, no
``system`` role (the persona goes into the ``system`` field), no empty contents. A caller that
appends turns by hand breaks that shape the first time an answer fails half-way. So
:class:`ConversationCore` — pure, no I/O — owns the history and changes it only when an answer
has *ended*, by one rule per ending:

============================================  ==========================================
how the answer ended                          what the history gets
============================================  ==========================================
completed (also ``length``, content filter)   the question and the answer (``KEPT``)
error or cancel after some text was shown     the question and the partial answer, marked
                                              with :data:`INTERRUPTED_MARK` (``PARTIAL``);
                                              or nothing, with ``keep_partial=False``
nothing shown (or only blank text)            nothing: the question is dropped (``DROPPED``)
``need_clear_history`` or v2 ``flag`` ≥ 2      everything is cleared (``CLEARED``)
============================================  ==========================================

Why partial answers are kept by default: the user *saw* them, and a follow-up such as "go on"
or "what did you mean by …" refers to them. The mark tells the model the answer was cut, so it
does not take the fragment for a finished statement. Either way the stored history stays an even
number of alternating ``user``/``assistant`` messages with non-blank contents, so history plus
the next question is always a valid v1 request. Function and tool calls are not recorded (their
text is empty, so such a turn is dropped); drive function calling with the client directly.

The system text is kept apart from the history: on v1 it is sent as the ``system`` parameter,
on v2 as a leading ``system`` message (``build_v2_chat`` would pass a ``system=`` parameter
through as an unknown body field, which v2 does not read). ``max_turns`` keeps only the newest
question/answer pairs, dropping the oldest *pair* so the alternation never breaks.

This module is the pure part. The shells ``Conversation`` (over
:class:`~wenxin_stream.Client`, ``_conversation_sync``) and ``AsyncConversation`` (over
:class:`~wenxin_stream.AsyncClient`, ``_conversation_async``; the sync twin is generated from
it): ``conv.stream(question)`` returns the client's own stream (use it as usual, in a ``with`` /
``async with`` block), and the conversation records the turn from that stream's end reason and
result the next time it is used (``messages``, ``last_turn``, ``stream``). Neither shell is
thread-safe; one conversation serves one dialogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ._events import ChatResult, EndReason
from ._stream_core import ApiName

__all__ = [
    "INTERRUPTED_MARK",
    "ConversationCore",
    "Turn",
    "TurnOutcome",
]

INTERRUPTED_MARK = "\n\n（此回答被中断，未完成）"
"""Appended to a partial answer kept in the history ("this answer was interrupted")."""

_FINISHED = frozenset({EndReason.COMPLETED, EndReason.LENGTH, EndReason.CONTENT_FILTERED})


class TurnOutcome(StrEnum):
    """What one question did to the history (see the module docstring)."""

    KEPT = "kept"
    """The question and the whole answer were recorded."""
    PARTIAL = "partial"
    """The question and the interrupted answer, marked, were recorded."""
    DROPPED = "dropped"
    """Nothing was recorded: no (usable) text arrived, or partial answers are not kept."""
    CLEARED = "cleared"
    """ERNIE asked to clear the history (safety): the whole history was cleared."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One finished question: the ``question``, the ``answer`` as recorded (``""`` unless kept),
    the ``outcome`` and the stream's ``end_reason``."""

    question: str
    answer: str
    outcome: TurnOutcome
    end_reason: EndReason


class ConversationCore:
    """The history and the rules that keep it valid (pure; shared by both shells).

    Args:
        system: The persona text, kept apart from the history (``None``: none).
        max_turns: Keep at most this many question/answer pairs (``None``: all).
        keep_partial: Record interrupted answers (marked) instead of dropping the turn.
    """

    def __init__(
        self,
        *,
        system: str | None = None,
        max_turns: int | None = None,
        keep_partial: bool = True,
    ) -> None:
        if max_turns is not None and (
            isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 0
        ):
            raise ValueError("max_turns must be a whole number >= 0, or None")
        self.max_turns = max_turns
        self.keep_partial = keep_partial
        self.system = system
        self._history: list[dict[str, str]] = []

    @property
    def system(self) -> str | None:
        """The persona text (blank text counts as none)."""
        return self._system

    @system.setter
    def system(self, text: str | None) -> None:
        if text is not None and not isinstance(text, str):
            raise TypeError("system must be a string or None")
        self._system = text if text and text.strip() else None

    @property
    def messages(self) -> list[dict[str, str]]:
        """A copy of the history: alternating ``user``/``assistant`` messages, even in number."""
        return [dict(message) for message in self._history]

    def request(self, question: str, api: ApiName) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """The messages and extra parameters that ask ``question`` after the history."""
        messages = [*self.messages, {"role": "user", "content": question}]
        if self._system is None:
            return messages, {}
        if api == "v1":
            return messages, {"system": self._system}
        return [{"role": "system", "content": self._system}, *messages], {}

    def record(self, question: str, end_reason: EndReason, result: ChatResult) -> Turn:
        """Apply the rule for an answer that ended with ``end_reason`` and ``result``."""
        if result.need_clear_history or result.flag >= 2:
            self._history.clear()
            return Turn(question, "", TurnOutcome.CLEARED, end_reason)
        text, outcome = self._keep(question, end_reason, result.content)
        return Turn(question, text, outcome, end_reason)

    def restore(self, question: str, end_reason: EndReason, answer: str) -> None:
        """Apply the rule for a stored exchange: ``answer`` is the text of an answer that
        ended with ``end_reason`` (a gateway rebuilding a conversation from its database,
        where no :class:`ChatResult` — nor its clear-history signal — is at hand; without
        building one per exchange of the history at every question)."""
        self._keep(question, end_reason, answer)

    def _keep(self, question: str, end_reason: EndReason, text: str) -> tuple[str, TurnOutcome]:
        """Keep the exchange (its answer marked when interrupted) or drop it; what was kept
        of the answer and the outcome."""
        if not text or text.isspace():
            return "", TurnOutcome.DROPPED
        if end_reason in _FINISHED:
            outcome = TurnOutcome.KEPT
        elif self.keep_partial:
            text += INTERRUPTED_MARK
            outcome = TurnOutcome.PARTIAL
        else:
            return "", TurnOutcome.DROPPED
        self._history += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": text},
        ]
        self.trim()
        return text, outcome

    def trim(self) -> None:
        """Drop the oldest question/answer pairs beyond ``max_turns``."""
        if self.max_turns is not None:
            excess = len(self._history) // 2 - self.max_turns
            if excess > 0:
                del self._history[: 2 * excess]

    def reset(self) -> None:
        """Forget the whole history (the system text stays)."""
        self._history.clear()
