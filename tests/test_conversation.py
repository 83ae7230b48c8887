"""Conversation: the history stays valid for ERNIE v1 after every kind of ending.

Real clients against the real emulator on loopback (v1 always enforces the message order; the
v2 emulator here is started with ``v2_alternation`` so it does too), plus the pure core alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servers import emulator
from wenxin_stream import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncClient,
    ChatResult,
    Client,
    EndReason,
    FunctionCall,
    InvalidRequestError,
    Timeout,
)
from wenxin_stream._conversation import INTERRUPTED_MARK, ConversationCore, TurnOutcome
from wenxin_stream._conversation_async import AsyncConversation
from wenxin_stream._conversation_sync import Conversation
from wenxin_stream._transport import HTTPRequest, SyncResponse
from wenxin_stream._transport_urllib3 import Urllib3Transport
from wenxin_stream._validation import check_v1_messages
from wenxin_stream.emulator import ServerHandle


@pytest.fixture(scope="module")
def strict_emu() -> Iterator[ServerHandle]:
    """A fast emulator that enforces v1's message order on v2 as well."""
    with emulator(v2_alternation=True) as handle:
        yield handle


class Recording:
    """A urllib3 transport that keeps the JSON body of every chat request it sends."""

    def __init__(self) -> None:
        self.inner = Urllib3Transport()
        self.bodies: list[dict[str, Any]] = []

    def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> SyncResponse:
        if request.body:
            self.bodies.append(json.loads(request.body))
        return self.inner.open(request, connect_timeout=connect_timeout, head_timeout=head_timeout)

    def close(self) -> None:
        self.inner.close()


def make_client(handle: ServerHandle, api: str, **kwargs: Any) -> Client:
    if api == "v1":
        creds: dict[str, Any] = {"api_key": "conv-app", "secret_key": "conv-secret"}
        return Client(base_url=handle.base_url, api="v1", retry=0, **creds, **kwargs)
    return Client(
        v2_base_url=handle.base_url, bearer_token="bce-v3/ALTAK-conv/x", retry=0, **kwargs
    )


def assert_valid(conv: Conversation | AsyncConversation) -> None:
    history = conv.messages
    assert len(history) % 2 == 0
    assert check_v1_messages([*history, {"role": "user", "content": "next"}]) is None


def ask(conv: Conversation, question: str) -> str:
    with conv.stream(question) as stream:
        return "".join(stream.text_stream)


@pytest.fixture(params=["v1", "v2"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_completed_turns_are_kept_and_sent(strict_emu: ServerHandle, api: str) -> None:
    recording = Recording()
    with make_client(strict_emu, api, transport=recording) as client:
        conv = Conversation(client)
        first = ask(conv, "你好 [[wenxin:fault chunks=3]]")
        assert conv.last_turn is not None
        assert conv.last_turn.outcome is TurnOutcome.KEPT
        assert conv.messages == [
            {"role": "user", "content": "你好 [[wenxin:fault chunks=3]]"},
            {"role": "assistant", "content": first},
        ]
        second = ask(conv, "再说说")
        assert second
        assert_valid(conv)
        assert len(conv.messages) == 4
    sent = [body["messages"] for body in recording.bodies]
    assert [len(messages) for messages in sent] == [1, 3]
    assert sent[1][1] == {"role": "assistant", "content": first}


def test_partial_answer_is_kept_marked(strict_emu: ServerHandle, api: str) -> None:
    with make_client(strict_emu, api) as client:
        conv = Conversation(client)
        with (
            pytest.raises(APIConnectionError) as info,
            conv.stream("断 [[wenxin:fault cut_after=2]]") as s,
        ):
            for _ in s.text_stream:
                pass
        shown = info.value.partial_text
        assert shown
        turn = conv.last_turn
        assert turn is not None
        assert turn.outcome is TurnOutcome.PARTIAL
        assert turn.end_reason is EndReason.INCOMPLETE
        assert conv.messages[-1] == {"role": "assistant", "content": shown + INTERRUPTED_MARK}
        assert_valid(conv)
        assert ask(conv, "接着说")  # the server accepts the history
        assert len(conv.messages) == 4


def test_partial_answer_dropped_when_asked(emu: ServerHandle) -> None:
    with make_client(emu, "v1") as client:
        conv = Conversation(client, keep_partial=False)
        with (
            pytest.raises(APIError),
            conv.stream("断 [[wenxin:fault error=336100;error_after=1]]") as s,
        ):
            s.until_done()
        assert conv.last_turn is not None
        assert conv.last_turn.outcome is TurnOutcome.DROPPED
        assert conv.messages == []


def test_error_before_any_text_drops_the_question(emu: ServerHandle, api: str) -> None:
    with make_client(emu, api) as client:
        conv = Conversation(client)
        ask(conv, "一")
        with pytest.raises(APIError), conv.stream("错 [[wenxin:fault error=336003]]") as s:
            s.until_done()
        assert conv.last_turn is not None
        assert conv.last_turn.outcome is TurnOutcome.DROPPED
        assert conv.last_turn.end_reason is EndReason.UPSTREAM_ERROR
        assert len(conv.messages) == 2
        assert_valid(conv)


def test_cancel_before_and_after_text(emu: ServerHandle) -> None:
    with make_client(emu, "v1") as client:
        conv = Conversation(client)
        with conv.stream("不读"):
            pass  # left before reading anything
        assert conv.last_turn is not None
        assert conv.last_turn.outcome is TurnOutcome.DROPPED
        assert conv.last_turn.end_reason is EndReason.CANCELLED
        with conv.stream("读一块") as s:
            first = next(iter(s.text_stream))
        assert conv.last_turn.outcome is TurnOutcome.PARTIAL
        assert conv.messages[-1]["content"] == first + INTERRUPTED_MARK
        assert_valid(conv)


def test_timeout_after_text_is_partial(emu: ServerHandle) -> None:
    with make_client(emu, "v2", timeout=Timeout(idle=0.2)) as client:
        conv = Conversation(client)
        with (
            pytest.raises(APITimeoutError),
            conv.stream("慢 [[wenxin:fault stall=2;stall_after=1]]") as s,
        ):
            s.until_done()
        assert conv.last_turn is not None
        assert conv.last_turn.end_reason is EndReason.TIMED_OUT
        assert conv.last_turn.outcome is TurnOutcome.PARTIAL
        assert_valid(conv)


@pytest.mark.parametrize(
    ("api", "spec"),
    [("v1", "safety=1"), ("v1", "safety=4"), ("v2", "safety=2"), ("v2", "safety=3")],
)
def test_safety_clears_the_history(emu: ServerHandle, api: str, spec: str) -> None:
    with make_client(emu, api) as client:
        conv = Conversation(client)
        ask(conv, "一")
        ask(conv, f"危险 [[wenxin:fault {spec}]]")
        assert conv.last_turn is not None
        assert conv.last_turn.outcome is TurnOutcome.CLEARED
        assert conv.messages == []
        assert ask(conv, "重新开始")
        assert len(conv.messages) == 2


def test_v2_low_risk_flag_keeps_the_turn(emu: ServerHandle) -> None:
    with make_client(emu, "v2") as client:
        conv = Conversation(client)
        ask(conv, "低风险 [[wenxin:fault safety=1]]")
        assert conv.last_turn is not None
        assert conv.last_turn.outcome is TurnOutcome.KEPT


def test_length_cut_answer_is_a_finished_answer(emu: ServerHandle) -> None:
    with make_client(emu, "v1") as client:
        conv = Conversation(client)
        text = ask(conv, "截断 [[wenxin:fault truncate=1]]")
        assert conv.last_turn is not None
        assert conv.last_turn.end_reason is EndReason.LENGTH
        assert conv.last_turn.outcome is TurnOutcome.KEPT
        assert conv.messages[-1]["content"] == text


def test_invalid_request_records_nothing(emu: ServerHandle) -> None:
    with make_client(emu, "v1") as client:
        conv = Conversation(client)
        with pytest.raises(InvalidRequestError):
            conv.stream("   ")
        assert conv.last_turn is None
        assert ask(conv, "好的问题")
        assert len(conv.messages) == 2


def test_next_question_while_streaming_is_refused(emu: ServerHandle) -> None:
    with make_client(emu, "v2") as client:
        conv = Conversation(client)
        stream = conv.stream("一")
        with pytest.raises(RuntimeError, match="still streaming"):
            conv.stream("二")
        assert conv.messages == []  # the open answer is not recorded yet
        stream.close()
        assert ask(conv, "二")
        assert conv.messages[0]["content"] == "二"


def test_reset_and_max_turns(emu: ServerHandle) -> None:
    with make_client(emu, "v1") as client:
        conv = Conversation(client, max_turns=2)
        for number in range(3):
            ask(conv, f"问题{number} [[wenxin:fault chunks=1]]")
            assert_valid(conv)
        assert [m["content"] for m in conv.messages[::2]] == [
            "问题1 [[wenxin:fault chunks=1]]",
            "问题2 [[wenxin:fault chunks=1]]",
        ]
        conv.reset()
        assert conv.messages == []
        assert conv.last_turn is None


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_system_text_on_each_generation(strict_emu: ServerHandle, api: str) -> None:
    recording = Recording()
    with make_client(strict_emu, api, transport=recording) as client:
        conv = Conversation(client, system="你是导游", temperature=0.5)
        ask(conv, "一")
        conv.system = "  "  # blank: none
        assert conv.system is None
        ask(conv, "二")
        with pytest.raises(TypeError):
            conv.stream("三", system="x")
    first, second = recording.bodies
    if api == "v1":
        assert first["system"] == "你是导游"
        assert [m["role"] for m in first["messages"]] == ["user"]
    else:
        assert "system" not in first
        assert first["messages"][0] == {"role": "system", "content": "你是导游"}
    assert first["temperature"] == 0.5
    assert "system" not in second
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert conv.messages[0] == {"role": "user", "content": "一"}  # system kept apart


async def test_async_conversation(strict_emu: ServerHandle) -> None:
    async with AsyncClient(
        v2_base_url=strict_emu.base_url, bearer_token="bce-v3/ALTAK-conv/y", retry=0
    ) as client:
        conv = AsyncConversation(client, system="简短")
        async with conv.stream("一") as stream:
            first = "".join([t async for t in stream.text_stream])
        with pytest.raises(APIConnectionError):
            async with conv.stream("断 [[wenxin:fault cut_after=1]]") as stream:
                await stream.until_done()
        assert conv.last_turn is not None
        assert conv.last_turn.outcome is TurnOutcome.PARTIAL
        async with conv.stream("三") as stream:
            await stream.until_done()
        assert len(conv.messages) == 6
        assert conv.messages[1]["content"] == first
        assert_valid(conv)


async def test_async_conversation_refuses_overlap_and_resets(strict_emu: ServerHandle) -> None:
    """The rest of the async twin's surface (the sync one is tested above)."""
    async with AsyncClient(
        v2_base_url=strict_emu.base_url, bearer_token="bce-v3/ALTAK-conv/z", retry=0
    ) as client:
        conv = AsyncConversation(client, system="简短", max_turns=1)
        assert conv.system == "简短"
        conv.system = "你是导游"
        assert conv.core.system == "你是导游"
        with pytest.raises(TypeError, match="system"):
            conv.stream("一", system="x")
        stream = conv.stream("一")
        with pytest.raises(RuntimeError, match="still streaming"):
            conv.stream("二")
        assert conv.messages == []  # the open answer is not recorded yet
        await stream.until_done()
        assert conv.last_turn is not None
        assert conv.last_turn.outcome is TurnOutcome.KEPT
        conv.stream("二")  # left open: a reset forgets it
        conv.reset()
        assert conv.messages == []
        assert conv.last_turn is None
        assert conv.system == "你是导游"  # the system text stays


# --- the pure core ------------------------------------------------------------------------


def result(text: str, **fields: Any) -> ChatResult:
    return ChatResult(content=text, **fields)


def test_core_rules() -> None:
    core = ConversationCore()
    assert core.record("q", EndReason.COMPLETED, result("")).outcome is TurnOutcome.DROPPED
    call = FunctionCall("f", "{}")
    fn = core.record("q", EndReason.COMPLETED, result("", function_call=call))
    assert fn.outcome is TurnOutcome.DROPPED
    assert core.record("q", EndReason.INCOMPLETE, result(" \n")).outcome is TurnOutcome.DROPPED
    filtered = core.record("q", EndReason.CONTENT_FILTERED, result("部分"))
    assert filtered.outcome is TurnOutcome.KEPT
    assert core.messages[-1]["content"] == "部分"
    copy = core.messages
    copy[0]["content"] = "changed"
    assert core.messages[0]["content"] == "q"
    with pytest.raises(ValueError, match="max_turns"):
        ConversationCore(max_turns=-1)
    with pytest.raises(TypeError):
        ConversationCore(system=3)  # type: ignore[arg-type]


def test_core_max_turns_zero_keeps_nothing() -> None:
    core = ConversationCore(max_turns=0, system="s")
    assert core.record("q", EndReason.COMPLETED, result("a")).outcome is TurnOutcome.KEPT
    assert core.messages == []
    assert core.request("q2", "v1") == ([{"role": "user", "content": "q2"}], {"system": "s"})


ENDINGS = st.sampled_from(list(EndReason))
RESULTS = st.builds(
    ChatResult,
    content=st.sampled_from(["", " ", "答", "一段回答\n"]),
    need_clear_history=st.booleans(),
    flag=st.sampled_from([0, 0, 1, 2, 4]),
)


@given(
    turns=st.lists(st.tuples(ENDINGS, RESULTS), max_size=12),
    max_turns=st.none() | st.integers(0, 3),
    keep_partial=st.booleans(),
)
def test_core_history_always_valid(
    turns: list[tuple[EndReason, ChatResult]], max_turns: int | None, keep_partial: bool
) -> None:
    core = ConversationCore(max_turns=max_turns, keep_partial=keep_partial)
    for number, (ending, answer) in enumerate(turns):
        before = core.messages
        turn = core.record(f"问{number}", ending, answer)
        history = core.messages
        assert check_v1_messages([*history, {"role": "user", "content": "下一个"}]) is None
        if max_turns is not None:
            assert len(history) <= 2 * max_turns
        if turn.outcome is TurnOutcome.DROPPED:
            assert history == before
        elif turn.outcome is TurnOutcome.CLEARED:
            assert history == []
        elif max_turns != 0:
            assert history[-2:] == [
                {"role": "user", "content": f"问{number}"},
                {"role": "assistant", "content": turn.answer},
            ]


@given(
    turns=st.lists(
        st.tuples(ENDINGS, st.sampled_from(["", " ", "\u3000\n", "答", "一段回答\n", " 答 "])),
        max_size=12,
    ),
    max_turns=st.none() | st.integers(0, 3),
    keep_partial=st.booleans(),
)
def test_restoring_stored_exchanges_builds_what_recording_their_results_does(
    turns: list[tuple[EndReason, str]], max_turns: int | None, keep_partial: bool
) -> None:
    """A gateway's stored exchanges (text only) give the history their results would have."""
    recorded = ConversationCore(max_turns=max_turns, keep_partial=keep_partial)
    restored = ConversationCore(max_turns=max_turns, keep_partial=keep_partial)
    for number, (ending, text) in enumerate(turns):
        recorded.record(f"问{number}", ending, result(text))
        restored.restore(f"问{number}", ending, text)
        assert restored.messages == recorded.messages
    assert restored.request("下一个", "v2") == recorded.request("下一个", "v2")
