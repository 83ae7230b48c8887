"""Usage, spend and budgets end to end: ``wenxin serve`` over an emulator whose own reported
usage is tapped off the wire, so the recorded spend is compared with what the upstream said —
for every route, for retries (counted once) and continuations (one record per request); budgets
exact under racing requests; ``GET /api/usage`` shows only the caller's key; ``wenxin usage``
and ``wenxin keys`` (budgets) from the command line; the usage counters in ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import Running, UsageTap, new_conversation, running

from servers import serving
from wenxin_stream import AsyncClient
from wenxin_stream._token_estimate import estimate_tokens
from wenxin_stream.cli import main
from wenxin_stream.emulator import EmulatorConfig, ServerHandle
from wenxin_stream.emulator import create_app as create_emulator
from wenxin_stream.server._budgets import Budgets
from wenxin_stream.server._store import SyncKeyAdmin
from wenxin_stream.server._usage import Pricing, cny_from_nano

MODEL = "ernie-4.5-21b-a3b"  # live, and priced: 0.5 / 2 CNY per million tokens in / out


@pytest.fixture(scope="module")
def tap() -> Iterator[tuple[UsageTap, ServerHandle]]:
    tapped = UsageTap(create_emulator(EmulatorConfig(ttft=0.0, interval=0.0, v2_interval=0.0)))
    with serving(tapped) as handle:
        yield tapped, handle


@pytest.fixture
def serve(tmp_path: Path, tap: tuple[UsageTap, ServerHandle]) -> Iterator[Callable[..., Running]]:
    stack: list[Any] = []

    def start(**overrides: Any) -> Running:
        cm = running(tmp_path / f"data{len(stack)}", tap[1].base_url, **overrides)
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def _key(srv: Running, name: str, budgets: Budgets | None = None) -> dict[str, str]:
    with SyncKeyAdmin(srv.db) as admin:
        record, secret = admin.create_key(
            name, rpm=None, tpm=None, max_streams=None, budgets=budgets
        )
    srv.app.keys.invalidate()
    return {"Authorization": f"Bearer {secret}", "X-Key-Id": record.id}


def _ask_openai(client: httpx.Client, question: str, **body: Any) -> httpx.Response:
    messages = [{"role": "user", "content": question}]
    return client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, **body})


def _usage(client: httpx.Client, **params: str) -> dict[str, Any]:
    r = client.get("/api/usage", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _wait_for_answers(client: httpx.Client, answers: int) -> dict[str, Any]:
    """The answers are recorded as they end (after the client saw the end): wait for them."""
    for _ in range(200):
        body = _usage(client)
        if body["totals"]["answers"] >= answers:
            return body
        threading.Event().wait(0.02)
    raise AssertionError(f"only {body['totals']['answers']} of {answers} answers recorded")


def test_spend_equals_the_upstreams_own_usage_on_every_route(
    serve: Callable[..., Running], tap: tuple[UsageTap, ServerHandle]
) -> None:
    srv = serve()
    key = _key(srv, "alice")
    tapped = tap[0]
    before, recorded = tapped.totals(), len(tapped.usages)
    with srv.client(headers={"Authorization": key["Authorization"]}) as client:
        assert _ask_openai(client, "请介绍一下长城").status_code == 200
        with client.stream(
            "POST", "/v1/chat/completions",
            json={"model": MODEL, "stream": True,
                  "messages": [{"role": "user", "content": "what is a budget"}]},
        ) as r:  # fmt: skip
            assert r.status_code == 200
            r.read()
        cid = new_conversation(client, model=MODEL)
        r = client.post(f"/api/conversations/{cid}/messages", json={"content": "你好，文心"})
        assert r.status_code == 200, r.text
        body = _wait_for_answers(client, 3)
    tapped.recorded(recorded + 3)
    after = tapped.totals()
    upstream = [a - b for a, b in zip(after, before, strict=True)]
    totals = body["totals"]
    assert (totals["prompt_tokens"], totals["completion_tokens"], totals["total_tokens"]) == tuple(
        upstream
    )
    assert (totals["answers"], totals["requests"]) == (3, 3)
    assert all(day["estimated"] == 0 for day in body["days"])
    expected = Pricing().cost(MODEL, "default", upstream[0], upstream[1])
    assert expected is not None
    assert expected > 0
    assert totals["cost_cny"] == cny_from_nano(expected)
    assert body["key_id"] == key["X-Key-Id"]
    metrics = httpx.get(srv.url + "/metrics").text
    assert (
        f'wenxin_usage_tokens_total{{model="{MODEL}",channel="default",type="prompt"}}' in metrics
    )
    assert (
        f'wenxin_usage_requests_total{{model="{MODEL}",channel="default",source="reported"}} 3\n'
        in metrics
    )


def test_a_retried_request_is_counted_once(
    serve: Callable[..., Running], tap: tuple[UsageTap, ServerHandle]
) -> None:
    srv = serve(upstream_retries=1)
    key = _key(srv, "retry")
    before, recorded = tap[0].totals(), len(tap[0].usages)
    with srv.client(headers={"Authorization": key["Authorization"]}) as client:
        r = _ask_openai(client, "retry me [[wenxin:fault error=336100;times=1]]")
        assert r.status_code == 200, r.text
        body = _wait_for_answers(client, 1)
    tap[0].recorded(recorded + 1)  # (the failed try reported no usage)
    upstream_total = tap[0].totals()[2] - before[2]
    (day,) = body["days"]
    assert (day["answers"], day["requests"], day["total_tokens"]) == (1, 1, upstream_total)
    assert r.json()["usage"]["total_tokens"] == upstream_total


async def test_a_continued_answer_records_each_upstream_request(
    tap: tuple[UsageTap, ServerHandle],
) -> None:
    """Continue mode: the cut request reported nothing (estimated from what it delivered), the
    continuation reported its own usage — two requests, each counted once."""
    tapped, handle = tap
    before = len(tapped.usages)
    async with AsyncClient(
        bearer_token="bce-v3/ALTAK-usage/x", v2_base_url=handle.base_url, api="v2",
        continue_on_error=True,
    ) as client:  # fmt: skip
        stream = client.chat.stream(
            model=MODEL,
            messages=[{"role": "user", "content": "继续 [[wenxin:fault cut_after=3;times=1]]"}],
        )
        async with stream:
            await stream.until_done()
    ledger = stream.attempt_usages
    assert [(a.attempt, a.kind, a.usage is None) for a in ledger] == [
        (1, "first", True),
        (2, "continuation", False),
    ]
    assert ledger[0].counted.completion_tokens > 0  # the estimate of what it delivered
    (reported,) = tapped.recorded(before + 1)[before:]  # the cut stream carried none
    assert ledger[1].usage is not None
    assert ledger[1].usage.total_tokens == reported["total_tokens"]


def test_racing_requests_never_overspend_a_budget(serve: Callable[..., Running]) -> None:
    """Ten requests at once against a daily budget that only three estimates fit in: exactly
    three reach the upstream, the rest are 429 ``budget_exceeded`` before it."""
    srv = serve()
    question = "budget race [[wenxin:fault interval=0.05;chunks=8]]"
    messages = [{"role": "user", "content": question}]
    estimate = estimate_tokens(messages, answer_tokens=200)
    key = _key(srv, "racer", Budgets(tokens_day=3 * estimate + estimate // 2))
    headers = {"Authorization": key["Authorization"]}

    def one(_: int) -> httpx.Response:
        with srv.client(headers=headers) as client:
            return _ask_openai(client, question, max_tokens=200)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(one, range(10)))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(ok), len(refused)) == (3, 7), [r.status_code for r in responses]
    error = refused[0].json()["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
    assert "daily token budget" in error["message"]
    assert 1 <= int(refused[0].headers["retry-after"]) <= 86_400
    assert refused[0].headers["x-should-retry"] == "false"
    with srv.client(headers=headers) as client:
        body = _wait_for_answers(client, 3)
    spent = body["totals"]["total_tokens"]
    (budget,) = body["budgets"]
    assert budget["tokens_spent"] == spent <= budget["tokens_limit"]  # never overspent
    assert spent == sum(r.json()["usage"]["total_tokens"] for r in ok)


def test_the_usage_api_shows_only_the_callers_key(serve: Callable[..., Running]) -> None:
    srv = serve()
    alice, bob = _key(srv, "alice"), _key(srv, "bob")
    with srv.client(headers={"Authorization": alice["Authorization"]}) as client:
        assert _ask_openai(client, "alice asks").status_code == 200
        assert _ask_openai(client, "alice asks again").status_code == 200
        mine = _wait_for_answers(client, 2)
    with srv.client(headers={"Authorization": bob["Authorization"]}) as client:
        theirs = _usage(client)
        assert theirs["key_id"] == bob["X-Key-Id"]
        assert (theirs["totals"]["answers"], theirs["days"]) == (0, [])
        assert _ask_openai(client, "bob asks").status_code == 200
        theirs = _wait_for_answers(client, 1)
        assert client.get("/api/usage", params={"from": "2026-13-01"}).status_code == 400
        r = client.get("/api/usage", params={"from": "2026-12-02", "to": "2026-12-01"})
        assert (r.status_code, r.json()["days"]) == (200, [])  # an empty range
        for bad in ({"from": "2026-1-1"}, {"to": ""}):
            r = client.get("/api/usage", params=bad)
            assert (r.status_code, r.json()["error"]["param"]) == (400, next(iter(bad)))
    assert mine["key_id"] == alice["X-Key-Id"]
    assert mine["totals"]["answers"] == 2
    assert theirs["totals"]["answers"] == 1
    assert httpx.get(srv.url + "/api/usage").status_code == 401  # keys exist: one is needed


def test_wenxin_usage_and_keys_budgets_on_the_command_line(
    serve: Callable[..., Running], capsys: pytest.CaptureFixture[str]
) -> None:
    srv = serve()
    data = ["--data-dir", str(srv.db.parent)]
    assert main(["keys", "create", "--name", "carol", "--budget-cny-day", "0.50",
                 "--budget-tokens-month", "100000", *data]) == 0  # fmt: skip
    secret = capsys.readouterr().out.strip()
    srv.app.keys.invalidate()
    with srv.client(headers={"Authorization": f"Bearer {secret}"}) as client:
        r = _ask_openai(client, "command line")
        assert r.status_code == 200
        body = _wait_for_answers(client, 1)
    assert {b["period"] for b in body["budgets"]} == {"day", "month"}
    assert main(["usage", "--json", "--by", "key,model", *data]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["rows"]
    assert (row["key_name"], row["model"], row["total_tokens"]) == (
        "carol",
        MODEL,
        r.json()["usage"]["total_tokens"],
    )
    assert report["totals"]["cost_cny"] == body["totals"]["cost_cny"]
    assert main(["usage", *data]) == 0
    table = capsys.readouterr().out
    assert "carol" in table
    assert MODEL in table
    assert "total" in table
    assert main(["keys", "update", "carol", "--budget-cny-day", "none", "--rpm", "5", *data]) == 0
    assert "monthly token budget 100,000 tokens" in capsys.readouterr().out
    assert main(["keys", "list", "--json", *data]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["rpm"], listed["budget_nano_day"], listed["budget_tokens_month"]) == (
        5,
        None,
        100000,
    )
    assert main(["keys", "update", "carol", *data]) == 2  # nothing to change
    for argv in (
        ["keys", "create", "--name", "d", "--budget-cny-day", "-1", *data],
        ["keys", "update", "carol", "--budget-tokens-day", "0", *data],
        ["usage", "--by", "nothing", *data],
        ["usage", "--from", "2026-02-30", *data],
    ):
        with pytest.raises(SystemExit) as exited:  # argparse refuses it, naming the option
            main(argv)
        assert exited.value.code == 2
    capsys.readouterr()


def test_budgets_survive_a_restart(serve: Callable[..., Running], tmp_path: Path) -> None:
    """A new process loads what the key already spent today from the store."""
    srv = serve()
    question = "restart"
    estimate = estimate_tokens([{"role": "user", "content": question}], answer_tokens=100)
    key = _key(srv, "dora")
    with srv.client(headers={"Authorization": key["Authorization"]}) as client:
        assert _ask_openai(client, question, max_tokens=100).status_code == 200
        spent = _wait_for_answers(client, 1)["totals"]["total_tokens"]
    with SyncKeyAdmin(srv.db) as admin:  # room for what is spent plus less than one estimate
        admin.update_key(key["X-Key-Id"], {"budget_tokens_day": spent + estimate - 1})
    srv.app.keys.invalidate()
    data_dir = srv.app.config.data_dir
    upstream = srv.app.config.upstream_v2_base_url
    with (
        running(data_dir, upstream) as again,  # a fresh process's counters: from the store
        again.client(headers={"Authorization": key["Authorization"]}) as client,
    ):
        r = _ask_openai(client, question, max_tokens=100)
        assert (r.status_code, r.json()["error"]["code"]) == (429, "budget_exceeded")
        r = _ask_openai(client, question, max_tokens=99)  # an estimate one token smaller
        assert r.status_code == 200, r.text  # fits exactly: spent + (estimate - 1)


def test_concurrent_stores_of_the_same_request_are_refused(tmp_path: Path) -> None:
    """(stream_id, attempt) is the table's key: a request cannot be stored twice."""

    async def go() -> None:
        from wenxin_stream.server._store import SQLiteStore, StoreError
        from wenxin_stream.server._usage import UsageRecord

        record = UsageRecord("k", MODEL, "default", "2026-12-03T00:00:00.000000Z", "2026-12-03",
                             "s_1", 1, "first", 1, 2, 3, None, 7, False)  # fmt: skip
        async with SQLiteStore(tmp_path / "u.db") as store:
            assert await store.record_usage([record]) == 1
            with pytest.raises(StoreError):
                await store.record_usage([record])
            assert await store.spent_since("k", "2026-12-01") == (3, 7)

    asyncio.run(go())


def test_a_fleet_on_redis_and_postgresql_never_overspends_a_budget(
    tmp_path: Path, tap: tuple[UsageTap, ServerHandle], redis_service: Any, postgres_url: str
) -> None:
    """Two instances, one Redis (the budget's counters), one PostgreSQL (keys and usage):
    ten racing requests spread over both pass a budget for three exactly three times."""
    import redis

    redis_url = redis_service.url.rsplit("/", 1)[0] + "/15"
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    question = "fleet race [[wenxin:fault interval=0.05;chunks=8]]"
    estimate = estimate_tokens([{"role": "user", "content": question}], answer_tokens=200)
    with SyncKeyAdmin(postgres_url) as admin:
        record, secret = admin.create_key(
            "fleet", rpm=None, tpm=None, max_streams=None,
            budgets=Budgets(tokens_day=3 * estimate + estimate // 2),
        )  # fmt: skip
    shared = {"redis_url": redis_url, "database_url": postgres_url}
    upstream = tap[1].base_url
    headers = {"Authorization": f"Bearer {secret}"}
    with (
        running(tmp_path / "a", upstream, **shared) as a,
        running(tmp_path / "b", upstream, **shared) as b,
    ):

        def one(i: int) -> httpx.Response:
            with (a if i % 2 else b).client(headers=headers) as client:
                return _ask_openai(client, question, max_tokens=200)

        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(one, range(10)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 3 + [429] * 7, codes
        assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {
            "budget_exceeded"
        }
        with a.client(headers=headers) as client:
            body = _wait_for_answers(client, 3)
    assert body["key_id"] == record.id
    spent = sum(r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200)
    assert body["totals"]["total_tokens"] == spent <= body["budgets"][0]["tokens_limit"]
