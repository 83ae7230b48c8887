"""A rolling restart of a whole fleet under steady load loses no answer (issue 12, item 2).

Three real ``wenxin serve`` processes share a private Redis and a private PostgreSQL, behind
the nginx of ``deploy/nginx.conf`` (that very file, ports and paths rewritten); their upstream
is the emulator, each question ERNIE-paced (TTFT 0.5 s, 12 chunks 0.4 s apart: an answer takes
about 5 s, longer than the grace). A bounded crowd of clients asks continuously through nginx
while every instance in turn gets ``SIGTERM``, is waited for, started again on its port and
waited for until ``/readyz`` answers 200:

- native SSE clients (``POST …/messages``): when an answer is cut without its ``end`` (handed
  over after the grace), they resume through nginx with ``Last-Event-ID``, as any client would;
- WebSocket clients (``/api/ws``): told ``answer_moved`` or closed with 1012 mid-answer, they
  connect again through nginx and send ``resume`` with their last ``seq``;
- OpenAI-compatible clients (``/v1/chat/completions``, not resumable): their answers are
  shorter than the grace, so every one finishes — one that started before ``SIGTERM`` within
  the grace, one that nginx sent on a pooled connection during the drain within the grace
  from its start.

What must hold: every answer asked ends ``completed`` with exactly the emulator's text (the
emulator continues a continuation exactly, so a seam would show as repeated or missing text),
every event id once and in order, no 5xx anywhere (HTTP status, SSE ``end`` error, WebSocket
``error`` frame), WebSockets closed only with 1012, each instance exits within
``--shutdown-grace`` + the drain's window + the supervisor's margin, and the stored messages
in PostgreSQL agree with what the clients got. The figures are printed (docs/SCALING.md's
fault table).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from serve_process import Serve
from server_helpers import EventReader, paced, sse_events, texts, wait_for

from services import (
    Service,
    ServiceUnavailable,
    deploy_nginx_conf,
    free_port,
    nginx_server,
    redis_server,
    unavailable,
)
from wenxin_stream import ServerSentEvent
from wenxin_stream._http_limits import DRAIN_IDLE
from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server._workers import STOP_MARGIN

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
FAIL_TIMEOUT = 2.0
"""``fail_timeout`` of the upstream servers in ``deploy/nginx.conf`` (checked below)."""
GRACE = 2.0
"""``--shutdown-grace`` of every instance: shorter than an ERNIE-paced answer, so each restart
both lets answers finish and hands others over."""
ERNIE = "ttft=0.5;interval=0.4;chunks=12"
"""ERNIE's pace (bench/compare.py's ERNIE-paced suite): about 5 s an answer."""
SHORT = "ttft=0.3;interval=0.1;chunks=8"
"""The OpenAI route's answers: about 1 s, inside the grace."""
FAST = {"ERNIE": "ttft=0;interval=0.001;chunks=12", "SHORT": "ttft=0;interval=0.001;chunks=8"}
"""The same answers unpaced: the reference texts."""
FLEET = (
    ("lease_ttl", "2.0"),
    ("answer_lease_ttl", "2.0"),
    ("redis_timeout", "0.5"),
    ("database_pool_timeout", "2.0"),
)
SSE_CLIENTS, WS_CLIENTS, OPENAI_CLIENTS = 5, 3, 2
INSTANCES = 3

pytestmark = pytest.mark.timeout(180)  # about 45 s alone; three processes start four times


@dataclass
class Answer:
    """One answer a client asked, as it got it."""

    route: str
    question: str
    spec: str
    texts: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    end: dict[str, Any] | None = None
    message_id: str = ""
    sid: str = ""
    last: int = -1
    """The last ``seq`` a WebSocket client got."""
    cuts: int = 0
    """Times the answer's connection broke (or was told to move) before its end."""
    problems: list[str] = field(default_factory=list)
    """Anything a client must never see: a 5xx, an error frame, a close other than 1012."""
    asked: float = field(default_factory=time.monotonic)


@dataclass
class Load:
    nginx: str
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[Answer] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)
    """WebSocket close codes the clients saw."""
    errors: list[BaseException] = field(default_factory=list)
    reasked = 0
    """WebSocket asks closed with 1012 before their ``start``, asked again on a new socket."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new(self, route: str, question: str, spec: str) -> Answer:
        answer = Answer(route, question, spec)
        with self.lock:
            self.answers.append(answer)
        return answer

    def guarded(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:
            self.errors.append(exc)

    # -- the native SSE route: ask, and resume with Last-Event-ID after a cut ---------------

    def sse_client(self, n: int) -> None:
        with httpx.Client(base_url=self.nginx, timeout=30) as c:
            for i in range(1000):
                if self.stop.is_set():
                    return
                answer = self.new("sse", f"滚动重启 SSE 客户{n} 第{i}问：讲讲黄河", ERNIE)
                r = c.post("/api/conversations", json={})
                if r.status_code != 201:
                    answer.problems.append(f"create conversation: {r.status_code} {r.text}")
                    continue
                cid = r.json()["id"]
                body = {"content": paced(answer.question, ERNIE)}
                request = c.build_request("POST", f"/api/conversations/{cid}/messages", json=body)
                sid, last = self._read_sse(answer, c.send(request, stream=True))
                for _ in range(20):
                    if answer.end is not None or not sid:
                        break
                    answer.cuts += 1
                    headers = {"Last-Event-ID": last} if last else {}
                    request = c.build_request("GET", f"/api/streams/{sid}", headers=headers)
                    _, last = self._read_sse(answer, c.send(request, stream=True), sid, last)
                if answer.end is None:
                    answer.problems.append("never ended")

    def _read_sse(
        self, answer: Answer, response: httpx.Response, sid: str = "", last: str = ""
    ) -> tuple[str, str]:
        with contextlib.closing(response):
            if response.status_code != 200:
                response.read()
                answer.problems.append(f"HTTP {response.status_code}: {response.text[:200]}")
                time.sleep(0.2)
                return sid, last
            reader = EventReader(response)
            with contextlib.suppress(httpx.HTTPError):  # cut: the caller resumes
                while (event := reader.next()) is not None:
                    sid, last = self._sse_event(answer, event, sid, last)
        return sid, last

    @staticmethod
    def _sse_event(answer: Answer, event: ServerSentEvent, sid: str, last: str) -> tuple[str, str]:
        data = json.loads(event.data)
        if event.id:
            last = event.id
            answer.seqs.append(int(event.id.rsplit(":", 1)[1]))
        if event.event == "start":
            sid = data["stream_id"]
        elif event.event == "delta":
            answer.texts.append(data["text"])
        elif event.event == "end":
            answer.end = data
            answer.message_id = data.get("message_id", "")
            error = data.get("error")
            if error:
                answer.problems.append(f"end with an error: {error}")
        return sid, last

    # -- the WebSocket: ask, and resume (on a new socket) when moved or closed with 1012 ----

    def ws_client(self, n: int) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidState
        from websockets.sync.client import ClientConnection, connect

        url = self.nginx.replace("http://", "ws://") + "/api/ws"
        moving: Answer | None = None  # an answer to resume (its stream id and last seq known)
        i = 0
        while not self.stop.is_set() or moving is not None:
            answer = moving
            ws: ClientConnection | None = None
            try:
                with connect(url, open_timeout=10) as ws:
                    while not self.stop.is_set() or moving is not None:
                        i += 1
                        if moving is not None:
                            answer = moving
                            answer.cuts += 1
                            frame = {"type": "resume", "id": f"r{i}", "stream_id": answer.sid,
                                     "last_seq": answer.last}  # fmt: skip
                        else:
                            question = f"滚动重启 WS 客户{n} 第{i}问：讲讲长城"
                            answer = self.new("ws", question, ERNIE)
                            frame = {"type": "ask", "id": f"a{i}",
                                     "content": paced(question, ERNIE)}  # fmt: skip
                        ws.send(json.dumps(frame))
                        moving = answer if self._read_ws(ws, answer) else None
            except (ConnectionClosed, InvalidState):  # InvalidState: sent while it closed
                rcvd = ws.protocol.close_rcvd if ws is not None else None
                code = rcvd.code if rcvd is not None else 1006
                self.closes.append(code)
                if answer is not None and answer.end is None:
                    if code != 1012:
                        answer.problems.append(f"WebSocket closed with {code}")
                    if answer.sid:
                        moving = answer
                    else:  # closed before its start: never asked (no start): ask it again
                        with self.lock:
                            self.answers.remove(answer)
                            self.reasked += 1
                        moving = None
            except OSError as exc:  # nginx could not reach an instance meanwhile: again
                self.errors.append(exc)
                time.sleep(0.2)

    @staticmethod
    def _read_ws(ws: Any, answer: Answer) -> bool:
        """Read one ask's frames until its end (``False``) or until told it moved (``True``:
        resume it)."""
        while True:
            frame = json.loads(ws.recv(timeout=30))
            kind = frame["type"]
            if kind == "start":
                answer.sid = frame["stream_id"]
                answer.message_id = frame["message_id"]
            elif kind == "delta":
                answer.seqs.append(frame["seq"])
                answer.texts.append(frame["text"])
                answer.last = frame["seq"]
            elif kind == "end":
                answer.end = frame
                return False
            elif kind == "error":
                if frame.get("code") == "answer_moved" and answer.sid:
                    return True
                answer.problems.append(f"error frame: {frame}")
                if not answer.sid:
                    return False

    # -- the OpenAI route: not resumable; its answers fit inside the grace -----------------

    def openai_client(self, n: int) -> None:
        with httpx.Client(base_url=self.nginx, timeout=30) as c:
            for i in range(1000):
                if self.stop.is_set():
                    return
                answer = self.new("openai", f"滚动重启 OpenAI 客户{n} 第{i}问：讲讲泰山", SHORT)
                body = {
                    "model": "ernie-lite-8k",
                    "stream": True,
                    "messages": [{"role": "user", "content": paced(answer.question, SHORT)}],
                }
                with (
                    contextlib.suppress(httpx.HTTPError),
                    c.stream("POST", "/v1/chat/completions", json=body) as r,
                ):
                    if r.status_code != 200:
                        r.read()
                        answer.problems.append(f"HTTP {r.status_code}: {r.text[:200]}")
                        time.sleep(0.2)
                        continue
                    self._read_openai(answer, r)
                if answer.end is None:
                    answer.problems.append("cut (not resumable)")

    @staticmethod
    def _read_openai(answer: Answer, r: httpx.Response) -> None:
        finish = None
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                if finish == "stop":
                    answer.end = {"end_reason": "completed"}
                return
            chunk = json.loads(line[6:])
            if "error" in chunk:
                answer.problems.append(f"error chunk: {chunk['error']}")
                continue
            for choice in chunk.get("choices", []):
                answer.texts.append(choice.get("delta", {}).get("content") or "")
                finish = choice.get("finish_reason") or finish


@dataclass
class Instance:
    port: int
    serve: Serve


@pytest.fixture
def fleet(
    tmp_path: Path, emu: ServerHandle, postgres_url: str
) -> Iterator[tuple[Service, list[Instance], Any]]:
    config = tmp_path / "fleet.toml"
    config.write_text("".join(f"{key} = {value}\n" for key, value in FLEET))
    instances: list[Instance] = []
    with redis_server() as redis:

        def start(port: int, n: int) -> Serve:
            return Serve(
                tmp_path / f"data{n}",
                emu.base_url,
                "--port", str(port),
                "--redis-url", redis.url,
                "--database-url", postgres_url,
                "--config", str(config),
                "--shutdown-grace", str(GRACE),
                "--resume-grace", "5",
                "--max-connections-per-ip", "0",
            )  # fmt: skip

        try:
            for n in range(INSTANCES):
                port = free_port()
                instances.append(Instance(port, start(port, n)))
            listen = free_port()
            source = DEPLOY.read_text()
            assert f"fail_timeout={FAIL_TIMEOUT:g}s;" in source
            conf = deploy_nginx_conf(source, listen, [i.port for i in instances])
            with nginx_server(conf, listen) as nginx:
                yield nginx, instances, start
        except ServiceUnavailable as exc:
            unavailable(str(exc))
        finally:
            for instance in instances:
                if instance.serve.proc.poll() is None:
                    instance.serve.kill()


def _nginx_errors(proxy: Service) -> str:
    """nginx's own account of the requests it failed (a 502's cause), for a failure's message:
    its error log's lines other than the connects refused by a stopped instance."""
    log = proxy.directory / "wenxin-error.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    kept = [line for line in lines if "connect() failed (111" not in line]
    return "nginx error log:\n" + "\n".join(kept[-20:])


def _since_sigterm(asked: float, terms: list[float]) -> str:
    """When an answer was asked, against the nearest SIGTERM (for a failure's message)."""
    if not terms:
        return "before the first SIGTERM"
    n, term = min(enumerate(terms), key=lambda item: abs(asked - item[1]))
    return f"{asked - term:+.2f} s from SIGTERM {n + 1}"


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    return False


def _references(nginx: str, answers: list[Answer]) -> dict[tuple[str, str], str]:
    """Each question's whole answer, asked again unpaced (the emulator's text is a function of
    the question and the model)."""

    def native(question: str, spec: str) -> str:
        with httpx.Client(base_url=nginx, timeout=30) as c:
            cid = c.post("/api/conversations", json={}).json()["id"]
            r = c.post(
                f"/api/conversations/{cid}/messages", json={"content": paced(question, spec)}
            )
            return texts(sse_events(r.content))

    def openai(question: str, spec: str) -> str:
        body = {
            "model": "ernie-lite-8k",
            "messages": [{"role": "user", "content": paced(question, spec)}],
        }
        r = httpx.post(f"{nginx}/v1/chat/completions", json=body, timeout=30)
        return str(r.json()["choices"][0]["message"]["content"])

    def one(answer: Answer) -> tuple[tuple[str, str], str]:
        spec = FAST["SHORT" if answer.spec == SHORT else "ERNIE"]
        ask = openai if answer.route == "openai" else native
        return (answer.route, answer.question), ask(answer.question, spec)

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, answers))


def _stored(postgres_url: str, ids: list[str]) -> dict[str, tuple[str, str, str, Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, content, status, end_reason, extras FROM messages WHERE id = ANY(%s)",
            [ids],
        ).fetchall()
    return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}


def test_a_rolling_restart_under_load_loses_no_answer(
    fleet: tuple[Service, list[Instance], Any], postgres_url: str
) -> None:
    proxy, instances, start = fleet
    nginx = proxy.url
    load = Load(nginx)
    threads = [
        threading.Thread(target=load.guarded, args=(client, n), daemon=True)
        for clients, client in (
            (SSE_CLIENTS, load.sse_client),
            (WS_CLIENTS, load.ws_client),
            (OPENAI_CLIENTS, load.openai_client),
        )
        for n in range(clients)
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    exits: list[float] = []
    terms: list[float] = []
    try:
        time.sleep(3.0)  # the load is steady: answers run on every instance
        for n, instance in enumerate(instances):
            instance.serve.proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            terms.append(stopped)
            try:
                status = instance.serve.proc.wait(GRACE + DRAIN_IDLE + STOP_MARGIN + 10)
            except subprocess.TimeoutExpired:  # its log says where it waits (_stuck_tasks)
                pytest.fail(f"no exit after SIGTERM: {instance.serve.log.read_text()[-4000:]}")
            exits.append(time.monotonic() - stopped)
            assert status == 0, instance.serve.log.read_text()[-2000:]
            log = instance.serve.log.read_text()
            assert "Traceback" not in log, log[-3000:]
            instance.serve = start(instance.port, INSTANCES + n)
            wait_for(lambda url=instance.serve.url: _ready(url), timeout=30, step=0.05)
            # the restarted instance takes some of the load; nginx skips it until the
            # fail_timeout of its refused connects has passed (docs/SCALING.md): wait that long
            time.sleep(FAIL_TIMEOUT + 0.5)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(40)
    restarted = time.monotonic() - began
    assert not any(thread.is_alive() for thread in threads), "a client hangs"
    errors = [e for e in load.errors if not isinstance(e, OSError)]
    assert not errors, (errors, _nginx_errors(proxy))

    answers = [a for a in load.answers if a.end is not None or a.problems]
    problems = Counter(f"{a.route}: {p[:120]}" for a in answers for p in a.problems)
    when = [_since_sigterm(a.asked, terms) for a in answers if a.problems]
    assert not problems, (
        f"{len(answers)} answers; problems: {problems}; asked {when}; {_nginx_errors(proxy)}"
    )
    references = _references(nginx, answers)
    for answer in answers:
        assert answer.end is not None
        assert answer.end["end_reason"] == "completed", (answer.question, answer.end)
        whole = "".join(answer.texts)
        want = references[(answer.route, answer.question)]
        assert whole == want, (answer.route, answer.question, answer.cuts, whole, want)
        if answer.route != "openai":
            first = answer.seqs[0]
            assert answer.seqs == list(range(first, first + len(answer.seqs))), answer.seqs
    assert set(load.closes) <= {1012}, load.closes
    stored = _stored(postgres_url, [a.message_id for a in answers if a.route != "openai"])
    continued = 0
    for answer in answers:
        if answer.route == "openai":
            continue
        content, status, reason, extras = stored[answer.message_id]
        assert (content, status, reason) == ("".join(answer.texts), "complete", "completed")
        continued += bool(json.loads(extras or "{}").get("continued"))
    cut = sum(1 for a in answers if a.cuts)
    by_route = {r: sum(1 for a in answers if a.route == r) for r in ("sse", "ws", "openai")}
    print(
        f"rolling restart of {INSTANCES} instances (grace {GRACE} s) in {restarted:.1f} s: "
        f"{len(answers)} answers ({by_route}), all completed; {cut} cut and resumed, "
        f"{continued} stored as continued by another instance; {load.reasked} WebSocket asks "
        f"closed before their start and asked again; exits after SIGTERM "
        f"{', '.join(f'{x:.2f}' for x in exits)} s; WebSocket closes {sorted(load.closes)}"
    )
    assert all(x <= GRACE + DRAIN_IDLE + STOP_MARGIN for x in exits), exits
    assert cut > 0, "no answer spanned a restart: the test shows nothing"
    assert continued > 0, "no answer was handed over: the test shows nothing"
