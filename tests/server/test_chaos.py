"""The chaos suite: every kind of emulator fault, on both ERNIE API generations, through the
SDK (both twins, straight at the emulator) and through ``wenxin serve`` on every route — the
native SSE route, the WebSocket, and the OpenAI route driven by the official ``openai`` SDK.

For each fault (:data:`CASES`) one test runs the five clients at once and checks, per
``docs/ERRORS.md``:

- the terminal outcome each client saw: the end reason (native routes, SDK), the failure's
  status and code (in-band after output, an HTTP status before it on the OpenAI route), the
  ``openai`` SDK's exception class, and never a ``finish_reason`` on a cut answer;
- the text: no U+FFFD, a prefix of the emulator's deterministic answer to the same question
  (all of it when the answer completed), the SDK error's ``partial_text`` what was delivered;
- what the server kept: the stored end reason and text equal to what the client saw;
- the server healthy afterwards: ``/healthz`` answers and a normal question gets its answer.

One emulator and three servers serve the module (v2 upstream, v1 upstream, and a v2 one whose
default model thinks, since the server's model list does not name today's reasoning models).
A fault that makes ERNIE rate-limit pauses the server's upstream client for everyone — as it
should (``docs/ERRORS.md``) — so those cases get a fresh server per route. The emulator counts
``times=N`` per SPEC and credential, and the server's routes share its one credential: each
client's SPEC gets a ``ttft`` of a few milliseconds of its own, so that each sees the fault.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from chaos_helpers import (
    PEERS_PYTHON,
    SDK_TIMEOUT,
    OpenAIWorker,
    Seen,
    native_sse,
    sdk_async,
    sdk_sync,
    websocket,
)
from server_helpers import Running, running, wait_for

from servers import emulator
from wenxin_stream import AsyncClient
from wenxin_stream.emulator import ServerHandle

QUESTION = "讲讲黄河的故事"
LITE = "ernie-lite-8k"
THINKING = "ernie-x1-turbo-32k"
ROUTES = ("sdk_sync", "sdk_async", "sse", "ws", "openai")
TIMEOUTS: dict[str, Any] = {"upstream_first_token_timeout": 1.0, "upstream_idle_timeout": 1.0}
"""The servers' limits here: a stall over a second is a timeout (as the SDK's)."""


@dataclass(frozen=True)
class Case:
    """One fault and what every client must see of it.

    ``end``: the end reason (native routes, the SDK, the store); ``status``/``code``: the
    failure (None: the answer finished, with ``finish``); ``output``: whether the server's
    clients got text before the failure (on the OpenAI route: an in-band error event rather
    than an HTTP error status); ``sdk``: the SDK's exception class; ``fresh``: a server per
    route (the fault pauses the upstream client); ``serial``: the clients one after another (a
    SPEC that expires the server's one v1 token must not expire the token another route's
    replay just fetched: each request refreshes once)."""

    api: str
    spec: str
    end: str
    status: int | None = None
    code: str | None = None
    output: bool = False
    sdk: str | None = None
    finish: str = "stop"
    model: str = LITE
    fresh: bool = False
    serial: bool = False

    @property
    def id(self) -> str:
        return f"{self.api}-{self.spec}" + ("-thinking" if self.model != LITE else "")


def _both(spec: str, end: str, **kw: Any) -> list[Case]:
    return [Case("v1", spec, end, **kw), Case("v2", spec, end, **kw)]


_CUT = {"status": 502, "code": "upstream_error", "sdk": "APIConnectionError"}
_BROKEN = {"status": 502, "code": "upstream_error", "sdk": "MalformedResponseError"}
_TIMEOUT = {"status": 504, "code": "upstream_timeout", "sdk": "APITimeoutError"}
_RATE = {"status": 429, "code": "upstream_rate_limited", "sdk": "RateLimitError", "fresh": True}
_AUTH = {"status": 502, "code": "upstream_auth_failed"}
_INVALID = {"status": 400, "code": "invalid_argument", "sdk": "BadRequestError"}
_TOO_LONG = {"status": 400, "code": "context_length_exceeded", "sdk": "ContextLengthError"}
_QUOTA = {"status": 429, "code": "insufficient_quota", "sdk": "PermissionDeniedError"}
_OVERLOADED = {"status": 503, "code": "upstream_overloaded", "sdk": "InternalServerError"}
_INTERNAL = {"status": 502, "code": "upstream_error", "sdk": "InternalServerError"}

CASES: list[Case] = [
    # the connection breaks: no terminal event (no [DONE], no is_end chunk)
    *_both("cut_after=3", "incomplete", output=True, **_CUT),
    *_both("cut_after=0", "incomplete", **_CUT),
    Case("v2", "cut_after=2", "incomplete", model=THINKING, **_CUT),  # during the thinking
    # broken UTF-8 at every chunk boundary: nothing garbled, finished or cut
    *_both("split_utf8=1", "completed"),
    *_both("split_utf8=1;cut_after=4", "incomplete", output=True, **_CUT),
    # malformed JSON in the stream
    *_both("malformed_after=2", "upstream_error", output=True, **_BROKEN),
    *_both("malformed_after=0", "upstream_error", **_BROKEN),
    # ERNIE's error JSON inside a stream, after output
    *_both("error=336003;error_after=2", "upstream_error", output=True, **_INVALID),
    *_both("error=336100;error_after=3", "upstream_error", output=True, **_OVERLOADED),
    # ERNIE's refusals before any output
    *_both("error=336003", "upstream_error", **_INVALID),
    *_both("error=336007", "upstream_error", **_TOO_LONG),
    *_both("error=17", "upstream_error", **_QUOTA),
    *_both("error=336501;times=1", "upstream_error", **_RATE),
    *_both("error=18;times=1", "upstream_error", **_RATE),
    *_both("error=4;times=1", "upstream_error", **_RATE),
    *_both("error=336501;error_after=2;times=1", "upstream_error", output=True, **_RATE),
    Case("v1", "error=13", "upstream_error", sdk="AuthenticationError", **_AUTH),
    Case("v2", "error=13", "upstream_error", sdk="TokenExpiredError", **_AUTH),  # invalid_iam_token
    *_both("error=336100", "upstream_error", **_OVERLOADED),
    *_both("error=336000", "upstream_error", **_INTERNAL),
    # token expiry: v1 refreshes the token once and replays; a v2 API key cannot be refreshed
    *_both("error=110", "upstream_error", sdk="TokenExpiredError", **_AUTH),
    Case("v1", "error=111;times=1", "completed"),
    Case("v2", "error=111;times=1", "upstream_error", sdk="TokenExpiredError", **_AUTH),
    Case("v1", "expire_token=1;times=1", "completed", serial=True),
    Case("v2", "expire_token=1;times=1", "upstream_error", sdk="TokenExpiredError", **_AUTH),
    # slow and stalled upstreams
    *_both("ttft=0.3;interval=0.01", "completed"),
    *_both("stall=3", "timed_out", **_TIMEOUT),
    *_both("stall=3;stall_after=2", "timed_out", output=True, **_TIMEOUT),
    # odd but finished answers
    *_both("big_line=200000", "completed"),
    *_both("truncate=1", "length", finish="length"),
    *_both("safety=3", "content_filtered", finish="content_filter"),
]  # fmt: skip


@dataclass
class Chaos:
    """The module's emulator, servers, the openai worker and the reference answers."""

    emu: ServerHandle
    servers: dict[str, Running]
    worker: OpenAIWorker
    reference: dict[str, str]
    serve: Callable[[ExitStack, str], Running]


def _v1_client(emu: ServerHandle) -> AsyncClient:
    """A v1 upstream client of a server (its own OAuth app: its own emulator counters)."""
    return AsyncClient(
        api_key=f"chaos-{uuid.uuid4().hex[:12]}",
        secret_key="sk",
        base_url=emu.base_url,
        api="v1",
        retry=0,
        timeout=SDK_TIMEOUT,
    )


def _reference(emu: ServerHandle, model: str) -> str:
    r = httpx.post(
        f"{emu.base_url}/v2/chat/completions",
        headers={"Authorization": "Bearer bce-v3/ALTAK-chaos-reference/x"},
        json={"model": model, "messages": [{"role": "user", "content": QUESTION}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    text: str = r.json()["choices"][0]["message"]["content"]
    return text


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    if not PEERS_PYTHON.exists():  # pragma: no cover - depends on the machine
        pytest.skip("run scripts/install to create .venv-peers")
    root = tmp_path_factory.mktemp("chaos")
    with ExitStack() as stack:
        emu = stack.enter_context(emulator())

        def serve(on: ExitStack, api: str, **overrides: Any) -> Running:
            data = root / f"data-{uuid.uuid4().hex[:8]}"
            if api == "v1":
                overrides |= {"client": _v1_client(emu), "upstream_api": "v1"}
            return on.enter_context(running(data, emu.base_url, **TIMEOUTS, **overrides))

        servers = {
            "v1": serve(stack, "v1"),
            "v2": serve(stack, "v2"),
            THINKING: serve(stack, "v2", default_model=THINKING),
        }
        worker = OpenAIWorker()
        stack.callback(worker.close)
        reference = {LITE: _reference(emu, LITE), THINKING: _reference(emu, THINKING)}
        yield Chaos(emu, servers, worker, reference, serve)


def _tagged(case: Case, index: int) -> str:
    """The question with the case's SPEC, made unique per client by a ``ttft`` of
    ``index`` milliseconds (when the SPEC sets no ``ttft`` of its own)."""
    spec = case.spec if "ttft=" in case.spec else f"{case.spec};ttft=0.00{index + 1}"
    return f"{QUESTION} [[wenxin:fault {spec}]]"


def _server_for(chaos: Chaos, case: Case, stack: ExitStack) -> Running:
    if case.fresh:
        return chaos.serve(stack, case.api)
    return chaos.servers[case.api if case.model == LITE else case.model]


def _drive(
    chaos: Chaos, case: Case, stack: ExitStack
) -> tuple[dict[str, Seen], dict[str, Running]]:
    """Run the five clients at once; what each saw, and the server each route used."""
    used = {route: _server_for(chaos, case, stack) for route in ("sse", "ws", "openai")}
    emu_url = chaos.emu.base_url
    with ThreadPoolExecutor(1 if case.serial else len(ROUTES)) as pool:
        futures = {
            "sdk_sync": pool.submit(
                sdk_sync, case.api, emu_url, uuid.uuid4().hex, case.model, _tagged(case, 0)
            ),
            "sdk_async": pool.submit(
                sdk_async, case.api, emu_url, uuid.uuid4().hex, case.model, _tagged(case, 1)
            ),
            "sse": pool.submit(native_sse, used["sse"].url, case.model, _tagged(case, 2)),
            "ws": pool.submit(websocket, used["ws"].url, case.model, _tagged(case, 3)),
            "openai": pool.submit(
                chaos.worker.ask, used["openai"].url, case.model, _tagged(case, 4)
            ),
        }
        return {route: future.result(timeout=45) for route, future in futures.items()}, used


def _check_text(seen: Seen, reference: str, case: Case, route: str) -> None:
    where = f"{case.id} via {route}"
    assert "\ufffd" not in seen.text + seen.reasoning, where
    assert reference.startswith(seen.text), (where, seen.text, reference)
    if case.end == "completed":
        assert seen.text == reference, where
    elif case.status is None or case.output:
        assert seen.text, where  # the cut came after some text, as the SPEC says
    elif route not in ("sdk_sync", "sdk_async") or case.model == LITE:
        assert seen.text == "", where  # (the SDK shows a thinking model's reasoning first)


def _check_sdk(seen: Seen, case: Case, route: str) -> None:
    where = f"{case.id} via {route}"
    assert seen.end == case.end, (where, seen)
    assert seen.error_class == case.sdk, (where, seen)
    if case.sdk is not None:
        assert seen.partial_text == seen.text, where  # exactly what was delivered
    else:
        assert seen.finishes == [case.finish], where


def _check_native(seen: Seen, case: Case, route: str) -> None:
    where = f"{case.id} via {route}"
    assert seen.http_status in (None, 200), (where, seen)  # the native routes answer in-band
    assert seen.end == case.end, (where, seen)
    assert (seen.status, seen.code) == (case.status, case.code), (where, seen)
    assert seen.stored == seen.end, (where, seen)  # the store tells what the client was told
    assert seen.stored_content == seen.text, where
    if case.status is None:
        assert seen.finishes == [case.finish], (where, seen)
        assert "error" not in seen.frames, (where, seen)
    else:
        assert seen.finishes == [], (where, seen)
        assert seen.retry_after is None or seen.retry_after >= 1, (where, seen)
        if case.status == 429 and case.code == "upstream_rate_limited":
            assert seen.retry_after is not None, (where, seen)
        if route == "ws":
            assert seen.frames[-2:] == ["error", "end"], (where, seen)
        else:
            assert seen.frames[-1] == "end", (where, seen)
            assert seen.frames.count("end") == 1, (where, seen)


def _check_openai(seen: Seen, case: Case) -> None:
    where = f"{case.id} via the openai SDK"
    if case.status is None:
        assert seen.error_class is None, (where, seen)
        assert seen.finishes == [case.finish], (where, seen)
        return
    assert seen.finishes == [], (where, seen)  # a cut answer never says it finished
    assert seen.code == case.code, (where, seen)
    if case.model != LITE and case.status == 502 and not case.output:
        # a cut while the model thinks: its reasoning was relayed (reasoning_content), so the
        # response had begun and the error comes in-band, after the thinking text
        assert seen.reasoning, (where, seen)
        assert (seen.error_class, seen.status) == ("APIError", None), (where, seen)
    elif case.output:  # in-band: the error event the SDK raises, after the text
        assert (seen.error_class, seen.status) == ("APIError", None), (where, seen)
    else:  # before output: a real HTTP status, the class the SDK gives it
        assert seen.status == case.status, (where, seen)
        assert seen.error_class is not None, where
        assert seen.error_class.endswith("Error"), (where, seen)
        assert seen.error_class != "APIError", (where, seen)
        if case.status == 429 and case.code == "upstream_rate_limited":
            assert seen.retry_after is not None, (where, seen)
            assert seen.retry_after >= 1, (where, seen)


def _check_healthy(srv: Running, case: Case, reference: str) -> None:
    """``/healthz``, then a normal question: its answer, or — after ERNIE's rate limit — a
    429 with ``Retry-After`` while the upstream client's pause lasts (never a 5xx or a hang)."""
    with srv.client() as client:
        assert client.get("/healthz").status_code == 200
        body = {"model": case.model, "messages": [{"role": "user", "content": QUESTION}]}
        r = client.post("/v1/chat/completions", json=body)
    if case.fresh and r.status_code == 429:
        assert r.json()["error"]["code"] == "upstream_rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        return
    assert r.status_code == 200, (case.id, r.text)
    assert r.json()["choices"][0]["message"]["content"] == reference


@pytest.mark.peers
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault(chaos: Chaos, case: Case) -> None:
    with ExitStack() as stack:  # the case's fresh servers, if it needs them
        seen, used = _drive(chaos, case, stack)
        reference = chaos.reference[case.model]
        for route, one in seen.items():
            _check_text(one, reference, case, route)
        _check_sdk(seen["sdk_sync"], case, "sdk_sync")
        _check_sdk(seen["sdk_async"], case, "sdk_async")
        _check_native(seen["sse"], case, "sse")
        _check_native(seen["ws"], case, "ws")
        _check_openai(seen["openai"], case)
        for srv in {id(s): s for s in used.values()}.values():
            _check_healthy(srv, case, reference)


def test_the_cases_cover_both_apis_and_twenty_faults() -> None:
    specs = {case.spec for case in CASES}
    assert len(specs) >= 20
    assert {case.api for case in CASES} == {"v1", "v2"}


@pytest.mark.peers
def test_no_stream_is_left_running(chaos: Chaos) -> None:
    """After every fault, every server has no answer still running and none in flight."""
    for srv in chaos.servers.values():
        wait_for(lambda srv=srv: not list(srv.app.relay.running), timeout=10)
        metrics = httpx.get(f"{srv.url}/metrics", timeout=10).text
        assert re.search(r"^wenxin_streams_in_flight 0(\.0)?$", metrics, re.M), metrics[-2000:]
