"""A multi-turn conversation over a client: the shell around ``_conversation.ConversationCore``.

The sync and async conversations are twins: the sync one is generated from the async one by
``scripts/unasync.py``. The rules that keep the history valid for
ERNIE v1 are in the core (see ``_conversation``); the shell asks through the client and records
each turn once its stream has ended.
"""

from __future__ import annotations

from typing import Any

from ._async_client import AsyncChatStream, AsyncClient
from ._conversation import ConversationCore, Turn

__all__ = ["AsyncConversation"]


class AsyncConversation:
    """A multi-turn conversation through a client (:class:`~wenxin_stream.AsyncClient`).

    ::

        conv = AsyncConversation(client, system="你是一位导游")
        for question in ("介绍一下长城", "它有多长？"):
            async with conv.stream(question) as stream:
                async for text in stream.text_stream:
                    print(text, end="", flush=True)
        conv.messages  # four messages, valid for v1 with the next question

    ``model`` and further keyword ``params`` (``temperature``…) go with every question;
    ``max_turns`` and ``keep_partial`` are as in :class:`~._conversation.ConversationCore`.
    """

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
        self.client = client
        """The client the questions go through."""
        self.core = ConversationCore(system=system, max_turns=max_turns, keep_partial=keep_partial)
        """The pure history keeper (its ``max_turns`` and ``keep_partial`` may be changed)."""
        self.model = model
        """The model asked for (``None``: the client's default)."""
        self.params = params
        """Request parameters sent with every question (``temperature``…)."""
        self._pending: tuple[str, AsyncChatStream] | None = None
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

    def stream(self, question: str, **params: Any) -> AsyncChatStream:
        """Ask ``question`` after the history; returns the client's stream.

        The turn is recorded once that stream has ended (see ``_conversation``). Raises the
        client's :class:`~wenxin_stream.InvalidRequestError` for a request that breaks a rule
        (nothing is recorded), :class:`TypeError` for an unknown parameter, and
        :class:`RuntimeError` while the previous answer's stream is still open.
        """
        self._settle()
        if self._pending is not None:
            raise RuntimeError(
                "the previous answer is still streaming: leave its with block (or close it) "
                "before asking the next question"
            )
        if "system" in params:
            raise TypeError("set the conversation's system text instead of passing system=")
        messages, extra = self.core.request(question, self.client.api)
        stream = self.client.chat.stream(
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
        # The stream's result without consuming it.
        self._last = self.core.record(question, end_reason, stream.snapshot())
