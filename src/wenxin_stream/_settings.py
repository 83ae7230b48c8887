"""Configuration: credentials, hosts and limits, from arguments or the ``QIANFAN_*`` environment,
read once, at the edge.

Theory of operation
-------------------
:class:`Settings` is an immutable value. :meth:`Settings.from_env` builds it from explicit
arguments and an environment mapping (``os.environ`` unless given), so nothing below the edge
reads the environment and tests pass a plain dict. The variable names are qianfan's
(``shared/ERNIE-PROTOCOL.md`` §3.1), so a shell configured for the official SDK configures this
one too. The one exception is what qianfan has no name for: an OpenAI-compatible server
(``api="openai"``: vLLM, FastDeploy… serving ERNIE 4.5) is ours, under the ``WENXIN_`` prefix
the server's settings use — ``WENXIN_OPENAI_BASE_URL`` and ``WENXIN_OPENAI_API_KEY``. They are
separate from the Qianfan credentials on purpose: a Baidu key is never sent to such a server.

Rules:

- an explicit argument wins over the environment; an argument of ``None`` counts as not
  given (to ignore the environment entirely, construct ``Settings(...)`` directly or pass
  ``environ={}``);
- a blank value (empty or whitespace) counts as unset; values are stripped;
- base URLs must be ``http``/``https`` URLs with a host and without credentials, query or
  fragment; trailing slashes are removed;
- numbers are validated; ``0`` for a rate limit means "off", as in qianfan; QPS and RPM
  exclude each other.

Any violation raises :class:`ConfigurationError` (a :class:`ValueError` and a
:class:`~wenxin_stream.WenxinError`) naming the variable, never echoing a secret. ``repr``
masks every secret field.

Which API: :meth:`Settings.default_api` prefers v2 (Baidu's current generation) whenever v2
credentials exist, i.e. a ``bearer_token`` or the IAM ``access_key`` + ``iam_secret_key`` pair
(from which a bearer token is minted); otherwise v1 when there is an OAuth ``api_key`` +
``secret_key`` pair or a fixed ``access_token``; with no credentials at all, v2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from ._exceptions import ConfigurationError
from ._redact import redact
from ._retry import RetryPolicy

__all__ = ["ENV_VARS", "SECRET_FIELDS", "Settings"]

ENV_VARS: Mapping[str, str] = {
    "api_key": "QIANFAN_AK",
    "secret_key": "QIANFAN_SK",
    "access_token": "QIANFAN_ACCESS_TOKEN",
    "access_key": "QIANFAN_ACCESS_KEY",
    "iam_secret_key": "QIANFAN_SECRET_KEY",
    "bearer_token": "QIANFAN_BEARER_TOKEN",
    "app_id": "QIANFAN_APP_ID",
    "base_url": "QIANFAN_BASE_URL",
    "console_api_base_url": "QIANFAN_CONSOLE_API_BASE_URL",
    "iam_base_url": "QIANFAN_IAM_BASE_URL",
    "qps_limit": "QIANFAN_QPS_LIMIT",
    "rpm_limit": "QIANFAN_RPM_LIMIT",
    "tpm_limit": "QIANFAN_TPM_LIMIT",
    "max_attempts": "QIANFAN_LLM_API_RETRY_COUNT",
    "retry_initial_delay": "QIANFAN_LLM_API_RETRY_BACKOFF_FACTOR",
    "retry_jitter": "QIANFAN_LLM_API_RETRY_JITTER",
    "retry_max_delay": "QIANFAN_LLM_API_RETRY_MAX_WAIT_INTERVAL",
    "bearer_token_lifetime": "QIANFAN_BEARER_TOKEN_EXPIRED_INTERVAL",
    "openai_base_url": "WENXIN_OPENAI_BASE_URL",
    "openai_api_key": "WENXIN_OPENAI_API_KEY",
}
"""The environment variable of each :class:`Settings` field."""

SECRET_FIELDS = frozenset(
    {
        "api_key",
        "secret_key",
        "access_token",
        "access_key",
        "iam_secret_key",
        "bearer_token",
        "openai_api_key",
    }
)
"""The fields ``repr`` masks."""

_URL_FIELDS = ("base_url", "console_api_base_url", "iam_base_url")
_OPTIONAL_URL_FIELDS = ("openai_base_url",)
_INT_FIELDS = ("rpm_limit", "tpm_limit", "max_attempts", "bearer_token_lifetime")
_FLOAT_FIELDS = ("qps_limit", "retry_initial_delay", "retry_jitter", "retry_max_delay")
_OFF_WHEN_ZERO = ("qps_limit", "rpm_limit", "tpm_limit")
_POSITIVE = ("max_attempts", "bearer_token_lifetime")


def _invalid(field: str, problem: str) -> ConfigurationError:
    """The :class:`ConfigurationError` for ``field``, naming its environment variable."""
    return ConfigurationError(field, problem, variable=ENV_VARS.get(field))


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Credentials, hosts and limits for the clients. Read the module docstring for the rules.

    Attributes:
        api_key: v1 OAuth client id, the app's API Key (``QIANFAN_AK``).
        secret_key: v1 OAuth client secret, the app's Secret Key (``QIANFAN_SK``).
        access_token: A fixed v1 access token, used as is and never refreshed
            (``QIANFAN_ACCESS_TOKEN``).
        access_key: Account IAM Access Key (``QIANFAN_ACCESS_KEY``).
        iam_secret_key: Account IAM Secret Key (``QIANFAN_SECRET_KEY``).
        bearer_token: v2 API key ``bce-v3/ALTAK-…/…`` (``QIANFAN_BEARER_TOKEN``).
        app_id: v2 ``appid`` header (``QIANFAN_APP_ID``).
        base_url: v1 chat and OAuth host (``QIANFAN_BASE_URL``).
        console_api_base_url: v2 chat host (``QIANFAN_CONSOLE_API_BASE_URL``).
        iam_base_url: IAM host for minting bearer tokens (``QIANFAN_IAM_BASE_URL``).
        qps_limit: Client-side requests per second (``QIANFAN_QPS_LIMIT``; 0/None: off).
        rpm_limit: Client-side requests per minute (``QIANFAN_RPM_LIMIT``; 0/None: off).
        tpm_limit: Client-side tokens per minute (``QIANFAN_TPM_LIMIT``; 0/None: off).
        max_attempts: Total attempts per request (``QIANFAN_LLM_API_RETRY_COUNT``).
        retry_initial_delay: First backoff, seconds (``QIANFAN_LLM_API_RETRY_BACKOFF_FACTOR``).
        retry_jitter: Backoff jitter, seconds (``QIANFAN_LLM_API_RETRY_JITTER``).
        retry_max_delay: Backoff cap, seconds (``QIANFAN_LLM_API_RETRY_MAX_WAIT_INTERVAL``).
        bearer_token_lifetime: Lifetime to ask for minted IAM bearer tokens, seconds
            (``QIANFAN_BEARER_TOKEN_EXPIRED_INTERVAL``).
        openai_base_url: An OpenAI-compatible server's base URL, ending in ``/v1``
            (``WENXIN_OPENAI_BASE_URL``; used with ``api="openai"`` only).
        openai_api_key: That server's API key, if it wants one (``WENXIN_OPENAI_API_KEY``).

    The retry fields left ``None`` take :class:`~wenxin_stream._retry.RetryPolicy`'s defaults.
    """

    api_key: str | None = None
    secret_key: str | None = None
    access_token: str | None = None
    access_key: str | None = None
    iam_secret_key: str | None = None
    bearer_token: str | None = None
    app_id: str | None = None
    base_url: str = "https://aip.baidubce.com"
    console_api_base_url: str = "https://qianfan.baidubce.com"
    iam_base_url: str = "https://iam.bj.baidubce.com"
    qps_limit: float | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_attempts: int | None = None
    retry_initial_delay: float | None = None
    retry_jitter: float | None = None
    retry_max_delay: float | None = None
    bearer_token_lifetime: int = 43200
    openai_base_url: str | None = None
    openai_api_key: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _URL_FIELDS:
                object.__setattr__(self, f.name, _url(f.name, value))
            elif f.name in _OPTIONAL_URL_FIELDS:
                blank = value is None or (isinstance(value, str) and not value.strip())
                object.__setattr__(self, f.name, None if blank else _url(f.name, value))
            elif f.name in _INT_FIELDS or f.name in _FLOAT_FIELDS:
                object.__setattr__(self, f.name, _number(f.name, value))
            elif isinstance(value, str) and not value.strip():
                object.__setattr__(self, f.name, None)
            elif value is not None and not isinstance(value, str):
                raise _invalid(f.name, f"expected a string, got {type(value).__name__}")
            elif value is not None:
                object.__setattr__(self, f.name, value.strip())
        if self.qps_limit is not None and self.rpm_limit is not None:
            raise _invalid("rpm_limit", "set a QPS limit or an RPM limit, not both")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from explicit ``overrides`` (field names; ``None`` = not given) over the
        environment ``environ`` (default ``os.environ``), over the defaults."""
        unknown = set(overrides) - set(ENV_VARS)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            value = overrides.get(name)
            if value is None:
                raw = env.get(var)
                value = raw.strip() if raw is not None and raw.strip() else None
            if value is not None:
                values[name] = value
        return cls(**values)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value is not None:
                parts.append(f"{f.name}='***'")
            elif value != f.default or f.name in _URL_FIELDS:
                parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    def has_credentials(self) -> bool:
        """Whether any complete credential is set: an OAuth key pair, a fixed access token,
        an IAM key pair or a bearer token."""
        return bool(
            (self.api_key and self.secret_key)
            or self.access_token
            or (self.access_key and self.iam_secret_key)
            or self.bearer_token
        )

    def default_api(self) -> Literal["v1", "v2"]:
        """``"v2"`` with a bearer token or an IAM key pair; else ``"v1"`` with an OAuth key
        pair or a fixed access token; else ``"v2"`` (see the module docstring)."""
        if self.bearer_token or (self.access_key and self.iam_secret_key):
            return "v2"
        if (self.api_key and self.secret_key) or self.access_token:
            return "v1"
        return "v2"

    def retry_policy(self) -> RetryPolicy:
        """The :class:`~wenxin_stream._retry.RetryPolicy` these settings describe."""
        d = RetryPolicy()
        return RetryPolicy(
            max_attempts=d.max_attempts if self.max_attempts is None else self.max_attempts,
            initial_delay=d.initial_delay if (v := self.retry_initial_delay) is None else v,
            jitter=d.jitter if (j := self.retry_jitter) is None else j,
            max_delay=d.max_delay if (m := self.retry_max_delay) is None else m,
        )


def _url(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(name, "a base URL is required")
    text = value.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise _invalid(name, "not a valid URL") from None
    if "@" in parts.netloc:
        raise _invalid(name, "credentials do not belong in a base URL")
    shown = redact(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _invalid(name, f"expected an http(s) URL with a host, got {shown!r}")
    if "?" in text or "#" in text:
        raise _invalid(name, f"a base URL has no query or fragment, got {shown!r}")
    return text


def _number(name: str, value: object) -> int | float | None:
    if value is None:
        return None
    integral = name in _INT_FIELDS
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            raise _invalid(name, f"expected a number, got {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(name, f"expected a finite number, got {value!r}")
    if value < 0:
        raise _invalid(name, f"must not be negative, got {value!r}")
    if integral and value != int(value):
        raise _invalid(name, f"expected a whole number, got {value!r}")
    if name in _POSITIVE and value == 0:
        raise _invalid(name, "must be at least 1")
    if name in _OFF_WHEN_ZERO and value == 0:
        return None
    return int(value) if integral else float(value)
