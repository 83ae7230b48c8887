"""The answer use case in isolation: a real store, relay and limiter, a scripted upstream.

What it checks is the admission's one exit path: whatever fails between the admission and the
generation's beginning frees the key's stream slot (and aborts a generation already started),
and a begun generation holds the slot until it ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wenxin_stream import EndReason, TextDelta
from wenxin_stream._exceptions import InvalidRequestError
from wenxin_stream._token_estimate import estimate_tokens
from wenxin_stream._validation import Problem
from wenxin_stream.server._access import Principal
from wenxin_stream.server._answers import Answers, AskOptions
from wenxin_stream.server._audit import AuditLog
from wenxin_stream.server._budgets import BudgetLimiter
from wenxin_stream.server._checkpoints import Checkpoints
from wenxin_stream.server._http import HTTPError
from wenxin_stream.server._limits import Admission, KeyLimiter, KeyLimits, Rejection
from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._relay import Relay
from wenxin_stream.server._store import ConversationNotFoundError, SQLiteStore, Store

ALICE = Principal("k_alice", KeyLimits(max_streams=1))


class Stream:
    """Stands in for AsyncChatStream: yields one delta, then ends when ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.end_reason: EndReason | None = None
        self.attempt_usages: tuple[Any, ...] = ()  # the SDK's per-request ledger: none
        self.entered = self.closed = False

    async def __aenter__(self) -> Stream:
        self.entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        yield TextDelta("好")
        await self.release.wait()
        self.end_reason = EndReason.COMPLETED


class Upstream:
    """What ``Answers`` uses of ``_upstream.Upstream``; ``invalid`` makes requests invalid."""

    api = "v2"

    def __init__(self) -> None:
        self.invalid = False
        self.streams: list[Stream] = []
        self.requests: list[list[dict[str, Any]]] = []

    def resolve_model(self, name: str | None) -> tuple[str, str]:
        return name or "ernie-lite-8k", "ernie-lite-8k"

    def stream(self, messages: list[dict[str, str]], model: str, **params: Any) -> Stream:
        if self.invalid:
            raise InvalidRequestError(Problem("temperature", "out of range", 336003, "x"))
        self.requests.append(messages)
        self.streams.append(Stream())
        return self.streams[-1]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Answers, Upstream, AuditLog]]:
    upstream = Upstream()
    audit = AuditLog(tmp_path / "audit.log", include_questions=False)
    async with SQLiteStore(tmp_path / "w.db") as store:
        answers = Answers(
            store=store,
            relay=Relay(Metrics(), on_disconnect="cancel", resume_grace=0.0, max_answer_chars=99),
            checkpoints=Checkpoints(store, Metrics()),
            limiter=KeyLimiter(KeyLimits()),
            upstream=upstream,  # type: ignore[arg-type]
            audit=audit,
            history_turns=10,
        )
        yield answers, upstream, audit
    audit.close()


async def _ask(
    answers: Answers, conversation_id: str | None = None, options: AskOptions | None = None
) -> Any:
    return await answers.ask(
        ALICE,
        conversation_id=conversation_id,
        content="你好",
        options=options or AskOptions(),
        received_at=0.0,
        audit={},
    )


def _complete(answers: Answers) -> Any:
    return answers.complete(
        ALICE,
        messages=[{"role": "user", "content": "x"}],
        model="m",
        upstream_model="m",
        params={},
        received_at=0.0,
        audit={},
    )


async def test_a_begun_answer_holds_the_slot_until_it_ends(
    world: tuple[Answers, Upstream, AuditLog],
) -> None:
    answers, upstream, audit = world
    gen = await _ask(answers)
    assert answers.limiter.streams(ALICE.owner) == 1
    with pytest.raises(HTTPError) as refused:  # max_streams=1
        await _ask(answers)
    assert refused.value.status == 429
    upstream.streams[0].release.set()
    await asyncio.wait_for(gen.done, 5)
    assert answers.limiter.streams(ALICE.owner) == 0
    stored = await answers.store.get_messages(ALICE.owner, gen.start_data["conversation_id"])
    assert [(m.role, m.status, m.content) for m in stored] == [
        ("user", "complete", "你好"),
        ("assistant", "complete", "好"),
    ]
    audit.flush()
    record = json.loads(audit.path.read_text())
    assert (record["status"], record["end_reason"], record["stream_id"]) == (
        200,
        "completed",
        gen.stream_id,
    )


async def test_an_invalid_request_frees_the_slot(
    world: tuple[Answers, Upstream, AuditLog],
) -> None:
    answers, upstream, _ = world
    upstream.invalid = True
    with pytest.raises(HTTPError) as error:
        await _ask(answers)
    assert (error.value.status, error.value.code, error.value.param) == (
        400,
        "invalid_field",  # the SDK named a parameter, not the messages
        "temperature",
    )
    with pytest.raises(HTTPError) as error:
        await _complete(answers)
    assert (error.value.status, error.value.param) == (400, "temperature")
    assert answers.limiter.streams(ALICE.owner) == 0
    assert not answers.relay.running


async def test_a_failing_write_aborts_the_generation_and_frees_the_slot(
    world: tuple[Answers, Upstream, AuditLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers, upstream, _ = world
    conv = await answers.store.create_conversation(ALICE.owner, title=None, model="m", system=None)

    async def deleted_meanwhile(*args: Any, **kwargs: Any) -> Any:
        raise ConversationNotFoundError("gone")

    monkeypatch.setattr(answers.store, "add_exchange", deleted_meanwhile)
    with pytest.raises(ConversationNotFoundError):
        await _ask(answers, conv.id)
    assert answers.limiter.streams(ALICE.owner) == 0
    assert len(upstream.streams) == 1  # the generation had started: it is aborted
    await asyncio.sleep(0.05)
    assert not answers.relay.running
    assert await answers.store.get_messages(ALICE.owner, conv.id) == []


async def test_a_cancelled_ask_frees_the_slot(
    world: tuple[Answers, Upstream, AuditLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers, _, _ = world
    conv = await answers.store.create_conversation(ALICE.owner, title=None, model="m", system=None)
    entered = asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(answers.store, "add_exchange", slow)
    task = asyncio.create_task(_ask(answers, conv.id))
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert answers.limiter.streams(ALICE.owner) == 0


async def test_without_channels_the_spend_hook_names_the_implicit_channel(
    world: tuple[Answers, Upstream, AuditLog],
) -> None:
    answers, upstream, _ = world
    gen = await _ask(answers)
    (running,) = gen.upstream_requests
    assert (running.channel, running.model, running.outcome) == ("default", "ernie-lite-8k", None)
    upstream.streams[0].release.set()
    await asyncio.wait_for(gen.done, 5)
    (ended,) = gen.upstream_requests
    assert (ended.outcome, ended.chars, ended.continued) == ("ok", 1, False)
    assert gen.channels == []  # nothing recorded on the message without channels


async def test_a_spent_budget_refuses_before_the_upstream_and_frees_the_slot(
    world: tuple[Answers, Upstream, AuditLog],
) -> None:
    from wenxin_stream.server._budgets import Budgets

    answers, upstream, _ = world
    carol = Principal("k_carol", KeyLimits(max_streams=5), budgets=Budgets(tokens_day=10))
    with pytest.raises(HTTPError) as refused:  # the estimate alone (512 + prompt) exceeds it
        await answers.ask(
            carol, conversation_id=None, content="你好", options=AskOptions(), received_at=0.0,
            audit={},
        )  # fmt: skip
    assert (refused.value.status, refused.value.code) == (429, "budget_exceeded")
    assert upstream.streams == []  # nothing went upstream
    assert answers.limiter.streams(carol.owner) == 0  # the limits' admission given back


async def test_a_store_that_cannot_say_the_spend_frees_the_slot(
    world: tuple[Answers, Upstream, AuditLog],
) -> None:
    from wenxin_stream.server._budgets import Budgets
    from wenxin_stream.server._store import StoreUnavailableError

    answers, upstream, _ = world

    class Away:
        async def reserve(self, *args: object) -> Any:
            raise StoreUnavailableError("the database is away")

    answers.budgets = Away()
    dora = Principal("k_dora", KeyLimits(max_streams=5), budgets=Budgets(tokens_month=10**6))
    with pytest.raises(StoreUnavailableError):  # the safety net answers 503
        await answers.ask(
            dora, conversation_id=None, content="你好", options=AskOptions(), received_at=0.0,
            audit={},
        )  # fmt: skip
    assert (upstream.streams, answers.limiter.streams(dora.owner)) == ([], 0)


async def test_a_request_refused_by_a_limit_spends_nothing_of_the_budget(
    world: tuple[Answers, Upstream, AuditLog],
) -> None:
    from wenxin_stream.server._budgets import Budgets

    answers, upstream, _ = world
    erin = Principal("k_erin", KeyLimits(max_streams=1), budgets=Budgets(tokens_day=10**6))
    gen = await _ask_as(answers, erin)
    with pytest.raises(HTTPError) as refused:  # the one stream slot is taken
        await _ask_as(answers, erin)
    assert refused.value.code == "too_many_streams"
    budgets = answers.budgets
    assert isinstance(budgets, BudgetLimiter)
    (counter,) = budgets._counters.values()
    reserved = counter[0]  # only the admitted request's estimate is held, not the refused one's
    assert reserved == estimate_tokens([{"role": "user", "content": "你好"}])
    upstream.streams[0].release.set()
    await asyncio.wait_for(gen.done, 5)
    assert counter[0] == 0 < reserved  # settled: the fake upstream reported no usage


async def _ask_as(answers: Answers, principal: Principal) -> Any:
    return await answers.ask(
        principal, conversation_id=None, content="你好", options=AskOptions(), received_at=0.0,
        audit={},
    )  # fmt: skip


async def _conversation(store: Store, answers: list[str]) -> str:
    """A conversation of ``ALICE``'s with one finished exchange per answer text."""
    conv = await store.create_conversation(ALICE.owner, title=None, model="m", system=None)
    for i, text in enumerate(answers):
        _, answer = await store.add_exchange(ALICE.owner, conv.id, question=f"q{i}", model="m")
        await store.update_message(
            answer.id, content=text, status="complete", end_reason="completed", usage=None,
            ttft_ms=None, total_ms=None, generated_chars=None, delivered_chars=None,
        )  # fmt: skip
    return conv.id


async def _ask_in(
    answers: Answers,
    upstream: Upstream,
    cid: str,
    reads: list[int | None],
    options: AskOptions | None = None,
) -> list[dict[str, Any]]:
    """Ask in ``cid`` (recording the ``last`` of each history read) and finish the answer;
    the messages sent upstream."""
    store = answers.store
    read = store.get_history

    async def counted(owner: str, conversation_id: str, *, last: int | None = None) -> Any:
        reads.append(last)
        return await read(owner, conversation_id, last=last)

    store.get_history = counted  # type: ignore[method-assign]
    try:
        gen = await _ask(answers, cid, options)
    finally:
        del store.get_history
    upstream.streams[-1].release.set()
    await asyncio.wait_for(gen.done, 5)
    return upstream.requests[-1]


@pytest.mark.parametrize(
    ("texts", "reads", "kept"),
    [
        # 30 exchanges: the read stops at the last 11 and the last 10 turns are sent, as a
        # read of all 30 would send them
        ([f"a{i}" for i in range(30)], [22], range(20, 30)),
        # the last six answers were empty (not history): the window keeps too few turns, so
        # the ask reads everything and sends the 10 turns a full read gives
        ([f"a{i}" for i in range(20)] + [""] * 6, [22, None], range(10, 20)),
    ],
    ids=["window", "too-few-in-the-window"],
)
async def test_an_ask_reads_the_window_its_history_can_use(
    world: tuple[Answers, Upstream, AuditLog],
    texts: list[str],
    reads: list[int | None],
    kept: range,
) -> None:
    """history_turns=10."""
    answers, upstream, _ = world
    cid = await _conversation(answers.store, texts)
    seen: list[int | None] = []
    sent = await _ask_in(answers, upstream, cid, seen)
    assert seen == reads
    assert [m["content"] for m in sent] == [text for i in kept for text in (f"q{i}", f"a{i}")] + [
        "你好"
    ]


async def test_a_replacement_reads_the_whole_conversation_once(
    world: tuple[Answers, Upstream, AuditLog],
) -> None:
    """To replace the last exchange, everything is read (the question is checked against the
    rest), and the history sent stops before the replaced exchange."""
    answers, upstream, _ = world
    cid = await _conversation(answers.store, ["a0", "a1", "a2"])
    _, stored = await answers.store.get_history(ALICE.owner, cid)
    reads: list[int | None] = []
    sent = await _ask_in(answers, upstream, cid, reads, AskOptions(replace=stored[-2].id))
    assert reads == [None]
    assert [m["content"] for m in sent] == ["q0", "a0", "q1", "a1", "你好"]


class RoundTripLimiter(KeyLimiter):
    """A fleet's limits in miniature: the decision takes a round trip (until ``decide`` is
    set), and the key has room, so starts may overlap it; ``refuse`` makes it a 429."""

    def __init__(self) -> None:
        super().__init__(KeyLimits())
        self.decide = asyncio.Event()
        self.refuse = False
        self.room = True

    def overlap(self, key_id: str, limits: KeyLimits | None, estimate_tokens: int) -> bool:
        return self.room

    async def acquire(
        self, key_id: str, limits: KeyLimits | None, estimate_tokens: int
    ) -> Admission | Rejection:
        await self.decide.wait()
        if self.refuse:
            return Rejection("rate_limited", "another instance took the room", 2.0)
        return self.admit(key_id, limits, estimate_tokens)


async def _sent_before_the_decision(
    answers: Answers, upstream: Upstream, route: str, *, refuse: bool = False
) -> tuple[asyncio.Future[Any], RoundTripLimiter]:
    """Start an answer on ``route`` under a :class:`RoundTripLimiter` that will ``refuse``
    or admit; return once its upstream request has gone out, the decision still pending."""
    answers.limiter = limiter = RoundTripLimiter()
    limiter.refuse = refuse
    task = asyncio.ensure_future(_ask(answers) if route == "native" else _complete(answers))
    for _ in range(100):
        if upstream.streams and upstream.streams[0].entered:
            assert not task.done()
            return task, limiter
        await asyncio.sleep(0.01)
    raise AssertionError("no upstream request went out")


def _overlaps(answers: Answers) -> dict[str, float]:
    return {d: c.value for d, c in answers.relay.metrics._overlaps.items()}


@pytest.mark.parametrize("route", ["native", "openai"])
async def test_a_start_with_room_sends_its_request_while_the_limits_decide(
    world: tuple[Answers, Upstream, AuditLog], route: str
) -> None:
    answers, upstream, _ = world
    task, limiter = await _sent_before_the_decision(answers, upstream, route)
    limiter.decide.set()
    gen = await asyncio.wait_for(task, 5)
    assert len(upstream.streams) == 1  # and it is the answer's request, not sent again
    assert gen.text == "好"  # what arrived before the admission is the answer's beginning
    assert _overlaps(answers) == {"admitted": 1, "refused": 0}
    upstream.streams[0].release.set()
    await asyncio.wait_for(gen.done, 5)
    assert gen.end_reason == "completed"


@pytest.mark.parametrize("route", ["native", "openai"])
async def test_a_start_refused_after_its_request_went_out_cuts_it_and_is_a_429(
    world: tuple[Answers, Upstream, AuditLog], route: str
) -> None:
    answers, upstream, audit = world
    task, limiter = await _sent_before_the_decision(answers, upstream, route, refuse=True)
    limiter.decide.set()
    with pytest.raises(HTTPError) as refused:
        await asyncio.wait_for(task, 5)
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert len(upstream.streams) == 1  # it had gone out
    for _ in range(50):
        if not answers.relay.running:
            break
        await asyncio.sleep(0.01)
    assert not answers.relay.running  # cut: nothing runs on, nothing holds a slot
    assert upstream.streams[0].closed
    assert _overlaps(answers) == {"admitted": 0, "refused": 1}
    assert await answers.store.list_conversations(ALICE.owner) == []  # nothing stored
    audit.flush()
    assert not audit.path.exists() or audit.path.read_text() == ""  # no answer to audit


async def test_a_start_without_room_waits_for_its_decision(
    world: tuple[Answers, Upstream, AuditLog],
) -> None:
    answers, upstream, _ = world
    answers.limiter = limiter = RoundTripLimiter()
    limiter.room = False
    task = asyncio.ensure_future(_complete(answers))
    await asyncio.sleep(0.05)
    assert upstream.streams == []  # nothing goes out before the limits have decided
    limiter.decide.set()
    gen = await asyncio.wait_for(task, 5)
    assert len(upstream.streams) == 1
    assert _overlaps(answers) == {"admitted": 0, "refused": 0}
    upstream.streams[0].release.set()
    await asyncio.wait_for(gen.done, 5)
