"""Who may call the emulator: OAuth tokens, v2 API keys, minted IAM bearer tokens, signatures.

Theory of operation
===================

:class:`Authenticator` holds the only mutable auth state: the OAuth access tokens it issued
and the IAM bearer tokens it minted, each with its expiry. Everything else is a decision over
the request's headers and query, returned as a value (:class:`AuthResult`) that the route
turns into its own error shape.

Two modes (``EmulatorConfig.credentials``):

- **dev mode** (default): any client id/secret gets a token, any non-empty bearer key is
  accepted, and a ``bce-auth-v1`` signature is accepted when it is well formed and its
  timestamp is in range (the secret key is unknown, so the signature itself cannot be
  checked);
- **strict mode**: only the configured apps, API keys and IAM key pairs, and signatures are
  verified with :func:`wenxin_stream._bce_auth.verify_request`.

In both modes an access token is valid only if *this* emulator issued it and it has not
expired: an unknown token is v1 error 110, an expired one 111. Clients' refresh paths (the
qianfan SDK's, ours) depend on exactly that. A minted bearer token past its expiry is likewise
refused on v2 (401 ``invalid_iam_token``).

Each accepted request carries an *identity* string (``app:<client_id>``, ``iam:<AK>``,
``key:<bearer>``, ``anonymous``) that quotas and ``times=N`` fault counters are kept per.
The token stores are bounded (:data:`MAX_TOKENS`, oldest evicted first).
"""

from __future__ import annotations

import hashlib
import secrets
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .._bce_auth import (
    ParsedAuthorization,
    parse_authorization,
    parse_bce_timestamp,
    verify_request,
)
from ._config import EmulatorConfig

MAX_TOKENS = 200_000
"""How many issued access tokens (and, separately, minted bearer tokens) are remembered."""

MAX_BEARER_TTL = 2_592_000
"""Longest lifetime a minted IAM bearer token may ask for (``expireInSeconds``)."""

DEFAULT_BEARER_TTL = 86_400
"""Lifetime of a minted bearer token when ``expireInSeconds`` is absent."""

SIGNATURE_CLOCK_SKEW = 900
"""How far in the future a signature timestamp may lie, in seconds."""


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of an auth check: an ``identity`` when accepted, else an ``error`` (a v1
    code for v1 routes, a short reason for the others). ``token`` is the access token used,
    if any (so a fault can expire it); ``app_number`` the numeric app id, if known."""

    identity: str | None
    error: int | str | None = None
    token: str | None = None
    app_number: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the request is accepted."""
        return self.identity is not None


@dataclass(slots=True)
class _Issued:
    identity: str
    app_number: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class SignatureRequest:
    """The parts of a request a ``bce-auth-v1`` signature covers."""

    method: str
    path: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]


def app_number(client_id: str) -> int:
    """A stable 8-digit numeric app id for an API Key (shown in tokens and ``appid``)."""
    return 10_000_000 + zlib.crc32(client_id.encode()) % 90_000_000


def iso_time(now: float) -> str:
    """UTC time as IAM writes it, e.g. ``2024-06-04T08:00:00Z``."""
    return datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _remember(store: dict[str, _Issued], key: str, value: _Issued) -> None:
    if len(store) >= MAX_TOKENS:
        del store[next(iter(store))]
    store[key] = value


class Authenticator:
    """Issues tokens and checks credentials for one emulator app (see the module docstring)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._tokens: dict[str, _Issued] = {}
        self._bearers: dict[str, _Issued] = {}
        self._serial = 0

    # -- OAuth ---------------------------------------------------------------------------

    def issue_token(
        self, grant_type: str, client_id: str, client_secret: str
    ) -> tuple[int, dict[str, object]]:
        """Answer ``/oauth/2.0/token``: an HTTP status and the JSON body."""
        status = self._config.oauth_error_status
        if grant_type != "client_credentials":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "The authorization grant type is not supported",
            }
        creds = self._config.credentials
        if not client_id or (creds is not None and client_id not in creds.apps):
            return status, {"error": "invalid_client", "error_description": "unknown client id"}
        if not client_secret or (creds is not None and creds.apps[client_id] != client_secret):
            return status, {
                "error": "invalid_client",
                "error_description": "Client authentication failed",
            }
        now = self._config.clock()
        ttl = self._config.token_ttl
        number = app_number(client_id)
        self._serial += 1
        expires = int(now) + ttl
        token = f"24.{secrets.token_hex(16)}.{ttl}.{expires}.{number}-{self._serial}"
        _remember(self._tokens, token, _Issued(f"app:{client_id}", number, now + ttl))
        refresh_exp = int(now) + 315_360_000
        refresh = f"25.{secrets.token_hex(16)}.315360000.{refresh_exp}.{number}-{self._serial}"
        return 200, {
            "refresh_token": refresh,
            "expires_in": ttl,
            "session_key": secrets.token_hex(24),
            "access_token": token,
            "scope": "public brain_all_scope wenxinworkshop_mgr ai_custom_yiyan_com",
            "session_secret": secrets.token_hex(16),
        }

    def check_access_token(self, token: str) -> AuthResult:
        """Check a v1 ``access_token``: 110 if never issued here, 111 if expired."""
        issued = self._tokens.get(token)
        if issued is None:
            return AuthResult(None, 110)
        if issued.expires_at <= self._config.clock():
            return AuthResult(None, 111)
        return AuthResult(issued.identity, token=token, app_number=issued.app_number)

    def expire_token(self, token: str | None) -> None:
        """Make an issued access token or minted bearer token expire now (fault
        ``expire_token=1``)."""
        if token is None:
            return
        now = self._config.clock()
        for store in (self._tokens, self._bearers):
            issued = store.get(token)
            if issued is not None:
                issued.expires_at = min(issued.expires_at, now)

    # -- signatures ------------------------------------------------------------------------

    def check_signature(self, auth: ParsedAuthorization, request: SignatureRequest) -> bool:
        """Whether a parsed ``bce-auth-v1`` signature is acceptable (see the module docstring
        for what dev mode can and cannot check)."""
        now = self._config.clock()
        creds = self._config.credentials
        if creds is None:
            try:
                signed_at = parse_bce_timestamp(auth.timestamp)
            except ValueError:
                return False
            return signed_at + auth.expiration >= now and signed_at <= now + SIGNATURE_CLOCK_SKEW
        secret = creds.iam.get(auth.access_key)
        if secret is None:
            return False
        return verify_request(
            auth,
            secret,
            request.method,
            request.path,
            request.query,
            request.headers,
            now=now,
        )

    # -- v1 -------------------------------------------------------------------------------

    def check_v1(self, query: Mapping[str, str], request: SignatureRequest) -> AuthResult:
        """Authenticate a v1 chat request: ``access_token`` in the query, else a
        ``bce-auth-v1`` signature (error 14 when rejected), else ``no_auth`` or error 110."""
        token = query.get("access_token")
        if token is not None:
            return self.check_access_token(token)
        header = request.headers.get("authorization", "")
        if header.startswith("bce-auth-v1/"):
            parsed = parse_authorization(header)
            if parsed is None or not self.check_signature(parsed, request):
                return AuthResult(None, 14)
            return AuthResult(f"iam:{parsed.access_key}")
        if self._config.no_auth:
            return AuthResult("anonymous")
        return AuthResult(None, 110)

    # -- v2 -------------------------------------------------------------------------------

    def check_v2(self, request: SignatureRequest) -> AuthResult:
        """Authenticate a v2 request: ``Authorization: Bearer KEY`` (API key or minted token)
        or a ``bce-auth-v1`` signature; the error is ``"invalid_iam_token"`` or
        ``"invalid_appid"``."""
        result = self._check_v2_key(request)
        if result.ok:
            creds = self._config.credentials
            appid = request.headers.get("appid")
            if (
                creds is not None
                and creds.appids
                and appid is not None
                and appid not in creds.appids
            ):
                return AuthResult(None, "invalid_appid")
        return result

    def _check_v2_key(self, request: SignatureRequest) -> AuthResult:
        header = request.headers.get("authorization", "").strip()
        if not header:
            if self._config.no_auth:
                return AuthResult("anonymous")
            return AuthResult(None, "invalid_iam_token")
        if header.startswith("bce-auth-v1/"):
            parsed = parse_authorization(header)
            if parsed is None or not self.check_signature(parsed, request):
                return AuthResult(None, "invalid_iam_token")
            return AuthResult(f"iam:{parsed.access_key}")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or key.startswith("24."):
            # A v1 OAuth access token as the bearer: Baidu answers 401 (ERNIE-CURRENT §6.3).
            return AuthResult(None, "invalid_iam_token")
        minted = self._bearers.get(key)
        if minted is not None:
            if minted.expires_at <= self._config.clock():
                return AuthResult(None, "invalid_iam_token")
            return AuthResult(minted.identity, token=key)
        creds = self._config.credentials
        if creds is not None and key not in creds.api_keys:
            return AuthResult(None, "invalid_iam_token")
        return AuthResult(f"key:{key}", token=key)

    # -- IAM ------------------------------------------------------------------------------

    def check_iam(self, request: SignatureRequest) -> AuthResult:
        """Authenticate a console/IAM request, which must be ``bce-auth-v1`` signed. The
        error is a BCE error code: ``AccessDenied`` (no signature), ``InvalidAccessKeyId``
        (strict mode, unknown AK) or ``SignatureDoesNotMatch``."""
        parsed = parse_authorization(request.headers.get("authorization", ""))
        if parsed is None:
            return AuthResult(None, "AccessDenied")
        creds = self._config.credentials
        if creds is not None and parsed.access_key not in creds.iam:
            return AuthResult(None, "InvalidAccessKeyId")
        if not self.check_signature(parsed, request):
            return AuthResult(None, "SignatureDoesNotMatch")
        return AuthResult(f"iam:{parsed.access_key}")

    def mint_bearer(self, identity: str, ttl: int) -> dict[str, object]:
        """Mint an IAM bearer token for an authenticated IAM identity; returns the IAM body."""
        now = self._config.clock()
        alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        access = "".join(secrets.choice(alnum) for _ in range(20))
        token = f"bce-v3/ALTAK-{access}/{secrets.token_hex(20)}"
        _remember(self._bearers, token, _Issued(identity, 0, now + ttl))
        return {
            "userId": hashlib.md5(identity.encode(), usedforsecurity=False).hexdigest(),
            "token": token,
            "status": "enable",
            "createTime": iso_time(now),
            "expireTime": iso_time(now + ttl),
        }
