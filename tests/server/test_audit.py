"""The audit log: JSON lines, questions only when asked, secrets masked, never blocking."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from wenxin_stream.server import _audit
from wenxin_stream.server._audit import AuditLog, redact_value
from wenxin_stream.server._keys import generate_key


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "audit.jsonl"


@pytest.fixture
def audit(log_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(log_path, include_questions=False)
    yield log
    log.close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_lines_are_json_with_a_utc_timestamp(audit: AuditLog, log_path: Path) -> None:
    assert audit.record(key_id="k_1", route="/api/conversations/{id}/messages", status=200,
                        usage={"total_tokens": 9}, ttft_ms=12.5, question="秘密的问题")  # fmt: skip
    audit.record(key_id="local", route="/v1/chat/completions", status=429, ts="forged")
    audit.close()
    first, second = lines(log_path)
    assert next(iter(first)) == "ts"
    assert first["ts"].endswith("Z")
    assert datetime.fromisoformat(first["ts"].replace("Z", "+00:00")).utcoffset() is not None
    assert first["key_id"] == "k_1"
    assert first["usage"] == {"total_tokens": 9}
    assert first["ttft_ms"] == 12.5
    assert "question" not in first  # not configured
    assert second["status"] == 429
    assert second["ts"] != "forged"
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert audit.written == 2
    assert audit.dropped == 0


def test_questions_only_when_configured(log_path: Path) -> None:
    log = AuditLog(log_path, include_questions=True)
    log.record(key_id="k", question="什么是流式输出？")
    log.close()
    assert lines(log_path)[0]["question"] == "什么是流式输出？"
    assert "什么是流式输出" in log_path.read_text("utf-8")  # kept as UTF-8, not \\u escapes


def test_secrets_are_masked(log_path: Path) -> None:
    key = generate_key()
    log = AuditLog(log_path, include_questions=True)
    log.record(
        key_id="k_abc",
        question=f"my key is {key}, my token access_token=24.abcdef and bce-v3/ALTAK-x/y",
        client="10.0.0.1",
        error=f"upstream said: Authorization: Bearer {key}",
        headers={"authorization": "Bearer sk-anything-at-all", "x": [f"{key}"]},
        api_key=key,
    )
    log.close()
    raw = log_path.read_text("utf-8")
    assert key not in raw
    assert key[3:] not in raw
    assert "24.abcdef" not in raw
    assert "ALTAK-x" not in raw
    assert "sk-anything" not in raw
    line = lines(log_path)[0]
    assert line["api_key"] == "***"
    assert line["headers"]["authorization"] == "***"
    assert line["headers"]["x"] == ["wx-***"]
    assert "wx-***" in line["question"]
    assert "access_token=***" in line["question"]
    assert line["key_id"] == "k_abc"
    assert line["client"] == "10.0.0.1"


def test_redact_value_shapes() -> None:
    assert redact_value(("a", 1, None, 2.5)) == ["a", 1, None, 2.5]
    assert redact_value({"n": {"Password": "hunter2"}}) == {"n": {"Password": "***"}}
    assert redact_value("wx-12345678") == "wx-***"
    assert redact_value("wx-short") == "wx-short"  # not key-shaped


def test_close_flushes_everything(log_path: Path) -> None:
    log = AuditLog(log_path, include_questions=False)
    for i in range(5000):
        log.record(n=i)
    log.close()
    log.close()  # idempotent
    assert [line["n"] for line in lines(log_path)] == list(range(5000))
    assert log.record(n=-1) is False  # after close: ignored
    assert log.flush() is True


async def test_concurrent_records_from_many_tasks_all_land(audit: AuditLog, log_path: Path) -> None:
    async def client(task: int) -> None:
        for i in range(50):
            assert audit.record(task=task, i=i)
            await asyncio.sleep(0)

    threads = [
        threading.Thread(target=lambda t=t: [audit.record(thread=t, i=i) for i in range(100)])
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    await asyncio.gather(*(client(t) for t in range(100)))
    for thread in threads:
        thread.join()
    await audit.aclose()
    got = lines(log_path)
    assert len(got) == 100 * 50 + 4 * 100
    assert {(x["task"], x["i"]) for x in got if "task" in x} == {
        (t, i) for t in range(100) for i in range(50)
    }


def test_full_queue_drops_and_warns_once(
    log_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    entered, release = threading.Event(), threading.Event()
    real_write = os.write

    def slow_write(fd: int, data: bytes) -> int:
        entered.set()
        release.wait(5)
        return real_write(fd, data)

    monkeypatch.setattr(_audit, "_os_write", slow_write)
    log = AuditLog(log_path, include_questions=False, queue_size=2)
    with caplog.at_level(logging.WARNING, logger="wenxin_stream.server.audit"):
        assert log.record(n=0)
        assert entered.wait(5)  # the writer is stuck in write() with record 0
        results = [log.record(n=i) for i in range(1, 50)]  # never blocks
        release.set()
        log.close()
    assert results[:2] == [True, True]  # the queue holds two
    assert results.count(False) == log.dropped == 47
    assert log.written == 3
    assert [line["n"] for line in lines(log_path)] == [0, 1, 2]
    warnings = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(warnings) == 1
    assert any("were dropped" in r.getMessage() for r in caplog.records)


def test_write_errors_and_odd_values_do_not_stop_the_writer(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(log_path, include_questions=False)
    circular: dict[str, Any] = {}
    circular["self"] = circular
    log.record(bad=circular)
    log.record(path=Path("/x"), when=datetime(2025, 1, 1))  # not JSON: written as str
    assert log.flush()
    assert log.dropped == 1
    assert lines(log_path)[0] == {"ts": lines(log_path)[0]["ts"], "path": "/x",
                                  "when": "2025-01-01 00:00:00"}  # fmt: skip

    def failing_write(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_audit, "_os_write", failing_write)
    log.record(n=1)
    assert log.flush()
    assert log.dropped == 2
    monkeypatch.undo()
    log.record(n=2)
    log.close()
    assert lines(log_path)[-1]["n"] == 2


def test_existing_file_is_appended_and_made_private(log_path: Path) -> None:
    log_path.parent.mkdir(parents=True)
    log_path.write_text('{"old": 1}\n')
    log_path.chmod(0o644)
    log = AuditLog(log_path, include_questions=False)
    log.record(new=1)
    log.close()
    assert lines(log_path) == [{"old": 1}, lines(log_path)[1]]
    assert lines(log_path)[1]["new"] == 1
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert "audit.jsonl" in repr(log)
