"""bench/floor_relay.py, the floor of issue 15: what it relays, end to end on loopback.

The relay runs under real uvicorn in front of a real emulator (``servers``), since a streaming
relay has to be seen over a socket: the frames that arrive, a client that goes away, an
upstream that cuts the stream.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from servers import serving
from wenxin_stream.emulator import ServerHandle

FLOOR = Path(__file__).resolve().parents[2] / "bench" / "floor_relay.py"
KEY = "bce-v3/ALTAK-floor/test"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_floor_relay", FLOOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_floor_relay"] = module
    spec.loader.exec_module(module)
    return module


floor = _load()


@contextmanager
def relay(upstream: str, mode: str = "bytes") -> Iterator[ServerHandle]:
    with serving(floor.FloorRelay(upstream, mode=mode)) as handle:
        yield handle


def test_a_mode_it_does_not_have_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        floor.FloorRelay("http://127.0.0.1:1", mode="pars")


def _body(directive: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "ernie-4.0-8k",
        "stream": True,
        "messages": [{"role": "user", "content": f"你好 [[wenxin:fault {directive}]]"}],
        **extra,
    }


def _frames(base_url: str, path: str, body: dict[str, Any]) -> list[str]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=10) as client:
        response = client.post(base_url + path, json=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("\n\n")
    return response.text.split("\n\n")[:-1]


def _without_ids(frames: list[str]) -> list[str]:
    # two requests differ in their response id and (maybe) their creation second only
    return [re.sub(r'"(id|created)":("[^"]*"|\d+)', r'"\1":_', f) for f in frames]


def test_the_bare_pipe_passes_the_upstream_frames_unchanged(emu: ServerHandle) -> None:
    body = _body("chunks=4", stream_options={"include_usage": True})
    direct = _frames(emu.base_url, "/v2/chat/completions", body)
    with relay(emu.base_url) as floor_relay:
        relayed = _frames(floor_relay.base_url, "/v1/chat/completions", body)
    assert _without_ids(relayed) == _without_ids(direct)
    assert relayed[-1] == "data: [DONE]"
    assert len(relayed) >= 5  # 4 content chunks (and a usage one), then [DONE]


def test_parse_reencodes_each_event_as_an_openai_chunk(emu: ServerHandle) -> None:
    body = _body("chunks=4", stream_options={"include_usage": True})
    direct = _frames(emu.base_url, "/v2/chat/completions", body)
    with relay(emu.base_url, "parse") as floor_relay:
        relayed = _frames(floor_relay.base_url, "/v1/chat/completions", body)
    assert len(relayed) == len(direct)
    assert relayed[-1] == "data: [DONE]"
    for ours, theirs in zip(relayed[:-1], direct[:-1], strict=True):
        chunk, upstream = json.loads(ours.removeprefix("data: ")), json.loads(theirs[6:])
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == upstream["model"]
        assert chunk.get("usage") == upstream.get("usage")
        assert [c["delta"] for c in chunk["choices"]] == [c["delta"] for c in upstream["choices"]]
        assert [c["finish_reason"] for c in chunk["choices"]] == [
            c.get("finish_reason") for c in upstream["choices"]
        ]
        assert all("flag" not in c for c in chunk["choices"])  # rebuilt, not passed on
    assert any(json.loads(f[6:]).get("usage") for f in relayed[:-1])


def test_sdk_streams_the_answer_through_the_sdk_as_openai_chunks(emu: ServerHandle) -> None:
    body = _body("chunks=4", stream_options={"include_usage": True})
    direct = _frames(emu.base_url, "/v2/chat/completions", body)
    with relay(emu.base_url, "sdk") as floor_relay:
        relayed = _frames(floor_relay.base_url, "/v1/chat/completions", body)
    assert relayed[-1] == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in relayed[:-1]]
    upstream = [json.loads(f[6:]) for f in direct[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"ernie-4.0-8k"}
    assert len({c["id"] for c in chunks}) == 1

    def text(frames: list[dict[str, Any]]) -> str:
        return "".join(c["delta"].get("content") or "" for f in frames for c in f["choices"])

    assert text(chunks) == text(upstream) != ""
    texts = [c for c in chunks if c["choices"] and c["choices"][0]["delta"]]
    assert len(texts) == 4  # one frame per text event: the upstream's four chunks
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    usage = next(f["usage"] for f in upstream if f.get("usage"))
    assert chunks[-1] == {**chunks[-1], "choices": [], "usage": usage}


@pytest.mark.parametrize("mode", ["bytes", "parse"])
def test_an_upstream_error_is_passed_on_with_its_status(emu: ServerHandle, mode: str) -> None:
    with relay(emu.base_url, mode) as floor_relay, httpx.Client(timeout=10) as client:
        response = client.post(
            floor_relay.base_url + "/v1/chat/completions",
            json={"stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_model"


def test_sdk_answers_an_upstream_error_before_any_text_with_its_status(emu: ServerHandle) -> None:
    body = _body("", model="no-such-model")
    with relay(emu.base_url, "sdk") as floor_relay, httpx.Client(timeout=10) as client:
        url = floor_relay.base_url + "/v1/chat/completions"
        headers = {"Authorization": f"Bearer {KEY}"}
        direct = client.post(emu.base_url + "/v2/chat/completions", json=body, headers=headers)
        refused = client.post(url, json=body, headers=headers)
        broken = client.post(url, content=b"{not json", headers=headers)
    assert direct.status_code >= 400  # (ERNIE's v2 answers an unknown model with 401)
    assert refused.status_code == direct.status_code
    assert "invalid_model" in refused.text
    assert broken.status_code == 400
    assert broken.text.startswith("bad request: ")


@pytest.mark.parametrize("mode", ["bytes", "sdk"])
def test_an_unreachable_upstream_is_502_and_other_paths_404(mode: str) -> None:
    unreachable = relay("http://127.0.0.1:1", mode)
    with unreachable as floor_relay, httpx.Client(timeout=30) as client:
        response = client.post(
            floor_relay.base_url + "/v1/chat/completions",
            json=_body(""),
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert response.status_code == 502
        assert client.get(floor_relay.base_url + "/v1/models").status_code == 404
        assert client.get(floor_relay.base_url + "/healthz").text == "ok\n"


@pytest.mark.parametrize("mode", floor.MODES)
def test_a_cut_upstream_stream_never_looks_finished(emu: ServerHandle, mode: str) -> None:
    with relay(emu.base_url, mode) as floor_relay, httpx.Client(timeout=10) as client:
        url = floor_relay.base_url + "/v1/chat/completions"
        body = _body("chunks=6;cut_after=2")
        with pytest.raises(httpx.RemoteProtocolError):  # no final chunk of the chunked body
            client.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"})


@pytest.mark.parametrize("mode", floor.MODES)
def test_a_client_that_goes_away_ends_its_upstream_stream(emu: ServerHandle, mode: str) -> None:
    with relay(emu.base_url, mode) as floor_relay, httpx.Client(timeout=10) as client:
        url = floor_relay.base_url
        body = _body("ttft=0;interval=0.1;chunks=600")  # a minute long
        headers = {"Authorization": f"Bearer {KEY}"}
        with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
            assert next(r.iter_raw()).startswith(b"data: ")
            assert _metrics(client, url) == (1, 0)
        deadline = time.monotonic() + 5
        while _metrics(client, url) != (0, 1):
            assert time.monotonic() < deadline, "the stream was still relayed 5 s after"
            time.sleep(0.02)


def _metrics(client: httpx.Client, url: str) -> tuple[int, int]:
    """(streams in flight, streams ended) from the relay's ``/metrics``."""
    text = client.get(url + "/metrics").text
    flying = re.search(r"^wenxin_streams_in_flight (\d+)$", text, re.M)
    ended = re.search(r'^wenxin_stream_ends_total\{route="floor"\} (\d+)$', text, re.M)
    assert flying is not None
    assert ended is not None
    return int(flying.group(1)), int(ended.group(1))
