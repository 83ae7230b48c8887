"""The one error mapping (``server/_errors.py``, ``docs/ERRORS.md``): every row, on every route,
before and after output, with ERNIE's faults injected through the emulator; ERNIE's rate
limits answered 429 at once; cut answers never finished."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import (
    EventReader,
    Probe,
    Running,
    draining,
    new_conversation,
    paced,
    server_config,
    sse_events,
    wait_for,
)
from websockets.sync.client import connect

from wenxin_stream import AsyncClient
from wenxin_stream._error_codes import V1_CODES
from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server import create_app

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
DRIVER = Path(__file__).with_name("openai_drive.py")

# (injected v1 code, status, our code, Retry-After header?, x-should-retry)
INJECTED = [
    (336003, 400, "invalid_argument", False, None),
    (336006, 400, "invalid_messages", False, None),
    (336007, 400, "context_length_exceeded", False, None),
    (336103, 400, "context_length_exceeded", False, None),
    (336104, 400, "system_unsafe", False, None),
    (336105, 400, "user_setting_unsafe", False, None),
    (336005, 404, "model_not_found", False, None),
    (3, 404, "model_not_found", False, None),
    (17, 429, "insufficient_quota", False, "false"),
    (19, 429, "insufficient_quota", False, "false"),
    (6, 502, "upstream_auth_failed", False, "false"),
    (13, 502, "upstream_auth_failed", False, "false"),
    (14, 502, "upstream_auth_failed", False, "false"),
    (336004, 502, "upstream_auth_failed", False, "false"),
    (336002, 502, "upstream_rejected", False, "false"),
    (2, 503, "upstream_overloaded", False, None),
    (336100, 503, "upstream_overloaded", False, None),
    (1, 502, "upstream_error", False, None),
    (336000, 502, "upstream_error", False, None),
]
RATE_LIMITS = [4, 18, 336501, 336502, 336503, 336504, 336505, 336507]


def _chat(srv: Running, question: str, **body: Any) -> httpx.Response:
    messages = [{"role": "user", "content": question}]
    with srv.client() as c:
        return c.post(
            "/v1/chat/completions", json={"model": "ernie-lite-8k", "messages": messages, **body}
        )


def _check_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code
    assert set(error) >= {"message", "type", "code", "param"}
    assert "bce-v3" not in r.text  # the upstream key never shows
    return error


# -- every injectable row, through the OpenAI route -------------------------------------------


@pytest.mark.parametrize(("code", "status", "ours", "retry_after", "should_retry"), INJECTED)
def test_each_row_on_the_openai_route(
    shared: Running,
    code: int,
    status: int,
    ours: str,
    retry_after: bool,
    should_retry: str | None,
) -> None:
    for stream in (False, True):
        r = _chat(shared, f"错 [[wenxin:fault error={code}]]", stream=stream)
        error = _check_error(r, status, ours)
        assert ("retry-after" in r.headers) is retry_after
        assert r.headers.get("x-should-retry") == should_retry
        assert error["upstream_code"] == V1_CODES[code].v2_code
    if ours == "context_length_exceeded":
        assert error["param"] == "messages"
    if status == 502 and ours == "upstream_auth_failed":
        assert "upstream credentials" in error["message"]


@pytest.mark.parametrize("code", RATE_LIMITS)
def test_an_erniess_rate_limit_is_429_with_retry_after_and_pauses_at_once(
    make_server: Callable[..., Running], code: int
) -> None:
    srv = make_server(upstream_retries=2)  # a rate limit is not retried by the server
    first = _chat(srv, f"快 [[wenxin:fault error={code};times=1]]")
    error = _check_error(first, 429, "upstream_rate_limited")
    assert error["upstream_code"] == V1_CODES[code].v2_code
    assert int(first.headers["retry-after"]) >= 1
    # the server's upstream client now pauses (ERNIE's scope or the default pause): a request
    # it would hold longer than a second is answered at once, not held and then refused 502
    second = _chat(srv, "再问")
    if second.status_code == 429:
        _check_error(second, 429, "upstream_rate_limited")
        assert int(second.headers["retry-after"]) >= 1
    else:  # a short pause (QPS, cluster limits: 1 s) is over, or held under a second
        assert second.status_code == 200, second.text


def test_after_one_rpm_limit_every_route_answers_429_without_asking_ernie(
    make_server: Callable[..., Running], probed_emu: tuple[Probe, ServerHandle]
) -> None:
    probe, emu = probed_emu
    srv = make_server(upstream=emu.base_url)
    with srv.client() as c:
        cid = new_conversation(c)
        body = {"content": "快 [[wenxin:fault error=336501;times=1]]"}
        events = sse_events(c.post(f"/api/conversations/{cid}/messages", json=body).content)
        end = json.loads(events[-1].data)
        assert end["end_reason"] == "upstream_error"
        assert (end["error"]["status"], end["error"]["code"]) == (429, "upstream_rate_limited")
        assert end["error"]["retry_after"] >= 1
        asked = probe.started
        t0 = time.monotonic()
        native = c.post(f"/api/conversations/{cid}/messages", json={"content": "再问"})
        openai_route = _chat(srv, "再问", stream=True)
        elapsed = time.monotonic() - t0
        messages = c.get(f"/api/conversations/{cid}").json()["messages"]
    for r in (native, openai_route):
        _check_error(r, 429, "upstream_rate_limited")
        # RPM: the pause the SDK's limiter applies to the budget the code names (with no
        # request of ours in the window yet: a sixth of the minute), no longer than the minute
        assert 1 <= int(r.headers["retry-after"]) <= end["error"]["retry_after"] <= 60
    assert probe.started == asked  # refused here: ERNIE was not asked again
    assert len(messages) == 2  # nothing stored for the refused ask
    assert elapsed < 10  # answered, not held (it used to hold ~46 s, then answer 502)
    with connect(srv.url.replace("http", "ws") + "/api/ws") as ws:
        ws.send(json.dumps({"type": "ask", "id": "a1", "content": "再问"}))
        frame = json.loads(ws.recv(timeout=10))
    assert (frame["type"], frame["id"], frame["status"]) == ("error", "a1", 429)
    assert frame["code"] == "upstream_rate_limited"
    assert 1 <= frame["retry_after"] <= 60


def test_the_pause_follows_erniess_retry_after(
    make_server: Callable[..., Running], emu_with_rpm: ServerHandle
) -> None:
    srv = make_server(upstream=emu_with_rpm.base_url)
    assert _chat(srv, "一").status_code == 200
    refused = _chat(srv, "二")  # over the emulator's quota: its 429 carries a Retry-After
    _check_error(refused, 429, "upstream_rate_limited")
    ernie_said = int(refused.headers["retry-after"])
    assert 1 <= ernie_said <= 60
    again = _chat(srv, "三")
    _check_error(again, 429, "upstream_rate_limited")
    assert int(again.headers["retry-after"]) <= ernie_said


@pytest.fixture
def emu_with_rpm() -> Any:
    from servers import emulator

    with emulator(rpm=1) as handle:
        yield handle


# -- after output has started: in-band on every route ----------------------------------------


def test_mid_stream_errors_are_in_band_on_every_route(
    shared: Running, make_server: Callable[..., Running]
) -> None:
    spec = "error=336501;error_after=2;interval=0"  # a rate limit pauses: a server of its own
    events = sse_events(_chat(make_server(), paced("中", spec), stream=True).content)
    assert events[-1].data == "[DONE]"
    error = json.loads(events[-2].data)["error"]
    assert (error["code"], error["type"]) == ("upstream_rate_limited", "rate_limit_error")
    assert not any('"finish_reason":"' in e.data for e in events)
    with shared.client() as c:
        cid = new_conversation(c)
        body = {"content": paced("中", "error=336007;error_after=2;interval=0")}
        native = sse_events(c.post(f"/api/conversations/{cid}/messages", json=body).content)
    end = json.loads(native[-1].data)
    assert (end["error"]["status"], end["error"]["code"]) == (400, "context_length_exceeded")
    assert end["error"]["upstream_code"] == "characters_too_long"
    with connect(shared.url.replace("http", "ws") + "/api/ws") as ws:
        content = paced("中", "error=13;error_after=2;interval=0")
        ws.send(json.dumps({"type": "ask", "id": "w", "content": content}))
        frames = []
        while not frames or frames[-1]["type"] != "end":
            frames.append(json.loads(ws.recv(timeout=10)))
    assert [f["type"] for f in frames][-2:] == ["error", "end"]
    assert (frames[-2]["id"], frames[-2]["status"]) == ("w", 502)
    assert frames[-2]["code"] == "upstream_auth_failed"
    assert frames[-1]["end_reason"] == "upstream_error"


def test_a_v1_upstream_maps_the_same(
    make_server: Callable[..., Running], emu: ServerHandle
) -> None:
    client = AsyncClient(
        api_key="map-ak", secret_key="map-sk", base_url=emu.base_url, api="v1", retry=0
    )
    srv = make_server(client=client, upstream_api="v1")
    for code, status, ours in (
        (336003, 400, "invalid_argument"),
        (336103, 400, "context_length_exceeded"),
        (17, 429, "insufficient_quota"),
        (14, 502, "upstream_auth_failed"),
        (336005, 404, "model_not_found"),
    ):
        error = _check_error(_chat(srv, f"v1 [[wenxin:fault error={code}]]"), status, ours)
        assert error["upstream_code"] == code  # ERNIE's own: v1's integer
    rate = _chat(srv, "v1 [[wenxin:fault error=336502;times=1]]")
    _check_error(rate, 429, "upstream_rate_limited")
    assert int(rate.headers["retry-after"]) >= 1


# -- cut answers on the OpenAI route: never finish_reason "stop" ------------------------------


def test_shutdown_mid_stream_on_the_openai_route_is_an_error_not_a_finish(
    tmp_path: Path, emu: ServerHandle
) -> None:
    app = create_app(server_config(tmp_path / "d", emu.base_url, shutdown_grace=0.3))
    endless = [{"role": "user", "content": paced("无尽", "endless=1;interval=0.01")}]
    with draining(app) as (url, thread, server), httpx.Client(base_url=url, timeout=10) as c:
        request = c.build_request(
            "POST",
            "/v1/chat/completions",
            json={"model": "ernie-lite-8k", "messages": endless, "stream": True},
        )
        response = c.send(request, stream=True)
        reader = EventReader(response)
        assert reader.next() is not None
        server.should_exit = True
        rest = reader.rest()
        response.close()
        thread.join(10)
    assert rest[-1].data == "[DONE]"
    error = json.loads(rest[-2].data)["error"]
    assert (error["code"], error["type"]) == ("server_shutdown", "server_error")
    finishes = [
        choice["finish_reason"]
        for e in rest[:-2]
        for choice in json.loads(e.data)["choices"]
        if choice["finish_reason"] is not None
    ]
    assert finishes == []  # the cut answer never says "stop"


def test_shutdown_during_a_non_stream_completion_is_503_not_a_truncated_200(
    tmp_path: Path, emu: ServerHandle
) -> None:
    app = create_app(server_config(tmp_path / "d", emu.base_url, shutdown_grace=0.3))
    endless = [{"role": "user", "content": paced("无尽", "endless=1;interval=0.01")}]
    with (
        draining(app) as (url, thread, server),
        httpx.Client(base_url=url, timeout=10) as c,
        ThreadPoolExecutor(1) as pool,
    ):
        body = {"model": "ernie-lite-8k", "messages": endless}
        answer = pool.submit(c.post, "/v1/chat/completions", json=body)
        wait_for(lambda: any(gen.generated_chars for gen in list(app.relay.running)))
        server.should_exit = True
        response = answer.result(timeout=10)
        thread.join(10)
    _check_error(response, 503, "server_shutdown")


@pytest.mark.peers
def test_the_official_openai_sdk_does_not_retry_what_no_retry_fixes(
    make_server: Callable[..., Running], probed_emu: tuple[Probe, ServerHandle]
) -> None:
    if not PEERS_PYTHON.exists():  # pragma: no cover - depends on the machine
        pytest.skip("run scripts/install to create .venv-peers")
    probe, emu = probed_emu
    srv = make_server(upstream=emu.base_url, upstream_retries=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "COV_"))}
    env |= {"OPENAI_BASE_URL": srv.url + "/v1", "OPENAI_API_KEY": "anything-in-dev-mode"}
    before = probe.started
    proc = subprocess.run(
        [str(PEERS_PYTHON), str(DRIVER), "refusals", "rate_limited"],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    refusals = out["refusals"]
    assert refusals["invalid"] == {
        "class": "BadRequestError",
        "status": 400,
        "code": "invalid_argument",
        "retry_after": None,
    }
    assert (refusals["too_long"]["status"], refusals["too_long"]["code"]) == (
        400,
        "context_length_exceeded",
    )
    assert refusals["model"]["class"] == "NotFoundError"
    assert (refusals["credentials"]["status"], refusals["credentials"]["code"]) == (
        502,
        "upstream_auth_failed",
    )
    assert (refusals["quota"]["class"], refusals["quota"]["code"]) == (
        "RateLimitError",
        "insufficient_quota",
    )
    rate = out["rate_limited"]
    for answer in (rate["first"], rate["second"]):
        assert (answer["class"], answer["code"]) == ("RateLimitError", "upstream_rate_limited")
        assert int(answer["retry_after"]) >= 1
    # each refusal cost ERNIE one request: neither the SDK nor the server retried one (every
    # fault applied once only, so a retry would have succeeded instead), and the request after
    # the rate limit was refused without asking ERNIE
    assert probe.started - before == 6
