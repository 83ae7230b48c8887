"""The chat page through a restart of the instance producing its answer (issue 12, item 2).

Two real ``wenxin serve`` processes share a private Redis and one database behind the nginx
of ``deploy/nginx.conf`` (ports and paths rewritten); the page is served through nginx. While
an ERNIE-paced answer streams into the page, the instance producing it gets ``SIGTERM`` with a
short ``--shutdown-grace``: after the grace it hands the answer over (cut without an ``end``),
the page reconnects through nginx — its first resume reaches the other instance, as the
stopping one no longer accepts connections — with ``Last-Event-ID``, and the other instance
continues the answer. What a person must see: the same answer, complete, exactly the text an
uninterrupted ask gives (nothing lost or repeated at the seam), its stats, and no error.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from browser_support import (  # noqa: F401 (fixtures)
    IN_CI,
    answer_length,
    artifacts_fixture,
    ask,
    browser_fixture,
    context_fixture,
    conversation_id,
    open_app,
    page_fixture,
    rendered_matches,
    require_browser,
    wait_until,
)

require_browser()

from services import (  # noqa: E402
    ServiceUnavailable,
    deploy_nginx_conf,
    free_port,
    nginx_server,
    redis_server,
    unavailable,
)
from wenxin_stream.emulator import ServerHandle  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
GRACE = 0.5
STOP_MARGIN = 5.0
"""What ``wenxin serve --workers`` allows a worker beyond its grace (server/_workers.py)."""
ERNIE = "ttft=0.5;interval=0.4;chunks=12"
"""ERNIE's pace (bench/compare.py's ERNIE-paced suite): the answer takes about 5 s."""
FLEET = "lease_ttl = 2.0\nanswer_lease_ttl = 2.0\nredis_timeout = 0.5\n"

pytestmark = pytest.mark.timeout(120)  # about 25 s alone: two processes, nginx, Chromium


@dataclass
class Instance:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def _serve(data: Path, upstream: str, name: str, *args: str) -> Instance:
    """``wenxin serve`` as a process (its stderr in a file), once it has said where it is."""
    skip = ("QIANFAN_", "WENXIN_", "COV_", "COVERAGE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(
        WENXIN_UPSTREAM_API="v2",
        WENXIN_UPSTREAM_V2_BASE_URL=upstream,
        WENXIN_UPSTREAM_BEARER_TOKEN="bce-v3/ALTAK-browser/restart",
        WENXIN_UPSTREAM_EMULATED="true",
    )
    log = data.with_name(f"{name}.log")
    with log.open("w") as err:
        argv = [str(Path(sys.executable).with_name("wenxin")), "serve", "--data-dir", str(data),
                "--instance-id", name, *args]  # fmt: skip
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 30
    while (found := re.search(r"wenxin serve on (http://\S+)", log.read_text())) is None:
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "wenxin serve did not start"
        time.sleep(0.05)
    return Instance(name, proc, found.group(1), log)


@pytest.fixture
def fleet(tmp_path: Path, emu: ServerHandle) -> Iterator[tuple[str, dict[str, Instance], str]]:
    """nginx's URL, the two instances by name, Redis's URL."""
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET)
    data = tmp_path / "data"  # one database for both, as one PostgreSQL would be
    instances: dict[str, Instance] = {}
    try:
        with redis_server() as service:
            for name in ("a", "b"):
                instances[name] = _serve(
                    data, emu.base_url, name,
                    "--port", str(free_port()), "--redis-url", service.url,
                    "--config", str(config), "--shutdown-grace", str(GRACE),
                    "--resume-grace", "5", "--max-connections-per-ip", "0",
                )  # fmt: skip
            listen = free_port()
            ports = [int(i.url.rsplit(":", 1)[1]) for i in instances.values()]
            conf = deploy_nginx_conf(DEPLOY.read_text(), listen, ports)
            with nginx_server(conf, listen) as nginx:
                yield nginx.url, instances, service.url
    except ServiceUnavailable as exc:
        unavailable(str(exc))
    finally:
        for instance in instances.values():
            if instance.proc.poll() is None:
                instance.proc.kill()
                instance.proc.wait(10)


def _producer(db: redis.Redis) -> tuple[str, str] | None:
    """The stream id of the answer being produced (the only one), and its producer."""
    for key in db.scan_iter(match="wenxin:ans:*:meta"):
        meta = db.hgetall(key)
        if meta.get(b"ended") != b"1" and b"instance" in meta:
            sid = key.decode().split("{", 1)[1].split("}", 1)[0]
            return sid, meta[b"instance"].decode()
    return None


def _reference(url: str, question: str) -> str:
    """The whole answer to ``question`` asked without a break (and unpaced), as stored."""
    with httpx.Client(base_url=url, timeout=30) as c:
        cid = c.post("/api/conversations", json={}).json()["id"]
        content = question.replace(ERNIE, "ttft=0;interval=0.001;chunks=12")
        r = c.post(f"/api/conversations/{cid}/messages", json={"content": content})
        assert r.status_code == 200, r.text
        return str(c.get(f"/api/conversations/{cid}").json()["messages"][-1]["content"])


def test_the_page_resumes_an_answer_handed_over_by_a_restarting_instance(
    page: Any, fleet: tuple[str, dict[str, Instance], str], artifacts: Path
) -> None:
    url, instances, redis_url = fleet
    resumes: list[dict[str, str]] = []
    page.on(
        "request",
        lambda req: (
            resumes.append(req.headers)
            if "/api/streams/" in req.url and req.method == "GET"
            else None
        ),
    )
    open_app(page, url + "/")
    question = f"页面交接测试：讲讲黄河 [[wenxin:fault {ERNIE}]]"
    answer = ask(page, question)
    wait_until(lambda: answer_length(answer) > 20, 15, "the answer's first text")  # mid-answer

    db = redis.Redis.from_url(redis_url)
    try:
        sid, producer = wait_until(lambda: _producer(db), 5, "its producer")
        assert producer in instances, (sid, producer)
        victim = instances[producer]
        before = answer_length(answer)
        victim.proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert victim.proc.wait(GRACE + STOP_MARGIN + 5) == 0, victim.log.read_text()[-2000:]
        exited = time.monotonic() - stopped
        status = wait_until(
            lambda: (
                answer.get_attribute("data-status") in ("complete", "error", "stopped")
                and answer.get_attribute("data-status")
            ),
            30,
            "the answer's end",
        )
        page.screenshot(path=str(artifacts / "11-handed-over.png"))
        meta = db.hgetall(f"wenxin:ans:{{{sid}}}:meta")
    finally:
        db.close()

    # the answer was really handed over mid-answer (else this test would show nothing)
    assert before < len(_reference(url, question)), "the answer ended before the SIGTERM"
    assert meta[b"takeovers"] == b"1"
    other = next(name for name in instances if name != producer)
    assert meta[b"instance"].decode() == other
    assert exited <= GRACE + STOP_MARGIN, exited

    # the page resumed it through nginx, with its last id, and shows it complete, no error
    assert resumes, "the page did not resume the answer"
    assert all(re.fullmatch(rf"{sid}:\d+", h.get("last-event-id", "")) for h in resumes)
    assert status == "complete"
    assert answer.get_attribute("data-end-reason") in (None, "", "completed")
    assert answer.get_by_test_id("error").count() == 0
    assert answer.locator(".msg-note").count() == 0  # "reconnecting…" is gone
    assert answer.get_by_test_id("stats").is_visible()
    assert page.errors == [], page.errors
    assert page.dialogs == [], page.dialogs

    # exactly the uninterrupted answer: what the page renders is the stored message, which
    # is the emulator's whole answer (nothing lost or repeated at the seam)
    stored = httpx.get(f"{url}/api/conversations/{conversation_id(page)}", timeout=10).json()
    message = stored["messages"][-1]
    assert (message["status"], message["end_reason"]) == ("complete", "completed")
    assert message["content"] == _reference(url, question)
    same = rendered_matches(answer, message["content"])
    assert same, "the page shows something else than the stored answer"
