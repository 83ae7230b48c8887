"""The server's configuration: one immutable :class:`ServerConfig`, from four sources.

Theory of operation
===================

Everything ``wenxin serve`` can be told lives in :class:`ServerConfig`, a frozen dataclass that
:func:`~wenxin_stream.server.create_app` takes; nothing below the edge reads the environment.
:meth:`ServerConfig.load` merges the sources, highest first:

1. command-line flags (a mapping of field names; ``None`` means "not given");
2. ``WENXIN_<FIELD>`` environment variables (``WENXIN_PORT=9000``, ``WENXIN_ON_DISCONNECT=drain``);
3. a TOML file (``--config FILE`` or ``WENXIN_CONFIG``): top-level keys named like the fields,
   dashes or underscores (``resume-grace = 2.5``), optionally under a ``[server]`` table;
4. the defaults below.

Values from text (environment, TOML strings) are converted by field type; every value is then
checked in ``__post_init__``, so a mistake stops the server at start-up with a
:class:`ServerConfigError` naming the field and the source. Unknown keys in the file are an
error, not ignored.

The upstream (ERNIE) is configured with qianfan's own ``QIANFAN_*`` variables, which the SDK
reads; the ``upstream_*`` fields override them (tests point the server at an emulator with
``upstream_v2_base_url`` + ``upstream_bearer_token``). With no credentials anywhere, the
server uses the SDK's embedded offline emulator and says so.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from .._redact import redact
from ._allocator import ALLOCATORS, Allocator
from ._channel_config import ChannelConfigError, GatewaySpec, parse_gateway
from ._pacing import DEFAULT_SLICE

__all__ = ["ENV_PREFIX", "ServerConfig", "ServerConfigError", "mask_url_password"]

ENV_PREFIX = "WENXIN_"
"""Prefix of the environment variables that configure the server."""

DisconnectPolicy = Literal["cancel", "drain"]
TakeoverPolicy = Literal["continue", "interrupt"]

_SECRET_FIELDS = frozenset({"upstream_bearer_token", "admin_key"})
_URL_FIELDS = frozenset({"redis_url", "database_url"})
"""Fields whose value may carry a password in its userinfo (masked in ``repr``)."""
_CHOICES: dict[str, tuple[str, ...]] = {
    "on_disconnect": ("cancel", "drain"),
    "takeover": ("continue", "interrupt"),
    "migrate": ("auto", "off"),
    "upstream_api": ("v1", "v2"),
    "allocator": ALLOCATORS,
}


class ServerConfigError(ValueError):
    """A configuration value, file or combination is invalid; the message says which."""


@dataclass(frozen=True, slots=True, repr=False)
class ServerConfig:
    """Everything the Q&A server can be told (see the module docstring for the sources).

    Attributes:
        host: Address to listen on; dev mode (no API keys) is allowed only on loopback.
        port: Port to listen on (0: any free port).
        data_dir: Directory of the database and the audit log (created if missing).
        database_url: The store's database: ``postgresql://user:password@host:port/db``
            (shared by every worker and instance), ``sqlite:///abs/path.db`` or a file path
            (default ``<data_dir>/wenxin.db``). Its password is never shown.
        database_pool_size: PostgreSQL connections of one process (the fleet opens this many
            per worker and instance).
        database_pool_timeout: Seconds a request waits for a free PostgreSQL connection
            before it is refused with 503 and ``Retry-After``.
        migrate: ``auto`` (bring the database's schema up to date at start-up, serialised
            between instances) or ``off`` (refuse to start unless it is current; apply it with
            ``wenxin db upgrade``).
        redis_url: Redis shared by every worker and instance (``redis://[:password@]host:port/db``;
            ``None``: in-memory state, one process). Its password is never logged.
        workers: Worker processes on this machine sharing the port (more than 1 needs
            ``redis_url``: limits, the resume log and cancel must be shared).
        instance_id: This process's name in a fleet (default: ``<host>:<pid>:<random>``).
        metrics_dir: A directory where every process of this machine writes its metric
            values, so that any of them answers ``/metrics`` for all (prometheus_client's
            multiprocess mode; ``--workers`` sets a temporary one when this is unset).
        redis_max_connections: Size of the Redis connection pool of one process (a request
            waits for a free connection at most ``redis_timeout``).
        redis_timeout: Seconds any Redis call may take before it counts as failed.
        lease_ttl: Seconds a concurrent-stream lease in Redis lives unless renewed (renewed
            every third of it): a killed process's slots free themselves within it.
        answer_lease_ttl: With ``redis_url``: seconds an answer's lease (its producer's claim
            on it, with a fencing token) lives unless renewed (renewed every third of it);
            once it lapses another instance takes the answer over (``_takeover``).
        takeover: With ``redis_url``: what an instance that takes over an answer whose
            producer died does with it: ``continue`` (the SDK's continue mode, where
            allowed) or ``interrupt`` (never continue: end it ``interrupted``).
        resume_window: With ``redis_url``: seconds an answer's event log stays in Redis after
            its end (a client may resume it on any instance meanwhile).
        eventlog_maxlen: With ``redis_url``: about how many events one answer's log keeps
            (``XADD … MAXLEN ~``; older ones are trimmed, a resume before them answers 410).
        on_disconnect: ``cancel`` (stop the upstream once the last client has been gone for
            ``resume_grace``) or ``drain`` (read it to its end for accounting).
        resume_grace: Seconds a stream waits for a client to reconnect (and is kept for
            resume after its end).
        ping_interval: Longest silence on an open event stream; a ``: ping`` comment fills it.
        stall_timeout: A client that accepts no bytes for this long is dropped.
        shutdown_grace: Seconds in-flight streams get to finish at shutdown.
        checkpoint_interval: Seconds between writes of the text of answers still streaming
            to the store (a crash loses at most this much of each; 0: no checkpoints).
        start_slice: Admission pacing (``_pacing``): seconds of stream-start work admitted
            between two looks of the event loop at its sockets when a burst of starts
            arrives (0.002; 0: off, every start goes on at once).
        max_body_bytes: Largest request body (and WebSocket frame) accepted.
        max_header_bytes: Largest request head (request line and headers), in bytes → 431.
        max_headers: Most header fields in one request → 431.
        header_timeout: Seconds to receive a request's head (from the connection's opening,
            or from the head's first byte on a kept-alive connection) → 408, or a plain close
            when nothing came.
        body_timeout: Seconds to receive a request's body once its head is in → 408.
        keep_alive_timeout: Whole seconds an idle kept-alive connection stays open.
        max_connections: Most open connections, WebSockets included (0: no cap) → 503.
        max_connections_per_ip: Most open connections from one client address (0: no cap)
            → 503. Behind a reverse proxy every connection has the proxy's address.
        max_answer_chars: An answer is stopped (``length``) past this many characters.
        history_turns: Most question/answer pairs of a conversation sent upstream (0: none).
        audit_questions: Also write the question text into the audit log.
        allow_dev_mode_remote: Allow dev mode (no keys) on a non-loopback address.
        default_rpm: Requests per minute per key, when the key sets none (0: unlimited).
        default_tpm: Tokens per minute per key, when the key sets none (0: unlimited).
        default_max_streams: Concurrent streams per key, when the key sets none (0: unlimited).
        default_model: Model used when a request names none (default: the SDK's).
        upstream_api: Force ERNIE's API generation (``v1``/``v2``; default: by credentials).
        upstream_base_url: v1 host (``QIANFAN_BASE_URL`` otherwise).
        upstream_v2_base_url: v2 host (``QIANFAN_CONSOLE_API_BASE_URL`` otherwise).
        upstream_bearer_token: v2 API key (``QIANFAN_BEARER_TOKEN`` otherwise). Secret.
        upstream_connect_timeout: Seconds to connect to ERNIE.
        upstream_first_token_timeout: Seconds ERNIE may take to start answering.
        upstream_idle_timeout: Longest silence inside an ERNIE stream.
        upstream_max_connections: Size of the one upstream connection pool.
        upstream_retries: Retries of a failed upstream request, only before any text came.
        upstream_emulated: Report the upstream as the emulator (``None``: as the SDK found it).
        gateway: The channels and routes (``[[channels]]`` and ``[routes]`` of the TOML file
            only; see ``_channel_config`` and docs/GATEWAY.md). ``None``: one implicit
            channel, ``default``, which the ``upstream_*`` settings describe.
        failover_attempts: Most upstream requests one answer may make across channels
            (failovers and mid-stream continuations included).
        failover_deadline: Seconds from an answer's first upstream request after which no
            other channel is tried before its first token.
        breaker_threshold: Consecutive failures that open a channel's breaker (0: never).
        breaker_cooldown: Seconds an open breaker keeps its channel out before one probe.
        admin_key: The key of the admin view (``GET /api/admin/channels``, as ``Authorization:
            Bearer …``). Secret. Unset: the admin view answers in dev mode only.
        access_log: Log every request (uvicorn's access log).
        debug: Log tracebacks of internal errors (never sent to clients).
        heap_trim: Once the load falls after a peak, return the C heap's free pages to the
            system (glibc's ``malloc_trim``, jemalloc's purge; ``server/_gc.py``).
            ``false``: never.
        allocator: Where the server's objects come from (``server/_allocator.py``):
            ``python`` (as the interpreter started: pymalloc), ``jemalloc`` (gives memory
            back after a peak; needs ``libjemalloc2``), ``malloc`` (the C library's), or
            ``auto`` (jemalloc where installed). Other than ``python``, ``wenxin serve``
            re-executes itself with the environment that selects it.
        stall_report: Seconds the event loop may run late before a watchdog thread logs
            where it was (``server/_loop_lag.py``): a diagnosis. 0: off.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    database_url: str | None = None
    database_pool_size: int = 10
    database_pool_timeout: float = 5.0
    migrate: Literal["auto", "off"] = "auto"
    redis_url: str | None = None
    workers: int = 1
    instance_id: str | None = None
    metrics_dir: Path | None = None
    redis_max_connections: int = 64
    redis_timeout: float = 1.0
    lease_ttl: float = 10.0
    answer_lease_ttl: float = 3.0
    takeover: TakeoverPolicy = "continue"
    resume_window: float = 300.0
    eventlog_maxlen: int = 10_000
    on_disconnect: DisconnectPolicy = "cancel"
    resume_grace: float = 5.0
    ping_interval: float = 15.0
    stall_timeout: float = 30.0
    shutdown_grace: float = 10.0
    checkpoint_interval: float = 1.0
    start_slice: float = DEFAULT_SLICE
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 32 << 10
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: int = 20
    max_connections: int = 10_000
    max_connections_per_ip: int = 1_000
    max_answer_chars: int = 200_000
    history_turns: int = 50
    audit_questions: bool = False
    allow_dev_mode_remote: bool = False
    default_rpm: int = 0
    default_tpm: int = 0
    default_max_streams: int = 0
    default_model: str | None = None
    upstream_api: Literal["v1", "v2"] | None = None
    upstream_base_url: str | None = None
    upstream_v2_base_url: str | None = None
    upstream_bearer_token: str | None = field(default=None)
    upstream_connect_timeout: float = 10.0
    upstream_first_token_timeout: float = 120.0
    upstream_idle_timeout: float = 60.0
    upstream_max_connections: int = 4096
    upstream_retries: int = 2
    upstream_emulated: bool | None = None
    gateway: GatewaySpec | None = None
    failover_attempts: int = 3
    failover_deadline: float = 60.0
    breaker_threshold: int = 3
    breaker_cooldown: float = 30.0
    admin_key: str | None = None
    access_log: bool = False
    debug: bool = False
    heap_trim: bool = True
    allocator: Allocator = "auto"
    stall_report: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _convert(f.name, getattr(self, f.name), "value"))
        if not 0 <= self.port <= 65535:
            raise ServerConfigError(f"port: must be in 0..65535, got {self.port}")
        if self.stall_report < 0:
            raise ServerConfigError("stall_report: must be 0 (off) or more")
        if self.start_slice < 0:
            raise ServerConfigError("start_slice: must be 0 (off) or more")
        for name in ("ping_interval", "stall_timeout", "max_body_bytes", "max_answer_chars"):
            if getattr(self, name) <= 0:
                raise ServerConfigError(f"{name}: must be greater than 0")
        for name in ("max_header_bytes", "max_headers", "header_timeout", "body_timeout"):
            if getattr(self, name) <= 0:
                raise ServerConfigError(f"{name}: must be greater than 0")
        for name in ("upstream_connect_timeout", "upstream_first_token_timeout"):
            if getattr(self, name) <= 0:
                raise ServerConfigError(f"{name}: must be greater than 0")
        if self.failover_attempts < 1 or self.failover_deadline <= 0:
            raise ServerConfigError("failover_attempts / failover_deadline: must be positive")
        if self.breaker_threshold > 0 and self.breaker_cooldown <= 0:
            raise ServerConfigError("breaker_cooldown: must be positive")
        if self.gateway is not None and not isinstance(self.gateway, GatewaySpec):
            raise ServerConfigError("gateway: channels come from the config file")
        if self.workers < 1:
            raise ServerConfigError("workers: must be at least 1")
        if self.workers > 1 and self.redis_url is None:
            raise ServerConfigError(
                f"workers: {self.workers} workers need redis_url (--redis-url): per-key limits, "
                "the resume log and cancel would otherwise live in each worker's memory, so "
                "every limit would count per worker and a resume could land on a worker that "
                "never saw the answer"
            )
        if self.database_pool_size < 1 or self.database_pool_timeout <= 0:
            raise ServerConfigError("database_pool_size / database_pool_timeout: must be positive")
        if self.redis_max_connections < 1 or self.redis_timeout <= 0:
            raise ServerConfigError("redis_max_connections / redis_timeout: must be positive")
        if not self.lease_ttl > 3 * self.redis_timeout:
            raise ServerConfigError(
                "lease_ttl: must be more than 3 × redis_timeout (a renewal every third of it "
                "must be able to fail once and still arrive in time)"
            )
        if not self.answer_lease_ttl > 2 * self.redis_timeout:
            raise ServerConfigError(
                "answer_lease_ttl: must be more than 2 × redis_timeout (renewed every third of "
                "it, a renewal must be able to fail once and still arrive in time)"
            )
        if self.resume_window <= 0 or self.eventlog_maxlen < 100:
            raise ServerConfigError("resume_window: must be positive; eventlog_maxlen: >= 100")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ServerConfigError(
                f"redis_url: expected redis://host:port/db, rediss://… or unix://…, got "
                f"{mask_url_password(self.redis_url)!r}"
            )
        if self.upstream_idle_timeout <= 0 or self.upstream_max_connections < 1:
            raise ServerConfigError("upstream_idle_timeout / upstream_max_connections: too small")
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ServerConfigError(f"{name}: must be one of {', '.join(allowed)}")

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value is not None:
                parts.append(f"{f.name}='***'")
            elif f.name in _URL_FIELDS and value is not None:
                parts.append(f"{f.name}={mask_url_password(value)!r}")
            elif value != f.default:
                parts.append(f"{f.name}={value!r}")
        return f"ServerConfig({', '.join(parts)})"

    @property
    def database(self) -> str:
        """The database URL in force."""
        return self.database_url or str(self.data_dir / "wenxin.db")

    @property
    def audit_path(self) -> Path:
        """Where the audit log is written."""
        return self.data_dir / "audit.jsonl"

    def with_overrides(self, **changes: Any) -> ServerConfig:
        """A copy with some fields changed (checked like any other config)."""
        return replace(self, **changes)

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        config_file: str | Path | None = None,
    ) -> ServerConfig:
        """Merge flags > ``WENXIN_*`` environment > TOML file > defaults (see the module
        docstring). ``config_file`` defaults to ``WENXIN_CONFIG`` when set.

        Raises:
            ServerConfigError: a value, a key or the file is invalid.
        """
        env = os.environ if environ is None else environ
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        path = config_file or env.get(ENV_PREFIX + "CONFIG") or None
        if path:
            values.update(_read_file(Path(path), names, env))
        for name in names:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw.strip():
                values[name] = _convert(name, raw.strip(), f"{ENV_PREFIX}{name.upper()}")
        for name, value in (flags or {}).items():
            if name not in names:
                raise TypeError(f"unknown server setting: {name}")
            if value is not None:
                values[name] = value
        return cls(**values)


def mask_url_password(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***`` (for logs and errors)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{path}"


def _read_file(path: Path, names: set[str], environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ServerConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ServerConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = document.get("server", document)
    if not isinstance(table, dict):
        raise ServerConfigError(f"config file {path}: [server] must be a table")
    values: dict[str, Any] = {}
    try:
        gateway = parse_gateway(document.get("channels"), document.get("routes"), environ)
    except ChannelConfigError as exc:
        raise ServerConfigError(f"config file {path}: {exc}") from None
    if gateway is not None:
        values["gateway"] = gateway
    for key, value in table.items():
        name = key.replace("-", "_")
        if key in ("server", "channels", "routes") and table is document:
            continue
        if name == "gateway":
            raise ServerConfigError(
                f"config file {path}: unknown setting {key!r} (channels are [[channels]])"
            )
        if name not in names:
            raise ServerConfigError(f"config file {path}: unknown setting {key!r}")
        values[name] = _convert(name, value, f"{path}: {key}")
    return values


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True}
_BOOL_WORDS |= {"0": False, "false": False, "no": False, "off": False}


def _kind(name: str) -> str:
    default = ServerConfig.__dataclass_fields__[name].default
    if name == "gateway":
        return "object"
    if name == "admin_key":
        return "str"
    if name in ("default_model", "database_url", "upstream_base_url", "upstream_v2_base_url"):
        return "str"
    if name in ("redis_url", "instance_id"):
        return "str"
    if name == "metrics_dir":
        return "path"
    if name in ("upstream_bearer_token", "upstream_api", "host", "on_disconnect", "migrate",
                "takeover"):  # fmt: skip
        return "str"
    if name == "upstream_emulated" or isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, Path):
        return "path"
    return "str"  # pragma: no cover - every field is listed above


def _convert(name: str, value: Any, source: str) -> Any:
    """``value`` converted to the type of field ``name`` (text is parsed), or an error that
    names ``source``."""
    if value is None:
        return None
    kind = _kind(name)
    if kind == "object":
        return value  # checked in __post_init__
    shown = redact(str(value)) if name not in _SECRET_FIELDS else "***"
    if name in _URL_FIELDS:
        shown = mask_url_password(shown)
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
                return _BOOL_WORDS[value.strip().lower()]
            raise ValueError
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            number = int(value) if isinstance(value, int) else int(str(value).strip())
            if number < 0:
                raise ValueError
            return number
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            real = float(value)
            if not math.isfinite(real) or real < 0:
                raise ValueError
            return real
        if kind == "path":
            return Path(value) if isinstance(value, str | Path) else _fail(name, source, shown)
        if not isinstance(value, str):
            raise ValueError
        if name == "host":
            return value.strip()
        return value.strip() or None
    except (ValueError, TypeError):
        _fail(name, source, shown)


def _fail(name: str, source: str, shown: str) -> Any:
    kind = _kind(name)
    wanted = {
        "bool": "true or false",
        "int": "a whole number >= 0",
        "float": "a number >= 0",
        "path": "a path",
        "str": "a string",
    }[kind]
    raise ServerConfigError(f"{name} ({source}): expected {wanted}, got {shown!r}")
