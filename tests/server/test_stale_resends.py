"""``wenxin_upstream_stale_resends_total{channel}``: the upstream requests the server's client
sent once more on a new connection after a kept-alive connection the upstream had closed
failed them (issue 9; the soak's run 6 could not count them), in one process and through the
multiprocess files ``--workers`` share."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import Running, running

from stale_upstream import Upstream, one_per_connection
from wenxin_stream import encode_event

MODEL = "ernie-4.5-21b-a3b"


def _v2_body(*pieces: str) -> bytes:
    chunks = [
        {"id": "as-stale", "choices": [{"index": 0, "delta": {"role": "assistant", "content": p}}]}
        for p in pieces
    ]
    chunks.append(
        {
            "id": "as-stale",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
    )
    events = [encode_event(json.dumps(c, ensure_ascii=False)) for c in chunks]
    return b"".join(events) + encode_event("[DONE]")


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(one_per_connection, _v2_body("长城", "很长。"))
    yield server
    server.close()


def _stale_resends(srv: Running) -> float:
    with srv.client() as c:
        text = c.get("/metrics").text
    found = re.search(
        r'^wenxin_upstream_stale_resends_total\{channel="default"\} (\S+)$', text, re.MULTILINE
    )
    assert found, text
    return float(found.group(1))


def _dropped(server: Upstream) -> int:
    """Requests the upstream read on a reused connection and dropped."""
    return sum(1 for c, r, _ in server.requests if server.plan(c, r) != "answer")


@pytest.mark.parametrize("multiprocess", [False, True], ids=["one_process", "files"])
def test_requests_sent_again_on_a_new_connection_are_counted(
    tmp_path: Path, upstream: Upstream, multiprocess: bool
) -> None:
    overrides = {"metrics_dir": tmp_path / "metrics"} if multiprocess else {}
    with running(tmp_path / "data", upstream.url, **overrides) as srv:
        assert _stale_resends(srv) == 0  # there from the start, at zero
        for question in ("一", "二", "三"):
            with srv.client() as c:
                answer = c.post(
                    "/v1/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": question}]},
                )
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"] == "长城很长。"
        # every later request met a kept-alive connection the upstream dropped: each was sent
        # again at once, and the metric says how many, as the client counted them
        dropped = _dropped(upstream)
        assert dropped >= 1
        client = srv.app.upstream.channels.by_name["default"].client
        assert _stale_resends(srv) == dropped == client.stale_resends
