"""Credentials: token issue and expiry, strict mode, signatures, API keys, minted bearers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from emu_helpers import V1_CHAT, V2_CHAT, bearer, get_token, v1_body, v2_body

from servers import emulator
from wenxin_stream._bce_auth import bce_timestamp, sign_request
from wenxin_stream.emulator import Credentials, EmulatorConfig


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


STRICT = Credentials(
    apps={"app-key": "app-secret"},
    api_keys=frozenset({"bce-v3/ALTAK-good/key"}),
    iam={"AKgood": "SKgood"},
    appids=frozenset({"app-1"}),
)


@pytest.fixture
def strict(clock: FakeClock) -> Iterator[httpx.Client]:
    config = EmulatorConfig(ttft=0, interval=0, v2_interval=0, credentials=STRICT, clock=clock)
    with emulator(config) as server, httpx.Client(base_url=server.base_url) as c:
        yield c


def _signed(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    ak: str = "AKgood",
    sk: str = "SKgood",
    now: float,
    query: list[tuple[str, str]] | None = None,
    names: tuple[str, ...] = ("x-bce-date", "content-type", "host"),
) -> dict[str, str]:
    headers = {
        "host": client.base_url.netloc.decode(),
        "content-type": "application/json",
        "x-bce-date": bce_timestamp(now),
    }
    headers["authorization"] = sign_request(
        ak, sk, method, path, query or [], headers, now=now, expiration=300, signed_headers=names
    )
    return headers


def test_token_expiry_110_vs_111(clock: FakeClock) -> None:
    config = EmulatorConfig(ttft=0, interval=0, v2_interval=0, token_ttl=2, clock=clock)
    with emulator(config) as server, httpx.Client(base_url=server.base_url) as c:
        params = {"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"}
        issued = c.post("/oauth/2.0/token", params=params).json()
        assert issued["expires_in"] == 2
        token = issued["access_token"]
        assert token.split(".")[2] == "2"
        ok = c.post(V1_CHAT, params={"access_token": token}, json=v1_body())
        assert "result" in ok.json()
        clock.now += 2.5
        expired = c.post(V1_CHAT, params={"access_token": token}, json=v1_body(stream=True))
        assert expired.json()["error_code"] == 111
        assert expired.json()["error_msg"] == "Access token expired"
        forged = token.replace(token[3:8], "00000")
        unknown = c.post(V1_CHAT, params={"access_token": forged}, json=v1_body())
        assert unknown.json()["error_code"] == 110
        # a fresh token works again
        fresh = c.post("/oauth/2.0/token", params=params).json()["access_token"]
        assert "result" in c.post(V1_CHAT, params={"access_token": fresh}, json=v1_body()).json()


def test_strict_oauth(strict: httpx.Client) -> None:
    base = {"grant_type": "client_credentials"}
    good = strict.post(
        "/oauth/2.0/token", params=base | {"client_id": "app-key", "client_secret": "app-secret"}
    )
    assert good.status_code == 200
    unknown = strict.get(
        "/oauth/2.0/token", params=base | {"client_id": "other", "client_secret": "x"}
    )
    assert unknown.status_code == 401
    assert unknown.json() == {"error": "invalid_client", "error_description": "unknown client id"}
    wrong = strict.post(
        "/oauth/2.0/token", params=base | {"client_id": "app-key", "client_secret": "x"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error_description"] == "Client authentication failed"
    token = good.json()["access_token"]
    assert "result" in strict.post(V1_CHAT, params={"access_token": token}, json=v1_body()).json()


def test_strict_v2_keys_and_appid(strict: httpx.Client) -> None:
    good = {"Authorization": "Bearer bce-v3/ALTAK-good/key"}
    assert strict.post(V2_CHAT, json=v2_body(), headers=good).status_code == 200
    assert (
        strict.post(V2_CHAT, json=v2_body(), headers=good | {"appid": "app-1"}).status_code == 200
    )
    bad_app = strict.post(V2_CHAT, json=v2_body(), headers=good | {"appid": "app-2"})
    assert bad_app.status_code == 401
    assert bad_app.json()["error"]["code"] == "invalid_appid"
    other = strict.post(V2_CHAT, json=v2_body(), headers=bearer())
    assert other.status_code == 401
    assert other.json()["error"]["code"] == "invalid_iam_token"


def test_strict_signatures_on_v1(strict: httpx.Client, clock: FakeClock) -> None:
    now = clock()
    # qianfan signs its headers in set order; any order verifies.
    headers = _signed(
        strict, "POST", V1_CHAT, now=now, names=("x-bce-date", "content-type", "host")
    )
    ok = strict.post(V1_CHAT, json=v1_body(), headers=headers)
    assert "result" in ok.json(), ok.text
    # tampered: signed for another path
    headers = _signed(strict, "POST", "/other", now=now)
    assert strict.post(V1_CHAT, json=v1_body(), headers=headers).json()["error_code"] == 14
    # tampered: signature bytes changed
    headers = _signed(strict, "POST", V1_CHAT, now=now)
    headers["authorization"] = headers["authorization"][:-4] + "0000"
    assert strict.post(V1_CHAT, json=v1_body(), headers=headers).json()["error_code"] == 14
    # wrong secret, unknown access key
    headers = _signed(strict, "POST", V1_CHAT, now=now, sk="nope")
    assert strict.post(V1_CHAT, json=v1_body(), headers=headers).json()["error_code"] == 14
    headers = _signed(strict, "POST", V1_CHAT, now=now, ak="AKother")
    assert strict.post(V1_CHAT, json=v1_body(), headers=headers).json()["error_code"] == 14
    # expired: signed 301 s ago with a 300 s expiration
    headers = _signed(strict, "POST", V1_CHAT, now=now - 301)
    response = strict.post(V1_CHAT, json=v1_body(), headers=headers)
    assert response.json()["error_code"] == 14
    assert response.json()["error_msg"] == "IAM Certification failed"


def test_strict_iam_console(strict: httpx.Client, clock: FakeClock) -> None:
    path = "/v1/BCE-BEARER/token"
    query = [("expireInSeconds", "60")]
    headers = _signed(strict, "GET", path, now=clock(), query=query)
    minted = strict.get(path, params=query, headers=headers)
    assert minted.status_code == 200
    token = minted.json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert strict.post(V2_CHAT, json=v2_body(), headers=auth).status_code == 200
    clock.now += 61
    expired = strict.post(V2_CHAT, json=v2_body(), headers=auth)
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "invalid_iam_token"
    headers = _signed(strict, "GET", path, now=clock(), query=query, ak="AKother")
    assert strict.get(path, params=query, headers=headers).json()["code"] == "InvalidAccessKeyId"
    headers = _signed(strict, "GET", path, now=clock(), query=query, sk="bad")
    bad = strict.get(path, params=query, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["code"] == "SignatureDoesNotMatch"


def test_dev_mode_signatures(client: httpx.Client) -> None:
    now = time.time()
    headers = _signed(client, "POST", V1_CHAT, now=now, ak="anyAK", sk="anySK")
    assert "result" in client.post(V1_CHAT, json=v1_body(), headers=headers).json()
    # v2 also accepts a signature directly
    assert client.post(V2_CHAT, json=v2_body(), headers=headers).status_code == 200
    headers = _signed(client, "POST", V1_CHAT, now=now - 1000, ak="anyAK", sk="anySK")
    assert client.post(V1_CHAT, json=v1_body(), headers=headers).json()["error_code"] == 14
    assert client.post(V2_CHAT, json=v2_body(), headers=headers).status_code == 401
    headers["authorization"] = "bce-auth-v1/malformed"
    assert client.post(V1_CHAT, json=v1_body(), headers=headers).json()["error_code"] == 14
    headers["authorization"] = "bce-auth-v1/AK/not-a-time/300//abc"
    assert client.post(V1_CHAT, json=v1_body(), headers=headers).json()["error_code"] == 14


def test_dev_mode_only_issued_tokens(client: httpx.Client) -> None:
    token = get_token(client)
    assert "result" in client.post(V1_CHAT, params={"access_token": token}, json=v1_body()).json()
    never = "24.0123456789abcdef0123456789abcdef.2592000.1999999999.1-1"
    assert (
        client.post(V1_CHAT, params={"access_token": never}, json=v1_body()).json()["error_code"]
        == 110
    )


def test_no_auth_mode() -> None:
    with emulator(no_auth=True) as server, httpx.Client(base_url=server.base_url) as c:
        assert "result" in c.post(V1_CHAT, json=v1_body()).json()
        # erniebot's custom backend sends "Authorization: token …": not a credential, accepted
        assert (
            "result" in c.post(V1_CHAT, json=v1_body(), headers={"Authorization": "token x"}).json()
        )
        assert c.post(V2_CHAT, json=v2_body()).status_code == 200
        # a credential that is given is still checked
        assert (
            c.post(V1_CHAT, params={"access_token": "x"}, json=v1_body()).json()["error_code"]
            == 110
        )
