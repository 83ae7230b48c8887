"""No credential ever shows: not in DEBUG logs (urllib3 and aiohttp included), nor in the
``repr`` of clients and streams, nor in the message, ``repr`` or formatted traceback of any
exception — chained and suppressed causes included.

v1 puts the access token in the query string of every chat request and the API key and secret
key in the query string of the OAuth request, so every log line or error message that quotes
a URL is a leak waiting to happen. Each scenario runs through both twins with DEBUG logging
for every logger; the records of the in-process emulator's own loggers (``uvicorn``,
``wenxin_stream.emulator``) are the server's, not the SDK's, and are left out.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
from sdk_helpers import Emu, Harness, Mode, build_client, fault, serve_emulator, unique

from wenxin_stream import AuthenticationError, WenxinError
from wenxin_stream.emulator import Credentials

PROMPT = "保密测试"
SERVER_LOGGERS = ("uvicorn", "wenxin_stream.emulator")


class Capture(logging.Handler):
    """Collects every formatted record of the client side."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(SERVER_LOGGERS):
            return
        self.lines.append(self.format(record))


@pytest.fixture
def debug_logs() -> Iterator[Capture]:
    """DEBUG for the root logger and every logger that exists (urllib3, aiohttp, asyncio…)."""
    capture = Capture()
    root = logging.getLogger()
    names = ["urllib3", "urllib3.connectionpool", "aiohttp", "aiohttp.client", "asyncio"]
    names += [n for n in logging.root.manager.loggerDict if not n.startswith(SERVER_LOGGERS)]
    loggers = [root, *(logging.getLogger(n) for n in names)]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled


@dataclass
class Evidence:
    """Everything that must not contain a secret."""

    secrets: set[str] = field(default_factory=set)
    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def exception(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: formatted", "".join(traceback.format_exception(exc)))
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:  # causes, suppressed or not
            seen.add(id(current))
            self.add(f"{where}: str {type(current).__name__}", str(current))
            self.add(f"{where}: repr {type(current).__name__}", repr(current))
            current = current.__cause__ or current.__context__

    def check(self, logs: Capture) -> None:
        secrets = {s for s in self.secrets if s}
        assert all(len(s) >= 8 for s in secrets), "a secret too short to search for"
        texts = [*self.texts, *(("log", line) for line in logs.lines)]
        for where, text in texts:
            for secret in secrets:
                assert secret not in text, f"a secret leaked into {where}: {text[:300]!r}"


def tokens_on_the_wire(h: Harness) -> set[str]:
    """The access tokens and bearer keys the client sent (read from the recorded requests)."""
    found: set[str] = set()
    for sent in h.wire.sent:
        query = parse_qs(urlsplit(sent.url).query)
        found.update(query.get("access_token", []))
        found.update(query.get("client_secret", []))
        authorization = sent.request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            found.add(authorization.removeprefix("Bearer "))
    return found


async def _exercise(h: Harness, evidence: Evidence, messages: list[str]) -> None:
    """Stream each message, and ask for a whole answer once; collect everything."""
    evidence.add("repr(client)", repr(h.client))
    evidence.add("str(client)", str(h.client))
    for message in messages:
        out = await h.stream(message)
        evidence.add("repr(stream)", repr(out.stream))
        evidence.add("response headers", repr(out.stream.response_headers))
        if out.error is not None:
            evidence.exception("stream", out.error)
            evidence.add("error attributes", repr(vars(out.error)))
    try:
        await h.create(messages[0])
    except WenxinError as exc:
        evidence.exception("create", exc)
    evidence.secrets |= tokens_on_the_wire(h)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_v1_oauth(mode: Mode, sdk_emu: Emu, debug_logs: Capture) -> None:
    api_key, secret_key = unique("apikey-"), unique("secretkey-")
    h = build_client(mode, api_key=api_key, secret_key=secret_key, base_url=sdk_emu.base_url)
    evidence = Evidence({api_key, secret_key})
    messages = [
        PROMPT,
        fault(PROMPT, "expire_token=1;times=1"),  # refreshed and replayed
        fault(PROMPT, "expire_token=1"),  # 111 raised after the one refresh
        fault(PROMPT, "error=336003"),
        fault(PROMPT, "cut_after=2"),
    ]
    await _exercise(h, evidence, messages)
    await h.close()
    assert len(evidence.secrets) >= 4  # the two keys and at least two tokens
    assert debug_logs.lines
    if mode == "sync":  # urllib3 logs every request line, query string included (redacted)
        assert any("access_token=***" in line for line in debug_logs.lines)
    evidence.check(debug_logs)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_v1_unknown_fixed_token(mode: Mode, sdk_emu: Emu, debug_logs: Capture) -> None:
    token = "24." + unique("fixedtoken") + ".2592000.1700000000.1-1"
    h = build_client(mode, access_token=token, base_url=sdk_emu.base_url)
    evidence = Evidence({token})
    await _exercise(h, evidence, [PROMPT])  # 110
    await h.close()
    assert len(evidence.texts) > 5
    evidence.check(debug_logs)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_v2_bearer_key(mode: Mode, sdk_emu: Emu, debug_logs: Capture) -> None:
    key = f"bce-v3/ALTAK-{unique('')}/{unique('')}"
    h = build_client(mode, bearer_token=key, v2_base_url=sdk_emu.base_url)
    evidence = Evidence({key, key.split("/")[1], key.split("/")[2]})
    messages = [PROMPT, fault(PROMPT, "expire_token=1"), fault(PROMPT, "error=336100")]
    await _exercise(h, evidence, messages)  # success, 401, 500
    await h.close()
    evidence.check(debug_logs)


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_iam_signed(mode: Mode, api: str, sdk_emu: Emu, debug_logs: Capture) -> None:
    access_key, secret_key = unique("iamak-"), unique("iamsk-")
    h = build_client(
        mode,
        api=api,
        access_key=access_key,
        secret_access_key=secret_key,
        base_url=sdk_emu.base_url,
        v2_base_url=sdk_emu.base_url,
        iam_base_url=sdk_emu.base_url,
    )
    evidence = Evidence({access_key, secret_key})
    await _exercise(h, evidence, [PROMPT, fault(PROMPT, "error=336003")])
    await h.close()
    signatures = [s.request.headers.get("Authorization", "") for s in h.wire.sent]
    assert any(sig.startswith("bce-auth-v1/") for sig in signatures)
    evidence.secrets |= {sig.rsplit("/", 1)[-1] for sig in signatures if "bce-auth" in sig}
    evidence.check(debug_logs)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_connection_refused(mode: Mode, debug_logs: Capture) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    api_key, secret_key = unique("apikey-"), unique("secretkey-")
    token = "24." + unique("fixedtoken") + ".2592000.1700000000.1-1"
    oauth = build_client(mode, api_key=api_key, secret_key=secret_key, base_url=url, retry=0)
    fixed = build_client(mode, access_token=token, base_url=url, retry=0)
    key = f"bce-v3/ALTAK-{unique('')}/{unique('')}"
    bearer = build_client(mode, bearer_token=key, v2_base_url=url, retry=0)
    evidence = Evidence({api_key, secret_key, token, key})
    for h in (oauth, fixed, bearer):
        await _exercise(h, evidence, [PROMPT])
        await h.close()
    assert sum(1 for where, _ in evidence.texts if where.startswith("stream: formatted")) == 3
    evidence.check(debug_logs)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_rejected_oauth_credentials(mode: Mode, debug_logs: Capture) -> None:
    api_key, secret_key = unique("apikey-"), unique("secretkey-")
    strict = Credentials(apps={api_key: unique("the-right-secret-")})
    with serve_emulator(credentials=strict) as emu:
        h = build_client(mode, api_key=api_key, secret_key=secret_key, base_url=emu.base_url)
        evidence = Evidence({api_key, secret_key})
        out = await h.stream(PROMPT)
        await _exercise(h, evidence, [PROMPT])
        await h.close()
    assert isinstance(out.error, AuthenticationError)
    assert out.error.code == "invalid_client"
    assert len(h.wire.chat()) == 0
    evidence.check(debug_logs)
