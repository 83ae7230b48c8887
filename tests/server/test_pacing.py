"""Admission pacing (``server/_pacing``): a burst of starts is admitted a slice at a time, in
arrival order, with the loop's other work in between; a lone start never waits."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest
from server_helpers import Running

from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._pacing import MIN_START_COST, StartPacer


class Ticker:
    """Counts the loop's iterations: a callback that reschedules itself with ``call_soon``."""

    def __init__(self) -> None:
        self.ticks = 0
        self.loop = asyncio.get_running_loop()
        self.handle = self.loop.call_soon(self.tick)

    def tick(self) -> None:
        self.ticks += 1
        self.handle = self.loop.call_soon(self.tick)

    def stop(self) -> None:
        self.handle.cancel()


async def test_a_lone_start_and_a_small_burst_do_not_wait() -> None:
    pacer = StartPacer(slice_seconds=10.0)
    await pacer.turn()
    await asyncio.gather(*(pacer.turn() for _ in range(20)))
    assert (pacer.admitted, pacer.waited) == (21, 0)


async def test_a_burst_is_admitted_in_slices_in_order_with_the_loop_running_between() -> None:
    pacer = StartPacer(slice_seconds=0.0)  # one start per slice
    ticker = Ticker()
    admitted: list[tuple[int, int]] = []

    async def start(i: int) -> None:
        await pacer.turn()
        admitted.append((i, ticker.ticks))

    try:
        await asyncio.gather(*(start(i) for i in range(6)))
    finally:
        ticker.stop()
    assert [i for i, _ in admitted] == list(range(6))
    ticks = [t for _, t in admitted]
    # between two admissions the loop went round at least once (other work ran)
    assert all(b > a for a, b in itertools.pairwise(ticks)), ticks
    assert pacer.admitted == 6
    assert pacer.waited == 5


def busy(seconds: float) -> None:
    """Keep the loop busy (a start's work, or a relayed chunk's) for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def admitted_per_turn(pacer: StartPacer, starts: int, work: float) -> list[int]:
    """Run ``starts`` starts at once, each busy ``work`` s once admitted: how many went on in
    each turn of the loop, from the first admission to the last (turns with none: 0)."""
    ticker = Ticker()
    turns: list[int] = []

    async def start() -> None:
        await pacer.turn()
        turns.append(ticker.ticks)
        busy(work)

    try:
        await asyncio.gather(*(start() for _ in range(starts)))
    finally:
        ticker.stop()
    return [turns.count(t) for t in range(turns[0], turns[-1] + 1)]


async def test_a_slice_is_counted_in_starts_not_in_the_loops_other_work() -> None:
    """Other work run between two starts of a turn (chunks relayed) does not fill the slice:
    with the slice measured in wall time, the second start waited for the next turn."""
    pacer = StartPacer(slice_seconds=0.004)  # room for four starts at a millisecond each
    first = asyncio.ensure_future(pacer.turn())
    asyncio.get_running_loop().call_soon(busy, 0.010)  # 10 ms of other work between the two
    second = asyncio.ensure_future(pacer.turn())
    await asyncio.gather(first, second)
    assert (pacer.admitted, pacer.waited) == (2, 0)


async def test_a_slice_is_open_for_a_few_slices_of_wall_time_at_most() -> None:
    """Starts that cost far more than they were measured at are still cut off: a slice is
    never open for more than ``max_slices`` slices of wall time."""
    pacer = StartPacer(slice_seconds=0.004, max_slices=4)
    assert pacer.room == 4
    per_turn = await admitted_per_turn(pacer, 3, 0.020)  # the first is 20 ms: > 4 × 4 ms
    assert per_turn[:2] == [1, 0], per_turn  # the other two waited for a later turn
    assert (sum(per_turn), pacer.waited) == (3, 2)


async def test_while_a_queue_lasts_every_turn_of_the_loop_has_a_slice() -> None:
    """The close that wakes the head of the queue runs again right after the woken starts, so
    no turn goes without a slice (one a start: it is ``slice_seconds=0``). Before 2026-12-06
    the woken went on a turn after the close and the next close a turn later: a slice every
    other turn, [1, 0, 1, 0, …]."""
    pacer = StartPacer(slice_seconds=0.0)
    assert await admitted_per_turn(pacer, 8, 0.0) == [1, 0, 1, 1, 1, 1, 1, 1, 1]
    assert pacer.waited == 7


async def test_a_turn_admits_what_its_slice_holds_at_the_starts_measured_cost() -> None:
    """Starts of 2 ms in a 6 ms slice: once the pacer has measured them, three go on in each
    turn (two on a machine busy enough to make them slower) — not the six of the first turns,
    when a start is taken to cost 1 ms, nor one a turn."""
    pacer = StartPacer(slice_seconds=0.006)
    per_turn = await admitted_per_turn(pacer, 40, 0.002)
    assert sum(per_turn) == 40
    measured = per_turn[5:-1]  # after two grants measured; the last turn takes what is left
    assert len(measured) >= 4, per_turn
    assert per_turn[0] > max(measured), per_turn  # at 1 ms a start, the first slice took more
    assert all(1 <= n <= 3 for n in measured), per_turn
    assert sum(n >= 2 for n in measured) >= len(measured) / 2, per_turn
    assert 0.0015 <= pacer._cost < 0.004, pacer._cost


async def test_a_start_is_counted_at_a_quarter_of_a_millisecond_at_least() -> None:
    """Starts that cost next to nothing up to their first wait (many waiting on one key
    lookup) do not open the slice to a whole burst: at least ``MIN_START_COST`` each."""
    pacer = StartPacer(slice_seconds=0.002)
    per_turn = await admitted_per_turn(pacer, 64, 0.0)
    assert sum(per_turn) == 64
    assert pacer._cost == MIN_START_COST
    assert max(per_turn) <= 8, per_turn  # 2 ms of starts at 0.25 ms each


async def test_the_metrics_count_each_turn_and_how_long_the_waits_were() -> None:
    pacer = StartPacer(slice_seconds=0.0)  # one start per slice
    metrics = Metrics()
    pacer.register(metrics)
    await asyncio.gather(*(pacer.turn() for _ in range(4)))  # three of them wait
    await pacer.turn()  # the burst is over: this one goes on at once
    assert (pacer.admitted, pacer.waited) == (5, 3)
    text = metrics.render().decode()
    assert 'wenxin_paced_starts_total{turn="at_once"} 2' in text
    assert 'wenxin_paced_starts_total{turn="waited"} 3' in text
    assert "wenxin_start_pacer_wait_seconds_count 3" in text
    # each waited a turn or a few of an otherwise idle loop: more than nothing, far below 1 s
    (waits,) = [x for x in text.splitlines() if x.startswith("wenxin_start_pacer_wait_seconds_sum")]
    assert 0.0 < float(waits.split()[-1]) < 1.0


async def test_a_queue_drains_in_a_few_turns_while_new_starts_keep_joining_it() -> None:
    """Starts that come while others wait queue behind them and have a close scheduled; the
    starts a close woke must still be admitted on their turn (not held back as if a slice
    were full), so each close wakes twice as many as the last slice let in. Held back, the
    queue drained one start a turn or none while newcomers kept it long: waits of 100–250 ms
    at 2,000 ERNIE-paced streams (bench/PROFILE.md, 2026-12-06)."""
    pacer = StartPacer(slice_seconds=0.0)  # one start per slice: a queue forms
    ticker = Ticker()
    burst = [asyncio.ensure_future(pacer.turn()) for _ in range(32)]
    await asyncio.sleep(0)
    assert len(pacer._queue) == 31
    pacer.slice = 10.0  # from now on every start fits in its slice's time
    newcomers: list[asyncio.Future[None]] = []
    began = ticker.ticks
    try:
        while not all(f.done() for f in burst) and ticker.ticks - began < 100:
            loop = asyncio.get_running_loop()  # a newcomer at every turn of the loop
            loop.call_soon(lambda: newcomers.append(asyncio.ensure_future(pacer.turn())))
            await asyncio.sleep(0)
        turns = ticker.ticks - began
        await asyncio.wait_for(asyncio.gather(*newcomers), 1.0)
    finally:
        ticker.stop()
    # 1, 2, 4, … 32 woken per close: a handful of turns (a start a turn would take 31)
    assert turns <= 12, turns
    assert pacer.admitted == 32 + len(newcomers)


async def test_a_waiting_start_that_is_cancelled_leaves_the_queue() -> None:
    pacer = StartPacer(slice_seconds=0.0)  # one start per slice
    first, waiting, after = (asyncio.ensure_future(pacer.turn()) for _ in range(3))
    await asyncio.sleep(0)  # the first opened a slice, the other two queued
    assert first.done()
    assert not waiting.done()
    assert not after.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(after, 1.0)
    assert pacer.admitted == 2
    assert pacer.waited == 1  # the cancelled one is not counted
    assert not pacer._queue


async def test_a_start_woken_then_cancelled_passes_its_turn_on() -> None:
    pacer = StartPacer(slice_seconds=0.0)
    pacer._open = pacer._close_due = True  # a slice that admits nobody more; closed by hand
    woken, last = asyncio.ensure_future(pacer.turn()), asyncio.ensure_future(pacer.turn())
    await asyncio.sleep(0)
    assert len(pacer._queue) == 2
    pacer._close()  # it admitted nobody: it wakes the head of the queue alone
    woken.cancel()  # before it could take its turn
    with pytest.raises(asyncio.CancelledError):
        await woken
    await asyncio.wait_for(last, 1.0)  # not stuck behind the cancelled one
    assert pacer.admitted == 1


def test_the_server_paces_its_starts_unless_turned_off(make_server: Callable[..., Running]) -> None:
    body = {"model": "ernie-4.5-21b-a3b", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    off = make_server(start_slice=0)
    assert off.app.answers.pacer is None  # turned off: every start goes on at once
    paced = make_server()  # the default
    pacer = paced.app.answers.pacer
    assert pacer is not None
    assert pacer.slice == 0.002
    with paced.client() as client:
        for _ in range(3):
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200
            assert r.text.endswith("data: [DONE]\n\n")
        conv = client.post("/api/conversations", json={}).json()["id"]
        r = client.post(f"/api/conversations/{conv}/messages", json={"content": "hi"})
        assert r.status_code == 200
        assert "event: end" in r.text
    assert pacer.admitted == 4  # each start, on both routes, went through the pacer
    with paced.client() as client:
        shown = client.get("/metrics").text
    assert 'wenxin_paced_starts_total{turn="at_once"} 4' in shown  # one at a time: no wait
    assert 'wenxin_paced_starts_total{turn="waited"} 0' in shown
    assert "wenxin_start_pacer_wait_seconds_count 0" in shown
    with off.client() as client:
        assert "wenxin_paced_starts_total" not in client.get("/metrics").text
