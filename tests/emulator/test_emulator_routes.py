"""Every route of the emulator, its framing and its bad-input answers, over real uvicorn."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from emu_helpers import (
    V1,
    V1_CHAT,
    V2_CHAT,
    bearer,
    events,
    get_token,
    json_events,
    raw_request,
    unique,
    v1_body,
    v2_body,
)

from servers import emulator
from wenxin_stream.emulator import EmulatorConfig, ServerHandle, load_scenarios

ID_RE = re.compile(r"^as-[a-z0-9]{10}$")
TOKEN_RE = re.compile(r"^24\.[0-9a-f]{32}\.(\d+)\.(\d+)\.\d+-\d+$")


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_oauth_token(client: httpx.Client, method: str) -> None:
    params = {"grant_type": "client_credentials", "client_id": unique(), "client_secret": "s"}
    response = client.request(method, "/oauth/2.0/token", params=params)
    assert response.status_code == 200
    body = response.json()
    match = TOKEN_RE.match(body["access_token"])
    assert match is not None
    assert body["expires_in"] == 2592000 == int(match.group(1))
    assert body["refresh_token"].startswith("25.")
    assert {"scope", "session_key", "session_secret"} <= set(body)


def test_oauth_form_body_and_errors(client: httpx.Client) -> None:
    form = {"grant_type": "client_credentials", "client_id": unique(), "client_secret": "s"}
    assert "access_token" in client.post("/oauth/2.0/token", data=form).json()
    response = client.post("/oauth/2.0/token", params={"grant_type": "client_credentials"})
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client", "error_description": "unknown client id"}
    response = client.post(
        "/oauth/2.0/token", params={"grant_type": "client_credentials", "client_id": "x"}
    )
    assert response.json()["error_description"] == "Client authentication failed"
    response = client.post("/oauth/2.0/token", params={"grant_type": "password"})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert client.put("/oauth/2.0/token").status_code == 405


def test_unknown_paths(client: httpx.Client) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    for path in (
        V1 + "no-such-model",
        V1 + "completions/extra",
        "/rpc/2.0/ai_custom/v1/wenxinworkshop/x",
    ):
        response = client.post(path, params={"access_token": "x"}, json=v1_body())
        assert response.status_code == 200
        assert response.json()["error_code"] == 3
        assert response.json()["error_msg"] == "Unsupported openapi method"


def test_v1_non_stream(client: httpx.Client) -> None:
    token = get_token(client)
    response = client.post(
        V1 + "ernie-speed-128k",
        params={"access_token": token},
        json=v1_body("你好", extra_parameters={"request_source": "x"}, _delay=3),
        headers={"Request_id": "sdk-py-1-abc", "User-Agent": "ERNIE-SDK/0.5", "X-Odd": "1"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-baidu-request-id"] == "sdk-py-1-abc"
    assert response.headers["appid"].isdigit()
    for name in ("limit-requests", "limit-tokens", "remaining-requests", "remaining-tokens"):
        assert response.headers[f"x-ratelimit-{name}"].isdigit()
    assert "x-ratelimit-limit-input-tokens" not in response.headers
    body = response.json()
    assert ID_RE.match(body["id"])
    assert body["object"] == "chat.completion"
    assert body["result"].startswith("【离线模拟】")
    assert "你好" in body["result"]
    assert body["is_truncated"] is False
    assert body["need_clear_history"] is False
    assert body["finish_reason"] == "normal"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "ban_round" not in body


def test_v1_stream_framing(emu: ServerHandle, client: httpx.Client) -> None:
    token = get_token(client)
    full = client.post(V1_CHAT, params={"access_token": token}, json=v1_body("讲个故事"))
    path = f"{V1_CHAT}?access_token={token}"
    raw = raw_request(emu.base_url, "POST", path, v1_body("讲个故事", stream=True))
    assert raw.status == 200
    assert raw.header("content-type") == "text/event-stream"
    assert raw.header("cache-control") == "no-cache"
    body, complete = raw.body()
    assert complete
    assert b"[DONE]" not in body
    assert re.fullmatch(rb"(data: \{[^\n]*\}\n\n)+", body)
    chunks = json_events(body)
    content, end = chunks[:-1], chunks[-1]
    assert len(content) >= 5
    for index, chunk in enumerate(content):
        assert chunk["sentence_id"] == index
        assert chunk["is_end"] is False
        assert chunk["result"]
        assert chunk["finish_reason"] == "normal"
        assert chunk["need_clear_history"] is False
        assert chunk["is_truncated"] is False
        assert chunk["usage"]["completion_tokens"] == 0
        assert chunk["id"] == end["id"]
    assert "".join(c["result"] for c in content) == full.json()["result"]
    assert end["is_end"] is True
    assert end["result"] == ""
    assert end["sentence_id"] == len(content)
    assert end["usage"] == full.json()["usage"]
    # every sentence chunk but the list items ends at a sentence end
    assert sum(c["result"].rstrip("\n")[-1] in "。！？；”" for c in content) >= 3


def test_v1_errors_in_stream_mode_are_plain_json(emu: ServerHandle) -> None:
    raw = raw_request(emu.base_url, "POST", f"{V1_CHAT}?access_token=bad", v1_body(stream=True))
    assert raw.status == 200
    assert raw.header("content-type") == "application/json"
    body, complete = raw.body()
    assert complete
    assert raw.header("content-length") == str(len(body))
    error = json.loads(body)
    assert error["error_code"] == 110
    assert ID_RE.match(error["id"])


def test_v2_non_stream(client: httpx.Client) -> None:
    response = client.post(V2_CHAT, json=v2_body("你好"), headers=bearer())
    assert response.status_code == 200
    for name in (
        "limit-requests",
        "limit-tokens",
        "remaining-requests",
        "remaining-tokens",
        "limit-input-tokens",
        "limit-output-tokens",
        "remaining-input-tokens",
        "remaining-output-tokens",
    ):
        assert response.headers[f"x-ratelimit-{name}"].isdigit()
    body = response.json()
    assert ID_RE.match(body["id"])
    assert body["object"] == "chat.completion"
    assert body["model"] == "ernie-4.0-8k"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("【离线模拟】")
    assert choice["finish_reason"] == "stop"
    assert choice["flag"] == 0
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def _v2_stream(client: httpx.Client, **extra: Any) -> tuple[httpx.Response, list[str]]:
    with client.stream(
        "POST", V2_CHAT, json=v2_body("你好", stream=True, **extra), headers=bearer()
    ) as r:
        return r, events(r.read())


def test_v2_stream_framing(client: httpx.Client) -> None:
    response, data = _v2_stream(client)
    assert response.headers["content-type"] == "text/event-stream"
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) > 10
    for index, chunk in enumerate(chunks):
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "ernie-4.0-8k"
        choice = chunk["choices"][0]
        assert ("role" in choice["delta"]) == (index == 0)
        assert 1 <= len(choice["delta"]["content"]) <= 8
        assert choice["finish_reason"] == ("stop" if index == len(chunks) - 1 else None)
        assert choice["flag"] == 0
        assert "usage" not in chunk
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    full = client.post(V2_CHAT, json=v2_body("你好"), headers=bearer()).json()
    assert text == full["choices"][0]["message"]["content"]


def test_v2_stream_usage_options(client: httpx.Client) -> None:
    _, data = _v2_stream(client, stream_options={"include_usage": True})
    chunks = [json.loads(d) for d in data[:-1]]
    assert all("usage" not in c for c in chunks[:-1])
    usage = chunks[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    _, data = _v2_stream(client, stream_options={"chunk_include_usage": True})
    chunks = [json.loads(d) for d in data[:-1]]
    completions = [c["usage"]["completion_tokens"] for c in chunks]
    assert completions == sorted(completions)
    assert completions[-1] == usage["completion_tokens"]


def test_iam_bearer_then_v2(client: httpx.Client) -> None:
    import time

    from wenxin_stream._bce_auth import bce_timestamp, sign_request

    host = client.base_url.netloc.decode()
    now = time.time()
    headers = {"host": host, "x-bce-date": bce_timestamp(now), "content-type": "application/json"}
    query = [("expireInSeconds", "100")]
    headers["authorization"] = sign_request(
        "AK", "SK", "GET", "/v1/BCE-BEARER/token", query, headers, now=now
    )
    response = client.get("/v1/BCE-BEARER/token", params=query, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert re.fullmatch(r"bce-v3/ALTAK-[A-Za-z0-9]{20}/[0-9a-f]{40}", body["token"])
    assert body["status"] == "enable"
    assert len(body["userId"]) == 32
    assert body["createTime"].endswith("Z")
    ok = client.post(V2_CHAT, json=v2_body(), headers={"Authorization": f"Bearer {body['token']}"})
    assert ok.status_code == 200
    # unsigned or badly parameterised minting
    assert client.get("/v1/BCE-BEARER/token").status_code == 403
    headers["authorization"] = sign_request(
        "AK", "SK", "GET", "/v1/BCE-BEARER/token", [("expireInSeconds", "0")], headers, now=now
    )
    bad = client.get("/v1/BCE-BEARER/token", params={"expireInSeconds": "0"}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["code"] == "InvalidParameter"
    assert client.post("/v1/BCE-BEARER/token", headers=headers).status_code == 405


def test_service_list(client: httpx.Client) -> None:
    import time

    from wenxin_stream._bce_auth import bce_timestamp, sign_request

    now = time.time()
    host = client.base_url.netloc.decode()
    headers = {"host": host, "x-bce-date": bce_timestamp(now), "content-type": "application/json"}
    path = "/wenxinworkshop/service/list"
    headers["authorization"] = sign_request("AK", "SK", "POST", path, [], headers, now=now)
    response = client.post(path, headers=headers, json={})
    assert response.status_code == 200
    common = response.json()["result"]["common"]
    names = {entry["name"]: entry["url"] for entry in common}
    assert names["ERNIE-4.0-8K"].endswith(V1 + "completions_pro")
    assert response.json()["result"]["custom"] == []
    assert client.post(path, json={}).json()["code"] == "AccessDenied"


# -- bad input -----------------------------------------------------------------------------


def _v1_error(client: httpx.Client, **kwargs: Any) -> dict[str, Any]:
    token = get_token(client)
    response = client.request(
        kwargs.pop("method", "POST"), V1_CHAT, params={"access_token": token}, **kwargs
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert ID_RE.match(body["id"])
    return body


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"content": b"{not json"}, 336002, "Invalid JSON"),
        ({"content": b"\xff\xfe"}, 336002, "Invalid JSON"),
        ({"json": [1, 2]}, 336001, "Invalid Argument"),
        ({"method": "GET"}, 336101, "invalid HTTP method"),
        ({"json": {"messages": []}}, 336006, "must not be empty"),
        (
            {
                "json": {
                    "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
                }
            },
            336006,
            "odd index",
        ),
        ({"json": v1_body(temperature=0)}, 336003, "temperature"),
        ({"json": v1_body(stream="yes")}, 336003, "stream must be a boolean"),
        ({"json": v1_body(stop="x")}, 336003, "stop"),
        ({"json": v1_body("a [[wenxin:fault nope=1]]")}, 336001, "unknown fault key 'nope'"),
    ],
)
def test_v1_bad_input(
    client: httpx.Client, kwargs: dict[str, Any], code: int, message: str
) -> None:
    body = _v1_error(client, **kwargs)
    assert body["error_code"] == code
    assert message in body["error_msg"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "message"),
    [
        ({"content": b"{not json"}, 400, "malformed_json", "Invalid Argument"),
        ({"json": "text"}, 400, "malformed_json", "Invalid Argument"),
        ({"method": "GET"}, 405, "method_not_supported", "POST"),
        ({"json": {"messages": [{"role": "user", "content": "a"}]}}, 400, "invalid_model", "empty"),
        ({"json": v2_body(messages=[])}, 400, "invalid_messages", "empty"),
        (
            {"json": v2_body(messages=[{"role": "x", "content": "a"}])},
            400,
            "invalid_messages",
            "role",
        ),
        ({"json": v2_body(stream=1)}, 400, "invalid_argument", "stream"),
        ({"json": v2_body(stream_options=[])}, 400, "invalid_argument", "stream_options"),
        ({"json": v2_body(max_tokens=0)}, 400, "invalid_argument", "max_tokens"),
        ({"json": v2_body(stop="x")}, 400, "invalid_argument", "stop"),
        ({"json": v2_body("[[wenxin:fault chunks=x]]")}, 400, "invalid_argument", "chunks"),
    ],
)
def test_v2_bad_input(
    client: httpx.Client, kwargs: dict[str, Any], status: int, code: str, message: str
) -> None:
    method = kwargs.pop("method", "POST")
    response = client.request(method, V2_CHAT, headers=bearer(), **kwargs)
    assert response.status_code == status
    body = response.json()
    assert body["error"]["code"] == code
    assert message in body["error"]["message"]
    assert body["error"]["type"]
    assert ID_RE.match(body["id"])


def test_v2_auth_errors(client: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}):
        response = client.post(V2_CHAT, json=v2_body(), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_iam_token"
        assert response.json()["error"]["message"] == "IAM Certification failed"


def test_v1_missing_credentials(client: httpx.Client) -> None:
    response = client.post(V1_CHAT, json=v1_body())
    assert response.json()["error_code"] == 110


def test_body_limits() -> None:
    with emulator(max_body_bytes=1000) as server, httpx.Client(base_url=server.base_url) as c:
        token = get_token(c)
        big = v1_body("很" * 2000)
        response = c.post(V1_CHAT, params={"access_token": token}, json=big)
        assert response.status_code == 200
        assert response.json()["error_code"] == 336003
        assert response.json()["error_msg"] == "request body too large"
        assert response.headers["connection"] == "close"
        response = c.post(V2_CHAT, json=v2_body("很" * 2000), headers=bearer())
        assert response.status_code == 413
        assert response.json()["error"]["message"] == "request body too large"
        # A declared length over the limit is refused before any body is sent.
        raw = raw_request(
            server.base_url,
            "POST",
            f"{V1_CHAT}?access_token={token}",
            headers={"Content-Length": str(50 * 1024 * 1024), "Content-Type": "application/json"},
            timeout=5,
        )
        assert json.loads(raw.body()[0])["error_code"] == 336003
        # Chunked upload without a declared length is cut off once past the limit.
        chunks = (b"x" * 600 for _ in range(10))
        response = c.post(V2_CHAT, content=chunks, headers=bearer())
        assert response.status_code == 413


def test_protocol_options(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            [
                {"match": "天气", "answer": "今天晴。明天多云。"},
                {"match": "re:^故障\\d$", "fault": "error=336100"},
            ],
            ensure_ascii=False,
        )
    )
    config = EmulatorConfig(
        ttft=0,
        interval=0,
        v2_interval=0,
        sse_charset=True,
        custom_endpoints={"my-ep": "My-Model"},
        v2_models=frozenset({"ernie-4.0-8k"}),
        v2_finish_reason="normal",
        v1_messages_error_code=336003,
        oauth_error_status=200,
        scenarios=load_scenarios(scenario),
    )
    with emulator(config) as server, httpx.Client(base_url=server.base_url) as c:
        token = get_token(c)
        with c.stream(
            "POST", V1 + "my-ep", params={"access_token": token}, json=v1_body(stream=True)
        ) as r:
            assert r.headers["content-type"] == "text/event-stream;charset=utf-8"
            assert json_events(r.read())[-1]["is_end"] is True
        bad = c.post(V1_CHAT, params={"access_token": token}, json={"messages": []})
        assert bad.json()["error_code"] == 336003
        assert (
            c.post("/oauth/2.0/token", params={"grant_type": "client_credentials"}).status_code
            == 200
        )
        other = c.post(V2_CHAT, json=v2_body() | {"model": "gpt-4"}, headers=bearer())
        assert other.status_code == 401
        assert other.json()["error"]["code"] == "invalid_model"
        response = c.post(V2_CHAT, json=v2_body(), headers=bearer())
        assert response.json()["choices"][0]["finish_reason"] == "normal"
        weather = c.post(V1_CHAT, params={"access_token": token}, json=v1_body("天气如何"))
        assert weather.json()["result"] == "今天晴。明天多云。"
        with c.stream(
            "POST", V1_CHAT, params={"access_token": token}, json=v1_body("天气", stream=True)
        ) as r:
            assert [e["result"] for e in json_events(r.read())] == ["今天晴。", "明天多云。", ""]
        scripted = c.post(V1_CHAT, params={"access_token": token}, json=v1_body("故障1"))
        assert scripted.json()["error_code"] == 336100
        listing = c.post("/wenxinworkshop/service/list")
        assert listing.status_code == 403


def test_determinism_across_servers() -> None:
    def content(seed: int) -> tuple[str, list[str]]:
        with emulator(seed=seed) as server, httpx.Client(base_url=server.base_url) as c:
            token = get_token(c)
            with c.stream(
                "POST",
                V1_CHAT,
                params={"access_token": token},
                json=v1_body("同一个问题", stream=True),
            ) as r:
                v1 = [e["result"] for e in json_events(r.read())]
            with c.stream(
                "POST", V2_CHAT, json=v2_body("同一个问题", stream=True), headers=bearer()
            ) as r:
                v2 = [e["choices"][0]["delta"]["content"] for e in json_events(r.read())]
            return "".join(v1) + "|" + "".join(v2), v1 + v2

    first = content(7)
    assert content(7) == first
    assert content(8) != first


def test_stop_words_and_max_tokens(client: httpx.Client) -> None:
    token = get_token(client)
    response = client.post(V1_CHAT, params={"access_token": token}, json=v1_body(stop=["模拟器"]))
    body = response.json()
    assert body["result"] == "【离线模拟】这是 wenxin-stream 本地"
    assert body["finish_reason"] == "stop"
    response = client.post(
        V1_CHAT, params={"access_token": token}, json=v1_body(max_output_tokens=10)
    )
    body = response.json()
    assert body["finish_reason"] == "length"
    assert body["is_truncated"] is True
    assert body["usage"]["completion_tokens"] <= 10
    response = client.post(V2_CHAT, json=v2_body(max_tokens=5), headers=bearer())
    assert response.json()["choices"][0]["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] <= 5
