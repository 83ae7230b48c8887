"""Every fault key, observed on the wire (v1 and v2, stream and non-stream)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import httpx
import pytest
from emu_helpers import (
    V1_CHAT,
    V2_CHAT,
    bearer,
    events,
    get_token,
    json_events,
    raw_request,
    timed_events,
    v1_body,
    v2_body,
)

from servers import emulator, serving
from wenxin_stream.emulator import EmulatorConfig, ServerHandle, create_app, parse_fault_spec


def v1(
    client: httpx.Client,
    prompt: str = "你好",
    *,
    stream: bool = True,
    fault: str | None = None,
    **extra: Any,
) -> httpx.Response:
    token = get_token(client)
    headers = {"X-Wenxin-Fault": fault} if fault is not None else {}
    return client.post(
        V1_CHAT,
        params={"access_token": token},
        json=v1_body(prompt, stream=stream, **extra),
        headers=headers,
    )


def v2(
    client: httpx.Client,
    prompt: str = "你好",
    *,
    stream: bool = True,
    fault: str | None = None,
    **extra: Any,
) -> httpx.Response:
    headers = bearer()
    if fault is not None:
        headers["X-Wenxin-Fault"] = fault
    return client.post(V2_CHAT, json=v2_body(prompt, stream=stream, **extra), headers=headers)


def contents(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["choices"][0]["delta"]["content"] for c in chunks]


# -- error, error_after, times ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_error_v1_via_directive_and_header(client: httpx.Client, stream: bool) -> None:
    response = v1(client, "你好 [[wenxin:fault error=336100]]", stream=stream)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error_code"] == 336100
    assert response.json()["error_msg"] == "try again"
    response = v1(client, stream=stream, fault="error=42")
    assert response.json() == {
        "error_code": 42,
        "error_msg": "Injected error",
        "id": response.json()["id"],
    }


@pytest.mark.parametrize(
    ("code", "status", "v2_code", "v2_type"),
    [
        (336501, 429, "rpm_rate_limit_exceeded", "rate_limit_exceeded"),
        (336100, 500, "dispatch_internal_error", "Internal_error"),
        (110, 401, "invalid_iam_token", "invalid_request_error"),
        (999, 500, "internal_error", "Internal_error"),
    ],
)
def test_error_v2_counterparts(
    client: httpx.Client, code: int, status: int, v2_code: str, v2_type: str
) -> None:
    for stream in (False, True):
        response = v2(client, f"问 [[wenxin:fault error={code}]]", stream=stream)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert (error["code"], error["type"]) == (v2_code, v2_type)


def test_error_after_v1(client: httpx.Client) -> None:
    response = v1(client, fault="error=336100;error_after=2")
    data = events(response.content)
    assert len(data) == 3
    assert [json.loads(d).get("sentence_id") for d in data[:2]] == [0, 1]
    assert json.loads(data[2])["error_code"] == 336100
    # non-stream: the error comes at once
    assert (
        v1(client, stream=False, fault="error=336100;error_after=2").json()["error_code"] == 336100
    )


def test_error_after_v2(client: httpx.Client) -> None:
    response = v2(client, fault="error=336501;error_after=3")
    assert response.status_code == 200
    data = events(response.content)
    assert "[DONE]" not in data
    assert len(data) == 4
    assert json.loads(data[3])["error"]["code"] == "rpm_rate_limit_exceeded"
    past_end = events(v2(client, fault="error=2;error_after=100000").content)
    assert json.loads(past_end[-1])["error"]["code"] == "service_unavailable"


def test_times_counts_per_spec_and_credential(client: httpx.Client) -> None:
    spec = f"error=336100;times=2;stamp=0;chunks={int(time.time() * 1000) % 1000 + 1}"
    token = get_token(client)

    def ask(tok: str, fault: str = spec) -> int | None:
        r = client.post(
            V1_CHAT, params={"access_token": tok}, json=v1_body(), headers={"X-Wenxin-Fault": fault}
        )
        return r.json().get("error_code")

    assert [ask(token) for _ in range(3)] == [336100, 336100, None]
    # the same SPEC written differently is the same SPEC
    reordered = ";".join(reversed(spec.split(";")))
    assert ask(token, reordered) is None
    # another credential has its own count
    other = get_token(client)
    assert [ask(other), ask(other), ask(other)] == [336100, 336100, None]
    # v2: the bearer key is the credential
    headers = bearer() | {"X-Wenxin-Fault": spec}
    statuses = [client.post(V2_CHAT, json=v2_body(), headers=headers).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]


# -- cut_after, malformed_after, big_line ----------------------------------------------------


@pytest.mark.parametrize("route", ["v1", "v2"])
def test_cut_after_leaves_the_body_incomplete(
    emu: ServerHandle, client: httpx.Client, route: str
) -> None:
    if route == "v1":
        path, body, headers = (
            f"{V1_CHAT}?access_token={get_token(client)}",
            v1_body(stream=True),
            {},
        )
    else:
        path, body, headers = V2_CHAT, v2_body(stream=True), bearer()
    headers["X-Wenxin-Fault"] = "cut_after=2"
    raw = raw_request(emu.base_url, "POST", path, body, headers)
    assert raw.status == 200
    data, complete = raw.body()
    assert not complete
    assert not raw.raw.endswith(b"0\r\n\r\n")
    chunks = events(data)
    assert len(chunks) == 2
    assert "[DONE]" not in chunks
    assert all(json.loads(c).get("is_end") in (False, None) for c in chunks)
    # a client sees the truncation as a protocol error
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(
            V2_CHAT, json=v2_body(stream=True), headers=bearer() | {"X-Wenxin-Fault": "cut_after=0"}
        )


def test_cut_after_non_stream(emu: ServerHandle) -> None:
    raw = raw_request(
        emu.base_url, "POST", V2_CHAT, v2_body(), bearer() | {"X-Wenxin-Fault": "cut_after=1"}
    )
    body, complete = raw.body()
    assert not complete
    assert 0 < len(body) < int(raw.header("content-length") or 0)


def test_malformed_after(client: httpx.Client) -> None:
    data = events(v1(client, fault="malformed_after=1").content)
    assert data[1] == "{malformed json from the wenxin emulator"
    with pytest.raises(ValueError):
        json.loads(data[1])
    assert json.loads(data[-1])["is_end"] is True
    data = events(v2(client, fault="malformed_after=0").content)
    assert data[0].startswith("{malformed")
    assert data[-1] == "[DONE]"
    body = v1(client, stream=False, fault="malformed_after=0").content
    with pytest.raises(ValueError):
        json.loads(body)


def test_big_line(client: httpx.Client) -> None:
    body = v2(client, fault="big_line=100000").content
    lines = body.split(b"\n")
    sizes = sorted(len(line) for line in lines)
    assert sizes[-1] >= 100000
    assert sizes[-2] < 1000
    first = json.loads(events(body)[0])
    assert set(first["wenxin_padding"]) == {"x"}
    assert len(v1(client, stream=False, fault="big_line=5000").content) >= 5000


# -- split_utf8 -------------------------------------------------------------------------------


def test_split_utf8_sends_each_character_in_two_writes(
    emu: ServerHandle, client: httpx.Client
) -> None:
    token = get_token(client)
    body = v1_body("你好", stream=True, stop=["本地"])
    raw = raw_request(
        emu.base_url,
        "POST",
        f"{V1_CHAT}?access_token={token}",
        body,
        {"X-Wenxin-Fault": "split_utf8=1"},
    )
    pieces = [data for _, data in raw.reads]
    torn = 0
    for piece in pieces:
        try:
            piece.decode("utf-8")
        except UnicodeDecodeError:
            torn += 1
    assert torn >= 5  # 【离线模拟】这是 each arrive split
    data, complete = raw.body()
    assert complete
    chunks = json_events(data)
    assert "".join(c["result"] for c in chunks) == "【离线模拟】这是 wenxin-stream "


# -- pacing: ttft, interval, chunks, stall ----------------------------------------------------


def test_ttft_interval_chunks(client: httpx.Client) -> None:
    token = get_token(client)
    response, timed = timed_events(
        client,
        "POST",
        V1_CHAT,
        params={"access_token": token},
        json=v1_body(stream=True),
        headers={"X-Wenxin-Fault": "ttft=0.2;interval=0.05;chunks=4"},
    )
    assert response.status_code == 200
    assert len(timed) == 5  # 4 content chunks + the is_end chunk
    times = [t for t, _ in timed]
    assert times[0] >= 0.18
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.03 for gap in gaps[:3])
    _, timed = timed_events(
        client,
        "POST",
        V2_CHAT,
        json=v2_body(stream=True),
        headers=bearer() | {"X-Wenxin-Fault": "chunks=7"},
    )
    assert len(timed) == 8  # 7 content chunks + [DONE]


def test_chunks_lengthens_a_short_answer(client: httpx.Client) -> None:
    chunks = json_events(v1(client, fault="chunks=600").content)
    assert len(chunks) == 601
    assert all(c["result"] for c in chunks[:-1])


@pytest.mark.parametrize(("spec", "position"), [("stall=0.3", 0), ("stall=0.3;stall_after=2", 2)])
def test_stall(client: httpx.Client, spec: str, position: int) -> None:
    _, timed = timed_events(
        client,
        "POST",
        V2_CHAT,
        json=v2_body(stream=True),
        headers=bearer() | {"X-Wenxin-Fault": spec},
    )
    times = [t for t, _ in timed]
    if position == 0:
        assert times[0] >= 0.28
    else:
        assert times[1] < 0.2
        assert times[2] - times[1] >= 0.28


# -- endless ----------------------------------------------------------------------------------


def test_endless_stops_when_the_client_disconnects() -> None:
    app = create_app(EmulatorConfig(ttft=0, interval=0.001, v2_interval=0.001))
    with serving(app) as server, httpx.Client(base_url=server.base_url) as c:
        headers = bearer() | {"X-Wenxin-Fault": "endless=1"}
        decoder_events = 0
        with c.stream("POST", V2_CHAT, json=v2_body(stream=True), headers=headers) as response:
            pieces = response.iter_raw()
            while decoder_events <= 300:  # well beyond one answer's worth of deltas
                decoder_events += next(pieces).count(b"data: ")
            assert app.shared.active_streams == 1
        deadline = time.monotonic() + 2
        while app.shared.active_streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.shared.active_streams == 0


# -- safety, truncate -------------------------------------------------------------------------


def test_safety_v1(client: httpx.Client) -> None:
    full = json_events(v1(client).content)
    mild = json_events(v1(client, fault="safety=1").content)
    assert all(c["need_clear_history"] is True and c["ban_round"] == -1 for c in mild)
    assert mild[-1]["finish_reason"] == "normal"
    assert len(mild) == len(full)
    severe = json_events(v1(client, fault="safety=3").content)
    content, end = severe[:-1], severe[-1]
    assert len(content) == (len(full) - 1 + 1) // 2
    assert all(c["need_clear_history"] is False for c in content)
    assert end["need_clear_history"] is True
    assert end["ban_round"] == -1
    assert end["finish_reason"] == "content_filter"
    body = v1(client, stream=False, fault="safety=4").json()
    assert body["finish_reason"] == "content_filter"
    assert body["need_clear_history"] is True
    assert body["ban_round"] == -1


def test_safety_v2(client: httpx.Client) -> None:
    mild = json_events(v2(client, fault="safety=2").content)
    assert all(c["choices"][0]["flag"] == 2 and c["choices"][0]["ban_round"] == -1 for c in mild)
    assert mild[-1]["choices"][0]["finish_reason"] == "stop"
    full = json_events(v2(client).content)
    severe = json_events(v2(client, fault="safety=4").content)
    last = severe[-1]["choices"][0]
    assert last["flag"] == 4
    assert last["ban_round"] == -1
    assert last["finish_reason"] == "content_filter"
    assert last["delta"]["content"] == ""
    assert all(c["choices"][0]["flag"] == 0 for c in severe[:-1])
    assert len(severe) - 1 == (len(full) + 1) // 2
    choice = v2(client, stream=False, fault="safety=3").json()["choices"][0]
    assert (choice["flag"], choice["ban_round"], choice["finish_reason"]) == (
        3,
        -1,
        "content_filter",
    )


def test_truncate(client: httpx.Client) -> None:
    chunks = json_events(v1(client, fault="truncate=1").content)
    assert chunks[-1]["is_truncated"] is True
    assert chunks[-1]["finish_reason"] == "length"
    assert all(c["is_truncated"] is False for c in chunks[:-1])
    body = v1(client, stream=False, fault="truncate=1").json()
    assert (body["is_truncated"], body["finish_reason"]) == (True, "length")
    assert "".join(c["result"] for c in chunks) == body["result"]
    v2_chunks = json_events(v2(client, fault="truncate=1").content)
    assert v2_chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert (
        v2(client, stream=False, fault="truncate=1").json()["choices"][0]["finish_reason"]
        == "length"
    )


# -- expire_token, stamp ----------------------------------------------------------------------


def test_expire_token_v1(client: httpx.Client) -> None:
    token = get_token(client)
    params = {"access_token": token}
    assert "result" in client.post(V1_CHAT, params=params, json=v1_body()).json()
    expired = client.post(V1_CHAT, params=params, json=v1_body("[[wenxin:fault expire_token=1]]"))
    assert expired.json()["error_code"] == 111
    # the token really expired
    assert client.post(V1_CHAT, params=params, json=v1_body()).json()["error_code"] == 111
    assert (
        "result"
        in client.post(V1_CHAT, params={"access_token": get_token(client)}, json=v1_body()).json()
    )


def test_expire_token_v2(client: httpx.Client) -> None:
    response = v2(client, fault="expire_token=1")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_iam_token"


def test_stamp(client: httpx.Client) -> None:
    before = time.time()
    chunks = json_events(v1(client, fault="stamp=1;interval=0.01").content)
    after = time.time()
    stamps = [c["wenxin_emitted_at"] for c in chunks]
    assert all(before <= s <= after for s in stamps)
    assert stamps == sorted(stamps)
    assert stamps[-1] - stamps[0] >= 0.01 * (len(stamps) - 2)
    v2_chunks = json_events(v2(client, fault="stamp=1").content)
    assert all("wenxin_emitted_at" in c for c in v2_chunks)
    assert "wenxin_emitted_at" in v1(client, stream=False, fault="stamp=1").json()


# -- how faults are given ---------------------------------------------------------------------


def test_directive_is_neither_echoed_nor_counted(client: httpx.Client) -> None:
    plain = v1(client, "天气", stream=False).json()
    directed = v1(client, "天气 [[wenxin:fault stamp=1]]", stream=False).json()
    assert "wenxin:fault" not in directed["result"]
    assert directed["result"] == plain["result"]
    assert directed["usage"] == plain["usage"]
    v2_directed = v2(client, "天气[[wenxin:fault stamp=1]]", stream=False).json()
    assert "wenxin:fault" not in v2_directed["choices"][0]["message"]["content"]


def test_header_and_directive_merge(client: httpx.Client) -> None:
    merged = v1(client, "问 [[wenxin:fault error_after=1]]", fault="error=2")
    assert json.loads(events(merged.content)[-1])["error_code"] == 2
    clash = v1(client, "问 [[wenxin:fault error=3]]", fault="error=2")
    assert clash.json()["error_code"] == 336001
    assert "given twice" in clash.json()["error_msg"]
    assert v1(client, "[[wenxin:fault]] hi", stream=False).json()["result"]


def test_directive_only_in_the_last_user_message(client: httpx.Client) -> None:
    token = get_token(client)
    body = {
        "messages": [
            {"role": "user", "content": "[[wenxin:fault error=2]]"},
            {"role": "assistant", "content": "好的"},
            {"role": "user", "content": "再来"},
        ]
    }
    assert "result" in client.post(V1_CHAT, params={"access_token": token}, json=body).json()


def test_fault_rates_are_seeded() -> None:
    config = EmulatorConfig(
        ttft=0,
        interval=0,
        v2_interval=0,
        seed=5,
        fault_rates=((parse_fault_spec("error=336100"), 0.5), (parse_fault_spec("error=18"), 1.0)),
    )

    def run() -> list[int]:
        with emulator(config) as server, httpx.Client(base_url=server.base_url) as c:
            return [
                c.post(V2_CHAT, json=v2_body(), headers=bearer("k")).status_code for _ in range(12)
            ]

    first = run()
    assert set(first) == {500, 429}  # 336100 → 500, 18 → 429 (every miss of the first rate)
    assert run() == first
    # an explicit fault takes precedence over the rates
    with emulator(config) as server, httpx.Client(base_url=server.base_url) as c:
        ok = c.post(V2_CHAT, json=v2_body(), headers=bearer() | {"X-Wenxin-Fault": "stamp=1"})
        assert ok.status_code == 200


def test_quotas_rpm_tpm() -> None:
    with emulator(rpm=2) as server, httpx.Client(base_url=server.base_url) as c:
        token = get_token(c)
        params = {"access_token": token}
        first = c.post(V1_CHAT, params=params, json=v1_body())
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        c.post(V1_CHAT, params=params, json=v1_body())
        refused = c.post(V1_CHAT, params=params, json=v1_body(stream=True))
        assert refused.status_code == 200
        assert refused.json()["error_code"] == 336501
        assert refused.json()["error_msg"] == "Rate limit reached for RPM"
        key = bearer()
        for _ in range(2):
            assert c.post(V2_CHAT, json=v2_body(), headers=key).status_code == 200
        limited = c.post(V2_CHAT, json=v2_body(), headers=key)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rpm_rate_limit_exceeded"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    with emulator(tpm=10) as server, httpx.Client(base_url=server.base_url) as c:
        token = get_token(c)
        assert "result" in c.post(V1_CHAT, params={"access_token": token}, json=v1_body()).json()
        assert (
            c.post(V1_CHAT, params={"access_token": token}, json=v1_body()).json()["error_code"]
            == 336502
        )
        key = bearer()
        assert c.post(V2_CHAT, json=v2_body(), headers=key).status_code == 200
        limited = c.post(V2_CHAT, json=v2_body(), headers=key)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "tpm_rate_limit_exceeded"
        assert limited.headers["retry-after"].isdigit()
