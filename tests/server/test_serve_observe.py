"""What the server tells operators: metrics, the audit log, /api/info, /openapi.json, the page."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from server_helpers import Running, new_conversation, paced

from wenxin_stream.server._static import StaticFiles
from wenxin_stream.server._store import SyncKeyAdmin


def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name + (f"{{{want}}}" if want else "")) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no {name} {labels} in metrics"
    return float(match.group(1))


def test_metrics_after_a_few_requests(make_server: Callable[..., Running]) -> None:
    srv = make_server()
    with srv.client() as c:
        cid = new_conversation(c)
        for _ in range(2):
            c.post(f"/api/conversations/{cid}/messages", json={"content": paced("量", "chunks=8")})
        c.post(f"/api/conversations/{cid}/messages", json={"content": paced("坏", "error=336003")})
        c.get("/api/conversations/c_nope")
        r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert (
        _sample(
            text,
            "wenxin_http_requests_total",
            route="/api/conversations/{id}/messages",
            status="200",
        )
        == 3
    )
    assert (
        _sample(text, "wenxin_http_requests_total", route="/api/conversations/{id}", status="404")
        == 1
    )
    assert _sample(text, "wenxin_stream_ends_total", reason="completed") == 2
    assert _sample(text, "wenxin_stream_ends_total", reason="upstream_error") == 1
    assert _sample(text, "wenxin_errors_total", kind="upstream") == 1
    assert _sample(text, "wenxin_errors_total", kind="client") == 1
    assert _sample(text, "wenxin_streams_in_flight") == 0
    for part in ("upstream", "server", "total"):
        assert _sample(text, "wenxin_ttft_seconds_count", part=part) == 2
    assert _sample(text, "wenxin_ttft_seconds_bucket", part="server", le="+Inf") == 2
    assert _sample(text, "wenxin_chunk_gap_seconds_count") >= 14  # 8 chunks, 7 gaps, twice
    assert _sample(text, "wenxin_stream_duration_seconds_count", part="total") == 3
    assert _sample(text, "wenxin_tokens_total", type="completion") > 0
    generated = _sample(text, "wenxin_generated_chars_total")
    assert generated > 0
    assert _sample(text, "wenxin_delivered_chars_total") == generated


def test_audit_lines(make_server: Callable[..., Running]) -> None:
    srv = make_server(audit_questions=True)
    with SyncKeyAdmin(srv.db) as admin:
        record, secret = admin.create_key("auditor", rpm=None, tpm=None, max_streams=None)
    srv.app.keys.invalidate()
    with srv.client(headers={"Authorization": f"Bearer {secret}"}) as c:
        cid = new_conversation(c)
        c.post(f"/api/conversations/{cid}/messages", json={"content": "审计的问题"})
        c.post(
            "/v1/chat/completions",
            json={"model": "ernie-lite-8k", "messages": [{"role": "user", "content": "另一个"}]},
        )
        c.get("/api/conversations/c_nope")
        c.get("/healthz")  # not audited
    srv.app.audit.flush()
    raw = srv.app.config.audit_path.read_text()
    assert secret not in raw
    assert "ALTAK" not in raw
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["route"] for line in lines] == [
        "/api/conversations",
        "/api/conversations/{id}/messages",
        "/v1/chat/completions",
        "/api/conversations/{id}",
    ]
    create, ask, chat, missing = lines
    assert all(
        line["key_id"] == record.id and line["client"].startswith("127.0.0.1:") for line in lines
    )
    assert create["status"] == 201
    assert create["conversation_id"] == cid
    assert ask["status"] == 200
    assert ask["end_reason"] == "completed"
    assert ask["conversation_id"] == cid
    assert ask["stream_id"].startswith("s_")
    assert ask["model"] == "ernie-lite-8k"
    assert ask["usage"]["total_tokens"] > 0
    assert ask["ttft_ms"] >= 0
    assert ask["total_ms"] >= ask["ttft_ms"]
    assert ask["question"] == "审计的问题"
    assert chat["question"] == "另一个"
    assert chat["end_reason"] == "completed"
    assert missing["status"] == 404
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", line["ts"]) for line in lines)


def test_questions_are_not_audited_by_default(shared: Running) -> None:
    with shared.client() as c:
        c.post(f"/api/conversations/{new_conversation(c)}/messages", json={"content": "秘密问题"})
    shared.app.audit.flush()
    assert "秘密问题" not in shared.app.config.audit_path.read_text()


def test_info_and_openapi(shared: Running) -> None:
    with shared.client() as c:
        info = c.get("/api/info").json()
        doc = c.get("/openapi.json").json()
    assert info["upstream"] == "emulator"
    assert info["api"] == "v2"
    assert info["default_model"] == "ernie-lite-8k"
    assert "ernie-4.0-8k" in info["models"]
    assert info["auth_required"] is False
    assert info["version"]
    assert doc["openapi"] == "3.1.0"
    for path in (
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/api/info",
        "/api/conversations",
        "/api/conversations/{id}",
        "/api/conversations/{id}/messages",
        "/api/streams/{id}",
        "/api/streams/{id}/cancel",
        "/api/ws",
        "/v1/chat/completions",
        "/v1/models",
    ):
        assert path in doc["paths"]
    refs = re.findall(r'"#/components/(\w+)/(\w+)"', json.dumps(doc))
    assert all(name in doc["components"][kind] for kind, name in refs)


def test_the_page_and_its_assets(shared: Running, tmp_path: Path) -> None:
    with shared.client() as c:
        page = c.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["etag"]
        assert page.headers["x-content-type-options"] == "nosniff"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp
        assert "style-src 'self';" in csp
        assert "unsafe" not in csp
        assert "frame-ancestors 'none'" in csp
        vendored = c.get("/static/vendor/markdown-it.min.mjs")
        assert vendored.status_code == 200
        assert vendored.headers["content-type"] == "text/javascript; charset=utf-8"
        assert b"markdown-it 15.0.3" in vendored.content
        assert c.get("/static/vendor/VERSIONS.tsv").status_code == 200
        again = c.get("/", headers={"If-None-Match": page.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
        script = c.get("/static/app.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert c.get("/static/style.css").headers["content-type"].startswith("text/css")
        assert c.head("/static/app.js").status_code == 200
        for bad in (
            "/static/..%2F_app.py",
            "/static/.hidden",
            "/static/nope.js",
            "/static/vendor/..%2F..%2F_app.py",
            "/static/vendor/nope.js",
        ):
            assert c.get(bad).status_code == 404
    empty = StaticFiles(tmp_path)
    assert empty.load("index.html") is None
    assert empty.load("../x") is None
    (tmp_path / "a.bin").write_bytes(b"\x00")
    loaded = empty.load("a.bin")
    assert loaded is not None
    assert empty.load("a.bin") is loaded
