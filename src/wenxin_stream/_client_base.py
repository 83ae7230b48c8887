"""What the sync and async clients share: configuration, credentials, per-call cores. No I/O.

A client is configured once, from arguments or the environment (qianfan's variable names,
``_settings``). From the credentials present it picks the API generation and an
authentication strategy (``_credentials``):

=================================================  ====  ===================
credentials                                        API   strategy
=================================================  ====  ===================
``bearer_token`` (``QIANFAN_BEARER_TOKEN``)        v2    V2Bearer
``access_key`` + ``secret_access_key`` (IAM)       v2    V2IAMBearer (mint)
``access_token`` (``QIANFAN_ACCESS_TOKEN``)        v1    FixedV1Token
``api_key`` + ``secret_key`` (``QIANFAN_AK/SK``)   v1    V1OAuth
``access_key`` + ``secret_access_key``, api="v1"   v1    V1Signature
none at all                                        v2    the embedded emulator
``api="openai"``, ``api_key`` (optional)           openai  OpenAIBearer / NoAuth
=================================================  ====  ===================

``api=`` forces a generation when the credentials allow both. ``api="openai"`` is another kind
of upstream: any OpenAI-compatible server (vLLM, FastDeploy, SGLang, Ollama serving ERNIE 4.5,
``shared/ERNIE-CURRENT.md`` §7). Its ``base_url`` (or ``WENXIN_OPENAI_BASE_URL``) ends in
``/v1`` and is required, requests go to ``{base_url}/chat/completions``, and ``api_key`` (or
``WENXIN_OPENAI_API_KEY``) is that server's key, sent as a bearer token only when given —
never a Qianfan credential from the environment. Events, errors, retries and continue mode
are those of v2; ``model`` must name what the server serves. With no credentials at all the
client talks to the embedded offline emulator (``_embedded``) and says so — with a warning in
the log and ``client.emulated`` — unless ``emulator=False``, which makes missing credentials an
error instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from ._clock import Clock, wall_clock
from ._credentials import (
    Authenticator,
    FixedV1Token,
    NoAuth,
    OpenAIBearer,
    V1OAuth,
    V1Signature,
    V2Bearer,
    V2IAMBearer,
)
from ._events import ChatResult, EndReason, Usage
from ._exceptions import ConfigurationError, MissingCredentialsError
from ._models import DEFAULT_MODEL
from ._ratelimit import RateLimits
from ._retry import RetryPolicy
from ._settings import Settings
from ._stream_core import ApiName, AttemptUsage, ChatCall, StreamCore
from ._timeouts import Timeout
from ._tokens import TokenCache, cache_key
from ._transport import Limits

logger = logging.getLogger("wenxin_stream")

DEFAULT_V2_MODEL = "ernie-lite-8k"
"""The default v2 model (as in the qianfan SDK)."""

EMULATOR_NOTICE = (
    "no ERNIE credentials configured (QIANFAN_BEARER_TOKEN, QIANFAN_AK/QIANFAN_SK, "
    "QIANFAN_ACCESS_KEY/QIANFAN_SECRET_KEY or QIANFAN_ACCESS_TOKEN): answers come from the "
    "embedded OFFLINE EMULATOR, not from Baidu"
)


SleepT = TypeVar("SleepT")
"""The type of a client's sleep: ``Sleep`` (sync) or ``AsyncSleep`` (async)."""


def _retry_policy(retry: RetryPolicy | int | None, settings: Settings) -> RetryPolicy:
    if retry is None:
        return settings.retry_policy()  # QIANFAN_LLM_API_RETRY_* or the defaults
    if isinstance(retry, RetryPolicy):
        return retry
    if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
        raise ValueError("retry must be a RetryPolicy or the number of retries (>= 0)")
    return RetryPolicy(max_attempts=retry + 1)


def choose_auth(
    settings: Settings, api: ApiName | None
) -> tuple[ApiName, str, Authenticator] | None:
    """The (API, base URL, strategy) the credentials allow, honouring ``api``; None if none."""
    s = settings
    v2: Authenticator | None = None
    if s.bearer_token:
        v2 = V2Bearer(s.bearer_token, s.app_id)
    elif s.access_key and s.iam_secret_key:
        v2 = V2IAMBearer(s.access_key, s.iam_secret_key, s.iam_base_url, app_id=s.app_id)
    v1: Authenticator | None = None
    if s.access_token:
        v1 = FixedV1Token(s.access_token)
    elif s.api_key and s.secret_key:
        v1 = V1OAuth(s.api_key, s.secret_key, s.base_url)
    elif s.access_key and s.iam_secret_key:
        v1 = V1Signature(s.access_key, s.iam_secret_key)
    if api == "v1" or (api is None and v2 is None):
        return None if v1 is None else ("v1", s.base_url, v1)
    return None if v2 is None else ("v2", s.console_api_base_url, v2)


class ClientBase(Generic[SleepT]):
    """Configuration and per-call logic shared by :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        secret_key: str | None = None,
        access_token: str | None = None,
        access_key: str | None = None,
        secret_access_key: str | None = None,
        bearer_token: str | None = None,
        app_id: str | None = None,
        base_url: str | None = None,
        v2_base_url: str | None = None,
        iam_base_url: str | None = None,
        api: ApiName | None = None,
        model: str | None = None,
        timeout: Timeout | float | None = None,
        retry: RetryPolicy | int | None = None,
        limits: Limits | None = None,
        qps: float | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        rate_limit_wait: float = 30.0,
        continue_on_error: bool = False,
        token_cache: str | None = None,
        emulator: bool | None = None,
        transport: Any = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        sleep: SleepT | None = None,
    ) -> None:
        """Configure a client. All arguments are keyword-only and optional.

        Credentials: ``api_key``/``secret_key`` (v1 app keys, exchanged for OAuth tokens),
        ``access_token`` (a fixed v1 token), ``access_key``/``secret_access_key`` (IAM),
        ``bearer_token`` (v2 API key), ``app_id`` (v2 ``appid``); hosts: ``base_url`` (v1 +
        OAuth), ``v2_base_url``, ``iam_base_url`` — each defaulting to its ``QIANFAN_*``
        variable in ``environ`` (default ``os.environ``). ``api`` forces "v1" or "v2", or
        picks "openai": an OpenAI-compatible server at ``base_url`` (ending in ``/v1``) with
        the optional key ``api_key`` (see the module docstring); ``model`` is the default
        model. ``timeout``: a :class:`~wenxin_stream.Timeout` or
        seconds; ``retry``: a :class:`~wenxin_stream.RetryPolicy` or a number of retries;
        ``limits``: the connection pool's :class:`~wenxin_stream.Limits`; ``qps``/``rpm``/
        ``tpm`` and ``rate_limit_wait``: client-side rate limits; ``continue_on_error``:
        continue mode; ``token_cache``: a directory for the owner-only token cache;
        ``emulator``: ``None`` uses the embedded emulator when no credentials are set,
        ``True`` always, ``False`` never; ``transport``: a custom transport (tests).

        Time: ``clock`` (default ``time.monotonic``) is the monotonic clock every timeout,
        retry deadline, rate-limit window and stream timing is measured on, and token
        lifetimes follow it (see ``_clock.wall_clock``); ``sleep`` (default ``time.sleep`` for
        :class:`Client`, ``asyncio.sleep`` for :class:`AsyncClient`) is how the client waits
        for a retry or a rate-limit slot. Inject a :class:`~wenxin_stream._clock.FakeClock`
        and its ``sleep`` / ``asleep`` in tests: nothing then waits for real.

        The sync and async clients differ only in the hooks :meth:`_new_transport`,
        :meth:`_new_limiter`, :meth:`_new_token_manager`, :meth:`_new_chat` and
        :meth:`_default_sleep`."""
        if api == "openai":
            self._init_openai(base_url, api_key, model, environ)
        else:
            self._init_ernie(
                api_key=api_key,
                secret_key=secret_key,
                access_token=access_token,
                access_key=access_key,
                secret_access_key=secret_access_key,
                bearer_token=bearer_token,
                app_id=app_id,
                base_url=base_url,
                v2_base_url=v2_base_url,
                iam_base_url=iam_base_url,
                api=api,
                model=model,
                emulator=emulator,
                environ=environ,
            )
        settings = self.settings
        self.timeout = Timeout.of(timeout)
        self.retry = _retry_policy(retry, settings)
        self.continue_on_error = continue_on_error
        self._clock: Clock = time.monotonic if clock is None else clock
        self._wall: Clock = wall_clock(clock)
        self._sleep: SleepT = self._default_sleep() if sleep is None else sleep
        self._transport = transport if transport is not None else self._new_transport(limits)
        self._limiter = self._new_limiter(self._rate_limits(qps, rpm, tpm), rate_limit_wait)
        self._tokens = None
        if self._auth.needs_token:
            cache = TokenCache(token_cache) if token_cache is not None else None
            key = self._cache_key() if cache is not None else None
            self._tokens = self._new_token_manager(cache, key)
        self.chat = self._new_chat()

    def _init_openai(
        self,
        base_url: str | None,
        api_key: str | None,
        model: str | None,
        environ: Mapping[str, str] | None,
    ) -> None:
        """An OpenAI-compatible upstream: its base URL and optional key, nothing of Qianfan's."""
        settings = Settings.from_env(
            environ,
            openai_base_url=base_url,
            openai_api_key=api_key,
        )
        if settings.openai_base_url is None:
            raise ConfigurationError(
                "openai_base_url",
                "api='openai' needs the server's base URL, e.g. http://127.0.0.1:8000/v1 "
                "(base_url= or WENXIN_OPENAI_BASE_URL)",
                variable="WENXIN_OPENAI_BASE_URL",
            )
        key = settings.openai_api_key
        self.emulated = False
        self.api: ApiName = "openai"
        self.base_url: str = settings.openai_base_url
        self._auth: Authenticator = OpenAIBearer(key) if key else NoAuth()
        self.settings = settings
        self.model = model or ""

    def _init_ernie(
        self,
        *,
        api_key: str | None,
        secret_key: str | None,
        access_token: str | None,
        access_key: str | None,
        secret_access_key: str | None,
        bearer_token: str | None,
        app_id: str | None,
        base_url: str | None,
        v2_base_url: str | None,
        iam_base_url: str | None,
        api: ApiName | None,
        model: str | None,
        emulator: bool | None,
        environ: Mapping[str, str] | None,
    ) -> None:
        """A Qianfan upstream (v1 or v2), or the embedded emulator (see the module docstring)."""
        overrides = {
            "api_key": api_key,
            "secret_key": secret_key,
            "access_token": access_token,
            "access_key": access_key,
            "iam_secret_key": secret_access_key,
            "bearer_token": bearer_token,
            "app_id": app_id,
            "base_url": base_url,
            "console_api_base_url": v2_base_url,
            "iam_base_url": iam_base_url,
        }
        settings = Settings.from_env(
            environ, **{k: v for k, v in overrides.items() if v is not None}
        )
        if api not in (None, "v1", "v2"):
            raise ValueError("api must be 'v1', 'v2' or 'openai'")
        found = choose_auth(settings, api) if emulator is not True else None
        self.emulated = found is None
        if found is not None:
            chosen = found
        else:
            if emulator is False or (settings.has_credentials() and emulator is None):
                raise MissingCredentialsError(
                    f"no credentials for API {api or 'v1/v2'}: set QIANFAN_BEARER_TOKEN (v2), "
                    "QIANFAN_AK and QIANFAN_SK (v1), or QIANFAN_ACCESS_KEY and "
                    "QIANFAN_SECRET_KEY (IAM)"
                )
            from ._embedded import embedded_emulator_url

            logger.warning(EMULATOR_NOTICE)
            url = embedded_emulator_url()
            if api == "v1":
                chosen = ("v1", url, V1OAuth("wenxin-emulator", "offline", url))
            else:
                chosen = ("v2", url, V2Bearer("bce-v3/ALTAK-wenxin-emulator/offline"))
        self.api = chosen[0]
        self.base_url = chosen[1]
        self._auth = chosen[2]
        self.settings = settings
        self.model = model or (DEFAULT_MODEL if self.api == "v1" else DEFAULT_V2_MODEL)

    @property
    def stale_resends(self) -> int:
        """Requests the transport sent once more, at once, on a new connection after a stale
        kept-alive connection failed them before any byte of the answer (not retries of the
        retry policy; 0 for a transport that does not count them, such as the mocks)."""
        return int(getattr(self._transport, "stale_resends", 0))

    def _new_chat(self) -> Any:
        raise NotImplementedError

    def _new_transport(self, limits: Limits | None) -> Any:
        raise NotImplementedError

    def _new_limiter(self, limits: RateLimits, max_wait: float) -> Any:
        raise NotImplementedError

    def _new_token_manager(self, cache: TokenCache | None, key: str | None) -> Any:
        raise NotImplementedError

    def _default_sleep(self) -> SleepT:
        raise NotImplementedError

    def _cache_key(self) -> str | None:
        auth: Any = self._auth
        api_key = getattr(auth, "api_key", None) or getattr(auth, "access_key", None)
        return cache_key(api_key, self.base_url) if api_key else None

    def __repr__(self) -> str:
        mode = "emulated" if self.emulated else type(self._auth).__name__
        return f"{type(self).__name__}(api={self.api!r}, model={self.model!r}, auth={mode})"

    def _rate_limits(self, qps: float | None, rpm: int | None, tpm: int | None) -> RateLimits:
        """The client-side limits: the arguments, else ``QIANFAN_QPS/RPM/TPM_LIMIT``."""
        if qps is None and rpm is None and tpm is None:
            s = self.settings
            return RateLimits(qps=s.qps_limit, rpm=s.rpm_limit, tpm=s.tpm_limit)
        return RateLimits(qps=qps, rpm=rpm, tpm=tpm)

    def _core(
        self,
        messages: Sequence[Mapping[str, Any]] | str,
        *,
        model: str | None,
        endpoint: str | None,
        stream: bool,
        params: Mapping[str, Any],
        extra_body: Mapping[str, Any] | None = None,
        continue_on_error: bool | None = None,
    ) -> StreamCore:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        call = ChatCall(
            api=self.api,
            model=None if (endpoint and not model) else (model or self.model),
            messages=tuple(messages),
            params=dict(params),
            endpoint=endpoint,
            stream=stream,
            extra_body=extra_body,
        )
        return StreamCore(
            call,
            base_url=self.base_url,
            auth=self._auth,
            retry=self.retry,
            timeout=self.timeout,
            continue_mode=(
                self.continue_on_error if continue_on_error is None else continue_on_error
            ),
            clock=self._clock,
        )


class StreamView:
    """The read-only view of a running or finished stream, shared by both stream classes."""

    _core: StreamCore

    def snapshot(self) -> ChatResult:
        """The answer as delivered so far (the whole answer once the stream has ended),
        without consuming anything."""
        return self._core.result()

    @property
    def end_reason(self) -> EndReason | None:
        """How the stream ended; ``None`` while it is still running."""
        return self._core.end_reason

    @property
    def text(self) -> str:
        """The text delivered so far."""
        return self._core.text

    @property
    def reasoning(self) -> str:
        """The reasoning ("deep thinking") text delivered so far."""
        return self._core.accumulator.reasoning

    @property
    def usage(self) -> Usage | None:
        """Token usage as reported at the end of the answer (``None`` before)."""
        return self._core.result().usage

    @property
    def attempt_usages(self) -> Sequence[AttemptUsage]:
        """What each upstream request of this stream cost, one entry per request that
        generated something (retries and continue mode make several; see
        :class:`~wenxin_stream._stream_core.AttemptUsage`): the usage the upstream reported
        for that request, or ``None`` and the estimate to count instead. Complete once the
        stream has ended."""
        return tuple(self._core.attempt_usages)

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds from sending the request to the first text."""
        return self._core.time_to_first_token

    @property
    def elapsed(self) -> float:
        """Seconds from sending the request to the end (or to now)."""
        return self._core.elapsed

    @property
    def response_headers(self) -> Mapping[str, str]:
        """Headers of the last response (lower-case names)."""
        return self._core.response_headers
