"""The per-answer event log in Redis (server/_eventlog*.py) against a real redis-server: the
batched writer (ids, expiry once, one pipeline per batch, failures), the remote reader (catch-up
and live, shared follows, slow clients, errors before the response) and cancels."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import pytest

from services import Service, redis_server
from wenxin_stream.server._answer_leases import AnswerLeases
from wenxin_stream.server._eventlog import EventLog
from wenxin_stream.server._eventlog_keys import Record, log_key, meta_key
from wenxin_stream.server._eventlog_reader import LogReader, RemoteStream
from wenxin_stream.server._eventlog_writer import LogWriter
from wenxin_stream.server._http import HTTPError
from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._redis import SharedRedis, SharedStateError


class FakeAnswer:
    """A Source: events appended by the test, sealed when the writer reads them."""

    def __init__(self, owner: str = "k1") -> None:
        self.stream_id = "s_" + secrets.token_hex(6)
        self.owner = owner
        self.model = "ernie-test"
        self.records: list[Record] = []
        self.reads = 0
        self.token = 1
        self.request: bytes | None = None
        self.durable = 0
        self.lost = False

    def logged(self, count: int) -> None:
        self.durable = count

    def fenced(self) -> None:
        self.lost = True

    def add(self, kind: bytes, data: object) -> None:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        self.records.append(Record(len(self.records), kind, body))

    def text(self, text: str) -> None:
        self.add(b"delta", {"text": text})

    def log_records(self, start: int) -> list[Record]:
        self.reads += 1
        return self.records[start:]


@pytest.fixture
async def shared(redis_service: Service) -> AsyncIterator[SharedRedis]:
    # a loaded machine can hold a Redis answer past a second: the tests of Redis failing make
    # their own SharedRedis with short limits; these only need an answer
    redis = SharedRedis(redis_service.url, timeout=10.0, prefix=f"t{secrets.token_hex(3)}:")
    await redis.open()
    yield redis
    await redis.close()


def writer_of(shared: SharedRedis, **kwargs: float) -> LogWriter:
    values = {"window": 30.0, "maxlen": 1000, "interval": 0.01, **kwargs}
    return LogWriter(
        shared,
        Metrics(),
        instance="A",
        window=values["window"],
        maxlen=int(values["maxlen"]),
        interval=values["interval"],
        live_ttl=values.get("live_ttl", 3600.0),
    )


async def entries(shared: SharedRedis, stream_id: str) -> list[tuple[str, dict[bytes, bytes]]]:
    raw = await shared.client.xrange(log_key(shared, stream_id))
    return [(rid.decode(), fields) for rid, fields in raw]


async def test_events_are_written_with_their_seq_as_id_and_the_expiry_set_once(
    shared: SharedRedis,
) -> None:
    writer = writer_of(shared, window=30.0)
    answer = FakeAnswer()
    writer.track(answer)
    assert await writer.flush() == 0  # nothing yet: no keys made for an answer with no event
    assert await shared.client.exists(log_key(shared, answer.stream_id)) == 0
    answer.add(b"start", {"stream_id": answer.stream_id})
    answer.text("你好")
    answer.add(b"reasoning", {"text": "想"})  # any kind, stored the same way
    assert await writer.flush() == 3
    got = await entries(shared, answer.stream_id)
    assert [rid for rid, _ in got] == ["0-1", "1-1", "2-1"]
    assert got[1][1] == {b"k": b"delta", b"d": '{"text":"你好"}'.encode()}
    assert got[2][1][b"k"] == b"reasoning"
    log, meta = log_key(shared, answer.stream_id), meta_key(shared, answer.stream_id)
    first_ttl = await shared.client.pttl(log)
    assert 3_590_000 < first_ttl <= 3_600_000  # the live TTL, set at creation
    assert await shared.client.hgetall(meta) == {
        b"owner": b"k1",
        b"instance": b"A",
        b"model": b"ernie-test",
        b"token": b"1",  # the fencing token (_answer_leases)
    }
    assert answer.durable == 3  # its clients may read what is in Redis (write-ahead)
    # later writes do not touch the expiry: it only runs down
    await asyncio.sleep(0.05)
    answer.text("再见")
    await writer.flush()
    assert await shared.client.pttl(log) < first_ttl - 40
    # the end: the end event and the ended marker together, the expiry set to the window
    answer.add(b"end", {"end_reason": "completed"})
    writer.finish(answer)
    assert await writer.flush() == 1
    assert len(writer) == 0
    assert (await shared.client.hgetall(meta))[b"ended"] == b"1"
    assert (await shared.client.hgetall(meta))[b"last"] == b"4"
    for key in (log, meta):
        assert 29_000 < await shared.client.pttl(key) <= 30_000
    assert writer.batches == 3
    assert writer.records == 5


async def test_a_long_answer_gets_its_live_expiry_renewed_once_per_half(
    shared: SharedRedis,
) -> None:
    writer = writer_of(shared, live_ttl=0.6)
    answer, other = FakeAnswer(), FakeAnswer()
    for one in (answer, other):
        writer.track(one)
        one.text("一")
    await writer.flush()
    log = log_key(shared, answer.stream_id)
    assert 500 < await shared.client.pttl(log) <= 600
    await asyncio.sleep(0.2)
    other.text("二")  # a batch before the half: nothing renewed
    await writer.flush()
    assert await shared.client.pttl(log) <= 400
    await asyncio.sleep(0.15)  # past the half: the quiet answer is renewed, with no new event
    assert await writer.flush() == 0
    for key in (log, meta_key(shared, answer.stream_id)):
        assert 500 < await shared.client.pttl(key) <= 600
    assert await shared.client.xlen(log) == 1


async def test_event_data_is_stored_byte_for_byte_whatever_it_holds(shared: SharedRedis) -> None:
    writer = writer_of(shared)
    answer = FakeAnswer()
    writer.track(answer)
    odd = [b"", b"\n", b"1 delta 5\nfake!", b"\x00\xff\r\n\n", "长\n文".encode() * 300]
    for data in odd:  # the batch's framing is by length: no byte of the data is special
        answer.records.append(Record(len(answer.records), b"delta", data))
    assert await writer.flush() == len(odd)
    got = await entries(shared, answer.stream_id)
    assert [fields[b"d"] for _, fields in got] == odd
    assert [rid for rid, _ in got] == [f"{i}-1" for i in range(len(odd))]


async def test_an_answer_ended_before_its_first_event_leaves_nothing(shared: SharedRedis) -> None:
    writer = writer_of(shared)
    answer = FakeAnswer()
    writer.track(answer)
    writer.finish(answer)
    assert await writer.flush() == 0
    assert len(writer) == 0
    assert writer.batches == 0
    assert await shared.client.exists(meta_key(shared, answer.stream_id)) == 0


async def test_one_command_per_batch_whatever_the_chunk_rate(shared: SharedRedis) -> None:
    writer = writer_of(shared, interval=0.02)
    answers = [FakeAnswer() for _ in range(50)]
    for answer in answers:
        writer.track(answer)
        answer.add(b"start", {})
    writer.start()
    loop = asyncio.get_running_loop()
    began = loop.time()
    chunks = 0
    # every answer gets a chunk every 1 ms, for 0.5 s and at least 5,000 chunks (a busy
    # machine wakes this loop late: the count, not the clock, is what the test needs)
    while loop.time() - began < 0.5 or chunks <= 5_000:
        for answer in answers:
            answer.text("字")
            chunks += 1
        await asyncio.sleep(0.001)
    for answer in answers:
        answer.add(b"end", {})
        writer.finish(answer)
    async with asyncio.timeout(5):
        while len(writer):  # noqa: ASYNC110 (polls the writer's own state)
            await asyncio.sleep(0.01)
    elapsed = loop.time() - began
    await writer.aclose()
    assert chunks > 5_000
    # at most one pipeline per interval (and the final one), never one per chunk or answer
    assert writer.batches <= elapsed / 0.02 + 2
    assert writer.records == chunks + 100
    for answer in answers[:3]:
        assert len(await entries(shared, answer.stream_id)) == len(answer.records)


async def test_a_poke_sends_at_once_and_batches_are_spaced_by_the_interval(
    shared: SharedRedis,
) -> None:
    # write-ahead: a client of the producer waits for its event's batch, so a quiet answer's
    # event must go at once (one round trip), not at the next tick; under load the interval
    # spaces the batches (here 30 s: anything later than "at once" would time the test out)
    writer = writer_of(shared, interval=30.0)
    answer = FakeAnswer()
    writer.track(answer)
    writer.start()
    answer.add(b"start", {})
    writer.poke(answer.stream_id)
    async with asyncio.timeout(5):
        while answer.durable < 1:  # noqa: ASYNC110 (polls the writer's own state)
            await asyncio.sleep(0.005)
    assert writer.batches == 1
    answer.text("你")
    writer.poke(answer.stream_id)
    answer.text("好")
    writer.poke(answer.stream_id)
    await asyncio.sleep(0.2)
    assert answer.durable == 1  # the next batch waits for the interval: no pipeline per chunk
    assert writer.batches == 1
    await writer.aclose()  # the pending events go with the last batch, as one
    assert answer.durable == 3
    assert writer.batches == 2
    assert [rid for rid, _ in await entries(shared, answer.stream_id)] == ["0-1", "1-1", "2-1"]


async def test_a_batch_looks_only_at_the_answers_poked_since_the_last(
    shared: SharedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # batches go often (as soon as the last is back): each must cost what changed, not a
    # look at every answer of the process
    monkeypatch.setattr("wenxin_stream.server._eventlog_writer.IDLE_CHECK", 60.0)
    writer = writer_of(shared)
    answers = [FakeAnswer() for _ in range(20)]
    for answer in answers:
        writer.track(answer)
        answer.add(b"start", {})
    assert await writer.flush() == 20  # the first batch scans every answer
    reads = [answer.reads for answer in answers]
    answers[3].text("字")
    writer.poke(answers[3].stream_id)
    assert await writer.flush(poked_only=True) == 1
    assert [a.reads - r for a, r in zip(answers, reads, strict=True)] == [0] * 3 + [1] + [0] * 16
    answers[5].text("漏")  # not poked: found by the next full scan (a poke without an id)
    assert await writer.flush(poked_only=True) == 0
    writer.poke()
    assert await writer.flush(poked_only=True) == 1
    assert len(await entries(shared, answers[5].stream_id)) == 2


async def test_tracked_but_quiet_answers_wake_the_writer_only_now_and_then(
    shared: SharedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wenxin_stream.server._eventlog_writer.IDLE_CHECK", 0.05)
    writer = writer_of(shared, interval=0.001)
    answer = FakeAnswer()
    writer.track(answer)
    answer.add(b"start", {})
    writer.start()
    await asyncio.sleep(0.5)
    # the idle check looked (and sealed) about ten times; one pipeline: nothing new to send
    assert 3 <= answer.reads <= 20
    assert writer.batches == 1
    await writer.aclose()


async def test_a_failed_batch_is_sent_again_without_duplicates() -> None:
    with redis_server() as service:
        redis = SharedRedis(service.url, timeout=0.5, prefix="fail:")
        await redis.open()
        try:
            writer = writer_of(redis)
            answer = FakeAnswer()
            writer.track(answer)
            answer.add(b"start", {})
            answer.text("a")
            await writer.flush()
            answer.text("b")
            # a batch applied by Redis whose reply was lost looks the same to the writer as
            # a failed one: write it behind the writer's back, then let the writer repeat it
            await redis.client.xadd(
                log_key(redis, answer.stream_id), {b"k": b"delta", b"d": b'{"text":"b"}'}, id="2-1"
            )
            answer.text("c")
            assert await writer.flush() == 2
            got = await entries(redis, answer.stream_id)
            assert [rid for rid, _ in got] == ["0-1", "1-1", "2-1", "3-1"]
            service.process.kill()
            service.process.wait()
            answer.text("d")
            with pytest.raises(SharedStateError):
                await writer.flush()
            assert writer.failures == 1
            assert len(writer) == 1
        finally:
            await redis.close()


async def test_answers_redis_takes_nothing_of_are_given_up_and_their_clients_cut() -> None:
    """Two kinds of answer are stranded by an outage (module docstring): one whose log could
    not be created for an answer lease's TTL since the first try, and one that ended and
    could not be written for the resume window. Each is told (``fenced``: its clients are
    cut), the others are kept: one with no event yet, one written before the outage."""
    with redis_server() as service:
        redis = SharedRedis(service.url, timeout=0.5, prefix="strand:")
        await redis.open()
        try:
            leases = AnswerLeases(redis, instance="A", ttl=0.3)
            writer = LogWriter(
                redis, Metrics(), instance="A", window=0.8, maxlen=100, leases=leases
            )
            ended, quiet, fresh = FakeAnswer(), FakeAnswer(), FakeAnswer()
            writer.track(ended)
            ended.add(b"start", {})
            assert await writer.flush() == 1
            service.process.kill()
            service.process.wait()
            writer.track(quiet)  # no event yet: its upstream has not answered
            writer.track(fresh)
            fresh.add(b"start", {})
            ended.text("末")
            writer.finish(ended)
            with pytest.raises(SharedStateError):
                await writer.flush()  # the first try to create `fresh`'s log
            await asyncio.sleep(0.2)
            with pytest.raises(SharedStateError):
                await writer.flush()
            assert (ended.lost, quiet.lost, fresh.lost) == (False, False, False)
            await asyncio.sleep(0.2)  # 0.4 s since the first try: more than a lease's TTL
            with pytest.raises(SharedStateError):
                await writer.flush()  # `ended` is still sent: within its window
            assert (ended.lost, quiet.lost, fresh.lost) == (False, False, True)
            await asyncio.sleep(0.5)  # 0.9 s since `ended` ended: more than the window
            assert await writer.flush() == 0  # nothing left to send: Redis not asked
            assert (ended.lost, quiet.lost, fresh.lost) == (True, False, True)
            assert writer.stranded == 2
            assert len(writer) == 1  # `quiet`, whose log nobody has tried to create yet
        finally:
            await redis.close()


async def test_a_script_cache_emptied_by_a_redis_restart_is_loaded_again(
    shared: SharedRedis,
) -> None:
    writer = writer_of(shared)
    answer = FakeAnswer()
    writer.track(answer)
    answer.add(b"start", {})
    answer.text("前")
    assert await writer.flush() == 2
    await shared.client.script_flush()  # what a restarted Redis has: no scripts
    answer.text("后")
    with pytest.raises(SharedStateError, match="not loaded"):
        await writer.flush()  # refused, and nothing counted as written
    assert await writer.flush() == 1  # the script is loaded again, the event goes out
    assert [rid for rid, _ in await entries(shared, answer.stream_id)] == ["0-1", "1-1", "2-1"]


async def _read_all(stream: object, limit: float = 5.0) -> list[Record]:
    out: list[Record] = []
    async with asyncio.timeout(limit):
        while True:
            batch = await stream.next_batch()  # type: ignore[attr-defined]
            out += batch
            if not batch or batch[-1].is_end:
                return out


async def test_a_remote_reader_gets_the_past_then_the_live_rest(shared: SharedRedis) -> None:
    writer = writer_of(shared)
    reader = LogReader(shared, instance="B", block_ms=500)
    answer = FakeAnswer()
    writer.track(answer)
    answer.add(b"start", {})
    for index in range(5):
        answer.text(f"t{index}")
    await writer.flush()
    early = await reader.open(answer.stream_id, "k1", None)  # from the start
    middle = await reader.open(answer.stream_id, "k1", 3)  # after seq 3: a shared follow
    assert len(reader) == 1
    task = asyncio.ensure_future(_read_all(early))
    task_middle = asyncio.ensure_future(_read_all(middle))
    await asyncio.sleep(0.05)
    for index in range(5, 9):
        answer.text(f"t{index}")
        await writer.flush()
    answer.add(b"end", {"end_reason": "completed"})
    writer.finish(answer)
    await writer.flush()
    got, got_middle = await task, await task_middle
    assert [r.seq for r in got] == list(range(11))
    assert [r.seq for r in got_middle] == list(range(4, 11))
    assert got_middle == got[4:]
    assert len(reader) == 0
    # after the end: a late reader gets the rest at once, and one that has it all gets nothing
    assert [r.seq for r in await _read_all(await reader.open(answer.stream_id, "k1", 8))] == [
        9,
        10,
    ]
    assert await _read_all(await reader.open(answer.stream_id, "k1", 10)) == []
    await reader.aclose()


async def test_a_new_follower_ends_the_block_at_once(shared: SharedRedis) -> None:
    reader = LogReader(shared, instance="B", block_ms=5000)
    writer = writer_of(shared)
    first, second = FakeAnswer(), FakeAnswer()
    for answer in (first, second):
        writer.track(answer)
        answer.add(b"start", {})
    await writer.flush()
    one = await reader.open(first.stream_id, "k1", 0)
    await asyncio.sleep(0.1)  # the reader is blocked on the first answer alone
    two = await reader.open(second.stream_id, "k1", 0)
    second.text("x")
    await writer.flush()
    async with asyncio.timeout(1.0):  # well within the 5 s block
        assert [r.seq for r in await two.next_batch()] == [1]
    one.close()
    two.close()
    await reader.aclose()


async def test_a_slow_remote_reader_gets_merged_text(shared: SharedRedis) -> None:
    reader = LogReader(shared, instance="B", block_ms=500, max_pending=8)
    writer = writer_of(shared)
    answer = FakeAnswer()
    writer.track(answer)
    answer.add(b"start", {})
    for index in range(40):
        answer.text(f"{index},")
    await writer.flush()
    stream = await reader.open(answer.stream_id, "k1", None)
    await asyncio.sleep(0.2)  # not reading: the queue fills and merges
    batch = await stream.next_batch()
    assert len(batch) <= 9
    text = "".join(json.loads(r.data)["text"] for r in batch if r.kind == b"delta")
    assert text == "".join(f"{index}," for index in range(40))
    assert batch[-1].seq == 40  # the id of the last merged event: a resume from it is exact
    stream.close()
    await reader.aclose()


async def test_open_refuses_before_the_response(shared: SharedRedis) -> None:
    reader = LogReader(shared, instance="B")
    writer = writer_of(shared, maxlen=100)
    answer = FakeAnswer()
    writer.track(answer)
    answer.add(b"start", {})
    answer.text("a")
    answer.add(b"end", {})
    writer.finish(answer)
    await writer.flush()
    with pytest.raises(HTTPError) as info:
        await reader.open("s_nothing", "k1", None)
    assert info.value.status == 404
    with pytest.raises(HTTPError) as info:
        await reader.open(answer.stream_id, "someone-else", None)
    assert info.value.status == 404
    with pytest.raises(HTTPError) as info:
        await reader.open(answer.stream_id, "k1", 3)  # the answer ended at seq 2
    assert info.value.status == 400
    # trimmed: a long answer keeps about maxlen entries
    long = FakeAnswer()
    writer.track(long)
    long.add(b"start", {})
    for _ in range(400):
        long.text("x")
    await writer.flush()
    with pytest.raises(HTTPError) as info:
        await reader.open(long.stream_id, "k1", 5)
    assert info.value.status == 410
    await reader.aclose()


async def test_cancel_reaches_the_producer_and_ended_answers_say_so(shared: SharedRedis) -> None:
    producer = EventLog(shared, Metrics(), instance="A", window=30.0, maxlen=1000, interval=0.01)
    other = EventLog(shared, Metrics(), instance="B", window=30.0, maxlen=1000, interval=0.01)
    cancelled: list[str] = []
    heard = asyncio.Event()

    def on_cancel(stream_id: str) -> None:
        cancelled.append(stream_id)
        heard.set()

    producer.start(on_cancel)
    other.start(lambda sid: None)
    try:
        async with asyncio.timeout(30):  # generous: only a wait, never a figure
            await producer.cancels.subscribed.wait()
        answer = FakeAnswer()
        producer.writer.track(answer)
        answer.add(b"start", {})
        await producer.writer.flush()
        with pytest.raises(HTTPError) as info:
            await other.cancel(answer.stream_id, "someone-else")
        assert info.value.status == 404
        assert await other.cancel(answer.stream_id, "k1") == "cancelling"
        async with asyncio.timeout(30):
            await heard.wait()
        assert cancelled == [answer.stream_id]
        answer.add(b"end", {"end_reason": "cancelled"})
        producer.writer.finish(answer)
        await producer.writer.flush()
        assert await other.cancel(answer.stream_id, "k1") == "ended"
    finally:
        await producer.aclose()
        await other.aclose()


async def test_redis_down_cuts_remote_readers_and_refuses_new_ones() -> None:
    with redis_server() as service:
        redis = SharedRedis(service.url, timeout=0.5, prefix="down:")
        await redis.open()
        try:
            writer = writer_of(redis)
            reader = LogReader(redis, instance="B", block_ms=300)
            answer = FakeAnswer()
            writer.track(answer)
            answer.add(b"start", {})
            await writer.flush()
            stream = await reader.open(answer.stream_id, "k1", 0)
            await asyncio.sleep(0.05)
            service.process.kill()
            service.process.wait()
            with pytest.raises(HTTPError) as info:
                async with asyncio.timeout(3):
                    await stream.next_batch()
            assert info.value.status == 503
            with pytest.raises(HTTPError) as info:
                await reader.open(answer.stream_id, "k1", 0)
            assert info.value.status == 503
            await reader.aclose()
        finally:
            await redis.close()


async def test_a_cut_reader_raises_a_fresh_error_each_time_and_keeps_no_traceback() -> None:
    # raising the kept failure itself would give it a traceback through next_batch's frame,
    # which holds the stream, which holds the failure: a cycle (the server runs with the
    # cyclic collector off, server/_gc.py)
    redis = SharedRedis("redis://127.0.0.1:1", prefix="cut:")  # never opened: not needed
    reader = LogReader(redis, instance="B")
    stream = RemoteStream(reader, "s1", "ernie-4.5", 0, max_pending=10)
    kept = HTTPError(503, "client_too_slow", "the client fell too far behind")
    stream.fail(kept)
    raised = []
    for _ in range(2):
        with pytest.raises(HTTPError) as info:
            await stream.next_batch()
        raised.append(info.value)
    assert all(e is not kept and e.status == 503 and e.code == "client_too_slow" for e in raised)
    assert raised[0] is not raised[1]
    assert kept.__traceback__ is None


async def test_an_answer_ending_while_a_batch_is_in_flight_gets_its_end_written(
    shared: SharedRedis,
) -> None:
    writer = writer_of(shared, window=30.0)
    answer = FakeAnswer()
    writer.track(answer)
    answer.add(b"start", {})
    await writer.flush()
    answer.text("a")
    flushing = asyncio.ensure_future(writer.flush())
    await asyncio.sleep(0)  # the batch is queued and on its way
    answer.add(b"end", {})
    writer.finish(answer)
    assert await flushing == 1
    assert len(writer) == 1  # still tracked: its end is not written yet
    assert await writer.flush() == 1
    assert len(writer) == 0
    log = log_key(shared, answer.stream_id)
    assert [rid for rid, _ in await entries(shared, answer.stream_id)] == ["0-1", "1-1", "2-1"]
    assert 29_000 < await shared.client.pttl(log) <= 30_000
