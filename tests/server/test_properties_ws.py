"""Properties of the WebSocket's frame reader (``server/_ws.py``), through a real server:
whatever text a client sends, every frame it gets back is a JSON object of a known type, a
refusal is an ``error`` frame with a 4xx status, and the socket keeps serving (a sentinel
frame after each example is answered, and a real question is answered at the end)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from server_helpers import Running, running
from websockets.sync.client import ClientConnection, connect

from fuzz_settings import fuzz
from wenxin_stream.emulator import ServerHandle

SENTINEL = json.dumps({"type": "zz-sentinel"})
KNOWN = {"start", "delta", "end", "error"}
VALUES = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["\ud800", "", " ", "r1", "ernie-lite-8k", "no-such-model"])
)  # fmt: skip
FRAMES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),  # a text frame is UTF-8
    st.recursive(
        VALUES,
        lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=4), i, max_size=3),
        max_leaves=6,
    ).map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ask", "cancel", "Ask", "", "auth?"]) | VALUES},
        optional={"id": VALUES, "content": VALUES, "model": VALUES, "conversation_id": VALUES},
    ).map(json.dumps),  # ASCII: a lone surrogate travels as its \u escape
)  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, emu: ServerHandle) -> Iterator[Running]:
    with running(tmp_path_factory.mktemp("ws-fuzz"), emu.base_url) as srv:
        yield srv


@pytest.fixture(scope="module")
def socket(served: Running) -> Iterator[list[ClientConnection]]:
    with connect(served.url.replace("http://", "ws://") + "/api/ws", open_timeout=10) as ws:
        yield [ws]


def _until_sentinel(ws: ClientConnection) -> list[dict[str, Any]]:
    ws.send(SENTINEL)
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=10))
        assert isinstance(frame, dict)
        assert frame.get("type") in KNOWN, frame
        if frame["type"] == "error" and "zz-sentinel" in frame.get("message", ""):
            return frames
        frames.append(frame)


@fuzz
@given(FRAMES)
def test_any_frame_is_answered_in_kind_and_the_socket_stays(
    socket: list[ClientConnection], text: str
) -> None:
    ws = socket[0]
    ws.send(text)
    for frame in _until_sentinel(ws):
        if frame["type"] == "error":
            assert 400 <= frame["status"] < 500, frame
            assert frame["code"]
            json.dumps(frame, ensure_ascii=False).encode()  # nothing unencodable echoed


def test_the_socket_still_answers_a_question(socket: list[ClientConnection]) -> None:
    ws = socket[0]
    ws.send(json.dumps({"type": "ask", "id": "last", "content": "你好"}))
    frames = []
    while not frames or frames[-1]["type"] != "end":
        frame = json.loads(ws.recv(timeout=10))
        if frame.get("id") == "last":
            frames.append(frame)
    assert frames[-1]["end_reason"] == "completed"
