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

The shells :class:`Conversation` (over :class:`~wenxin_stream.Client`) and
:class:`AsyncConversation` (over :class:`~wenxin_stream.AsyncClient`) are the same generic
class: ``conv.stream(question)`` returns the client's own stream (use it as usual, in a
``with`` / ``async with`` block), and the conversation records the turn from that stream's
end reason and result the next time it is used (``messages``, ``last_turn``, ``stream``).
Neither shell is thread-safe; one conversation serves one dialogue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from ._async_client import AsyncChatStream, AsyncClient
from ._client import ChatStream, Client
from ._client_base import StreamView
from ._events import ChatResult, EndReason
from ._stream_core import ApiName

__all__ = [
    "INTERRUPTED_MARK",
    "AsyncConversation",
    "Conversation",
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
        text = result.content
        if not text.strip():
            return Turn(question, "", TurnOutcome.DROPPED, end_reason)
        if end_reason in _FINISHED:
            outcome = TurnOutcome.KEPT
        elif self.keep_partial:
            text += INTERRUPTED_MARK
            outcome = TurnOutcome.PARTIAL
        else:
            return Turn(question, "", TurnOutcome.DROPPED, end_reason)
        self._history += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": text},
        ]
        self.trim()
        return Turn(question, text, outcome, end_reason)

    def trim(self) -> None:
        """Drop the oldest question/answer pairs beyond ``max_turns``."""
        if self.max_turns is not None:
            excess = len(self._history) // 2 - self.max_turns
            if excess > 0:
                del self._history[: 2 * excess]

    def reset(self) -> None:
        """Forget the whole history (the system text stays)."""
        self._history.clear()


StreamT = TypeVar("StreamT", bound=StreamView)
StreamT_co = TypeVar("StreamT_co", bound=StreamView, covariant=True)


class _Chat(Protocol[StreamT_co]):
    """What a conversation needs of ``client.chat`` (both clients' ``chat`` fit)."""

    def stream(
        self,
        *,
        messages: Sequence[Mapping[str, Any]] | str,
        model: str | None = None,
        **params: Any,
    ) -> StreamT_co: ...


class _ConversationShell(Generic[StreamT]):
    """The shell both conversation classes are: a core, a pending stream, the last turn."""

    def __init__(
        self,
        chat: _Chat[StreamT],
        api: ApiName,
        *,
        system: str | None,
        model: str | None,
        max_turns: int | None,
        keep_partial: bool,
        params: dict[str, Any],
    ) -> None:
        self._chat = chat
        self._api: ApiName = api
        self.core = ConversationCore(system=system, max_turns=max_turns, keep_partial=keep_partial)
        """The pure history keeper (its ``max_turns`` and ``keep_partial`` may be changed)."""
        self.model = model
        """The model asked for (``None``: the client's default)."""
        self.params = params
        """Request parameters sent with every question (``temperature``…)."""
        self._pending: tuple[str, StreamT] | None = None
        self._last: Turn | None = None

    @property
    def system(self) -> str | None:
        """The persona text (settable; ``None`` or blank: none)."""
        return self.core.system

    @system.setter
    def system(self, text: str | None) -> None:
        self.core.system = text

    @property
    def messages(self) -> list[dict[str, str]]:
        """A copy of the history, without the system text (records a finished answer first)."""
        self._settle()
        return self.core.messages

    @property
    def last_turn(self) -> Turn | None:
        """The most recent finished question and what it did to the history."""
        self._settle()
        return self._last

    def stream(self, question: str, **params: Any) -> StreamT:
        """Ask ``question`` after the history; returns the client's stream.

        The turn is recorded once that stream has ended (see the module docstring). Raises the
        client's :class:`~wenxin_stream.InvalidRequestError` for a request that breaks a rule
        (nothing is recorded), and :class:`RuntimeError` while the previous answer's stream is
        still open.
        """
        self._settle()
        if self._pending is not None:
            raise RuntimeError(
                "the previous answer is still streaming: leave its with block (or close it) "
                "before asking the next question"
            )
        if "system" in params:
            raise TypeError("set the conversation's system text instead of passing system=")
        messages, extra = self.core.request(question, self._api)
        stream = self._chat.stream(
            messages=messages, model=self.model, **{**self.params, **params, **extra}
        )
        self._pending = (question, stream)
        return stream

    def reset(self) -> None:
        """Clear the history; an answer still streaming will not be recorded."""
        self._settle()
        self._pending = None
        self._last = None
        self.core.reset()

    def _settle(self) -> None:
        if self._pending is None:
            return
        question, stream = self._pending
        end_reason = stream.end_reason
        if end_reason is None:
            return  # still streaming
        self._pending = None
        # The stream's result without consuming it (StreamView has no public accessor yet).
        self._last = self.core.record(question, end_reason, stream.snapshot())


class Conversation(_ConversationShell[ChatStream]):
    """A multi-turn conversation over a sync :class:`~wenxin_stream.Client`.

    ::

        conv = Conversation(client, system="你是一位导游")
        for question in ("介绍一下长城", "它有多长？"):
            with conv.stream(question) as stream:
                for text in stream.text_stream:
                    print(text, end="", flush=True)
        conv.messages  # four messages, valid for v1 with the next question

    ``model`` and further keyword ``params`` (``temperature``…) go with every question;
    ``max_turns`` and ``keep_partial`` are as in :class:`ConversationCore`.
    """

    def __init__(
        self,
        client: Client,
        *,
        system: str | None = None,
        model: str | None = None,
        max_turns: int | None = None,
        keep_partial: bool = True,
        **params: Any,
    ) -> None:
        super().__init__(
            client.chat,
            client.api,
            system=system,
            model=model,
            max_turns=max_turns,
            keep_partial=keep_partial,
            params=params,
        )
        self.client = client
        """The client the questions go through."""


class AsyncConversation(_ConversationShell[AsyncChatStream]):
    """The async twin of :class:`Conversation` (``async with conv.stream(question) as s``)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        system: str | None = None,
        model: str | None = None,
        max_turns: int | None = None,
        keep_partial: bool = True,
        **params: Any,
    ) -> None:
        super().__init__(
            client.chat,
            client.api,
            system=system,
            model=model,
            max_turns=max_turns,
            keep_partial=keep_partial,
            params=params,
        )
        self.client = client
        """The client the questions go through."""
