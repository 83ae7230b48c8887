"""Answer leases and fencing (server/_answer_leases.py, the writer's fenced script) against a
real redis-server: a lease is taken when the log is created, renewed only by its holder,
claimed by exactly one of many claimers once it expired (token + 1), and a writer whose token
is stale writes nothing — no event, no end — and is told it lost the answer."""

from __future__ import annotations

import asyncio
import json

import pytest
from test_eventlog import FakeAnswer, entries

from wenxin_stream.server._answer_leases import AnswerLeases
from wenxin_stream.server._eventlog_keys import log_key, meta_key
from wenxin_stream.server._eventlog_writer import LogWriter
from wenxin_stream.server._leases import Leases
from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._redis import SharedRedis, SharedStateError
from wenxin_stream.server._takeover import (
    Claimed,
    Takeovers,
    continue_refusal,
    logged_text,
    read_answer,
)


@pytest.fixture
def shared(shared_redis: SharedRedis) -> SharedRedis:
    return shared_redis


def writer(shared: SharedRedis, instance: str, leases: AnswerLeases) -> LogWriter:
    return LogWriter(shared, Metrics(), instance=instance, window=30.0, maxlen=1000, leases=leases)


def answer_with_request(**request: object) -> FakeAnswer:
    answer = FakeAnswer()
    body = {"messages": [{"role": "user", "content": "问"}], "model": "m", "name": "m",
            "params": {}, "continuable": True, **request}  # fmt: skip
    answer.request = json.dumps(body).encode()
    answer.add(b"start", {"stream_id": answer.stream_id, "message_id": "m_1"})
    answer.text("一二三")
    return answer


async def test_a_lease_is_taken_with_the_log_renewed_by_its_holder_and_claimed_once_expired(
    shared: SharedRedis,
) -> None:
    mine = AnswerLeases(shared, instance="A", ttl=0.5)
    a = writer(shared, "A", mine)
    answer = answer_with_request()
    a.track(answer)
    assert await a.flush() == 2
    assert mine.held_ids() == [answer.stream_id]
    meta = await shared.client.hgetall(meta_key(shared, answer.stream_id))
    assert meta[b"token"] == b"1"
    assert meta[b"instance"] == b"A"
    assert b"request" in meta
    assert await shared.client.zscore(mine.key, answer.stream_id) is not None
    # renewed by its holder, in the stream-slot leases' pipeline: not claimable meanwhile
    leases = Leases(shared, instance_id="A", ttl=5.0)
    lost: list[str] = []
    leases.carry(mine, lost.extend)
    others = [AnswerLeases(shared, instance=f"B{i}", ttl=0.5) for i in range(4)]
    for _ in range(3):
        await asyncio.sleep(0.3)
        await leases.renew()
        assert [await other.claim() for other in others] == [[], [], [], []]
    assert lost == []
    # the holder stops renewing (it froze): once expired, exactly one of four claims it
    await asyncio.sleep(0.6)
    claims = await asyncio.gather(*(other.claim() for other in others))
    won = [claim for claim in claims if claim]
    assert won == [[(answer.stream_id, 2)]]
    meta = await shared.client.hgetall(meta_key(shared, answer.stream_id))
    assert meta[b"token"] == b"2"
    assert meta[b"takeovers"] == b"1"
    assert meta[b"instance"].decode().startswith("B")
    # the old holder's next renewal learns it lost the answer
    await leases.renew()
    assert lost == [answer.stream_id]
    assert mine.held_ids() == []


async def test_a_writer_whose_token_is_stale_writes_nothing_and_is_told(
    shared: SharedRedis,
) -> None:
    mine = AnswerLeases(shared, instance="A", ttl=0.3)
    a = writer(shared, "A", mine)
    answer = answer_with_request()
    a.track(answer)
    await a.flush()
    await asyncio.sleep(0.4)  # A froze past its lease
    taker = AnswerLeases(shared, instance="B", ttl=5.0)
    assert await taker.claim() == [(answer.stream_id, 2)]
    before = await entries(shared, answer.stream_id)
    # A wakes up: more text, then its end — all refused, nothing marked ended
    answer.text("四五六")
    answer.add(b"end", {"end_reason": "completed"})
    a.finish(answer)
    assert await a.flush() == 0
    assert answer.lost
    assert a.fenced == 1
    assert len(a) == 0
    assert await entries(shared, answer.stream_id) == before
    meta = await shared.client.hgetall(meta_key(shared, answer.stream_id))
    assert b"ended" not in meta
    assert meta[b"instance"] == b"B"
    assert await shared.client.zscore(taker.key, answer.stream_id) is not None
    # the taker writes on under token 2, with the next ids, and ends it
    claimed = await read_answer(shared, answer.stream_id, 2)
    assert claimed is not None
    assert logged_text(claimed.records) == "一二三"
    b = writer(shared, "B", taker)
    continued = FakeAnswer()
    continued.stream_id, continued.token = answer.stream_id, 2
    continued.records = list(claimed.records)
    b.adopt(continued, len(claimed.records))
    continued.text("四五")
    continued.add(b"end", {"end_reason": "completed"})
    b.finish(continued)
    assert await b.flush() == 2
    got = await entries(shared, answer.stream_id)
    assert [rid for rid, _ in got] == ["0-1", "1-1", "2-1", "3-1"]
    meta = await shared.client.hgetall(meta_key(shared, answer.stream_id))
    assert meta[b"ended"] == b"1"
    assert meta[b"last"] == b"3"
    assert await shared.client.zscore(taker.key, answer.stream_id) is None  # released
    assert 0 < await shared.client.pttl(log_key(shared, answer.stream_id)) <= 30_000


async def test_self_fencing_when_no_renewal_succeeds_for_the_lease_ttl(
    shared: SharedRedis,
) -> None:
    mine = AnswerLeases(shared, instance="A", ttl=0.3)
    mine.hold("s_x", 1)
    lost: list[str] = []
    leases = Leases(shared, instance_id="A", ttl=5.0)
    leases.carry(mine, lost.extend)
    assert leases.period == pytest.approx(0.1)
    leases._fence_self()  # renewed just now (at construction): nothing lost
    assert lost == []
    await asyncio.sleep(0.35)
    leases._fence_self()
    assert lost == ["s_x"]
    assert mine.held_ids() == []


async def test_claims_skip_ended_or_gone_answers_and_takeovers_hand_each_to_the_handler(
    shared: SharedRedis,
) -> None:
    mine = AnswerLeases(shared, instance="A", ttl=0.2)
    a = writer(shared, "A", mine)
    ended, running = (
        answer_with_request(),
        answer_with_request(continuable=False),
    )  # it offered tools
    for answer in (ended, running):
        a.track(answer)
    await a.flush()
    ended.add(b"end", {"end_reason": "completed"})
    a.finish(ended)
    await a.flush()
    await asyncio.sleep(0.3)
    got: list[Claimed] = []

    async def handle(claimed: Claimed) -> None:
        got.append(claimed)

    taker = AnswerLeases(shared, instance="B", ttl=5.0)
    takeovers = Takeovers(shared, taker, handle, interval=0.05)
    assert await takeovers.claim() == [running.stream_id]
    for _ in range(50):
        if got:
            break
        await asyncio.sleep(0.01)
    assert [c.stream_id for c in got] == [running.stream_id]
    assert got[0].token == 2
    assert got[0].owner == "k1"
    assert continue_refusal(got[0], "continue") == "the request offered tools or functions"
    assert continue_refusal(got[0], "interrupt") == "the fleet is configured never to continue"
    assert await shared.client.zcard(taker.key) == 1  # the ended one was dropped
    await takeovers.aclose()


async def test_a_claimed_answer_whose_log_lost_its_start_is_dropped_from_the_leases(
    shared: SharedRedis,
) -> None:
    mine = AnswerLeases(shared, instance="A", ttl=0.2)
    a = writer(shared, "A", mine)
    answer = answer_with_request()
    a.track(answer)
    await a.flush()
    await shared.client.xdel(log_key(shared, answer.stream_id), "0-1")  # trimmed, say
    await asyncio.sleep(0.3)
    got: list[Claimed] = []

    async def handle(claimed: Claimed) -> None:
        got.append(claimed)

    taker = AnswerLeases(shared, instance="B", ttl=5.0)
    takeovers = Takeovers(shared, taker, handle)
    assert await takeovers.claim() == [answer.stream_id]
    for _ in range(100):
        if not await shared.client.zcard(taker.key):
            break
        await asyncio.sleep(0.01)
    assert await shared.client.zcard(taker.key) == 0  # not claimed again and again
    assert got == []
    assert taker.held_ids() == []
    await takeovers.aclose()


class _LeasesSwallowingTheCancel:
    """A claim that turns its cancellation into a ``SharedStateError``, which the claiming loop
    catches (what ``SharedRedis.call`` did with a Redis call failing as it was cancelled,
    before it raised the cancellation: the test below)."""

    ttl = 3.0

    def __init__(self) -> None:
        self.claims = 0
        self.waiting = asyncio.Event()

    async def claim(self) -> list[tuple[str, int]]:
        self.claims += 1
        self.waiting.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise SharedStateError("claim: Redis did not answer within 2 s") from None
        return []


async def test_stopping_the_claims_ends_even_when_a_claim_swallows_the_cancellation() -> None:
    """A shutdown waits for the claiming loop to end (``stop_claiming``): it must end though
    the cancellation came back as a Redis error, instead of sleeping and claiming again."""
    for stop in ("stop_claiming", "aclose"):
        leases = _LeasesSwallowingTheCancel()

        async def handle(claimed: Claimed) -> None:
            raise AssertionError("nothing is claimed")

        takeovers = Takeovers(None, leases, handle, interval=0.01)  # type: ignore[arg-type]
        takeovers.start()
        await asyncio.wait_for(leases.waiting.wait(), 5)
        await asyncio.wait_for(getattr(takeovers, stop)(), 5)  # it waited forever before
        assert leases.claims == 1, stop


async def test_a_redis_error_raised_while_the_call_is_cancelled_is_the_cancellation() -> None:
    """The general form of the above, in ``SharedRedis.call``: a Redis call that fails because
    its task is being cancelled raises the cancellation, not ``SharedStateError`` — so no loop
    that catches the latter (renewals, sweeps, claims) can take its stop for a Redis error."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    redis = SharedRedis("redis://127.0.0.1:1/0")  # never connected: the call is ours
    reading = asyncio.Event()

    async def read_cut_by_cancel() -> None:
        reading.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None

    call = asyncio.create_task(redis.call(read_cut_by_cancel(), "claim"))
    await asyncio.wait_for(reading.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert redis.last_error is None  # not counted as Redis failing

    async def failing() -> None:
        raise RedisConnectionError("Connection refused")

    with pytest.raises(SharedStateError, match="claim: ConnectionError: Connection refused"):
        await redis.call(failing(), "claim")  # not cancelled: a Redis failure, as before
