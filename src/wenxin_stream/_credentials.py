"""How a request is authenticated, for each kind of ERNIE credential. Pure: no I/O.

=====================  =====  ==========================================================
strategy               API    what it adds to a request
=====================  =====  ==========================================================
``NoAuth``             any    nothing (a local emulator with ``--no-auth``)
``FixedV1Token``       v1     ``?access_token=`` — a token the caller obtained; never refreshed
``V1OAuth``            v1     ``?access_token=`` — fetched with API Key / Secret Key from
                              ``/oauth/2.0/token``, refreshed ahead of expiry and on 110/111
``V1Signature``        v1     ``Authorization: bce-auth-v1/…`` — IAM Access Key / Secret Key
``V2Bearer``           v2     ``Authorization: Bearer bce-v3/…`` — an API key
``V2IAMBearer``        v2     ``Authorization: Bearer …`` — minted at IAM ``/v1/BCE-BEARER/token``
                              with a signed request, refreshed ahead of expiry
``OpenAIBearer``       openai ``Authorization: Bearer <key>`` — an OpenAI-compatible server's
                              key (vLLM ``--api-key``); no key at all is ``NoAuth``
=====================  =====  ==========================================================

Strategies that need a token describe the request that fetches it (:meth:`token_request`) and
how to read the answer (:meth:`parse_token`); the clients' token managers do the fetching, so
the sync and async clients share all of this. No strategy's repr, and no error it raises,
contains a secret.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

from ._bce_auth import bce_timestamp, sign_request
from ._exceptions import MalformedResponseError, api_error_from_oauth, api_error_from_v2
from ._requests import build_oauth_token_query
from ._tokens import AccessToken
from ._transport import HTTPRequest

IAM_TOKEN_PATH = "/v1/BCE-BEARER/token"  # noqa: S105 (a path)
SIGNATURE_LIFETIME = 1800
"""Seconds a bce-auth-v1 signature stays valid (erniebot's choice; qianfan uses 300)."""


def with_query(url: str, pairs: tuple[tuple[str, str], ...]) -> str:
    """``url`` with ``pairs`` appended to its query string."""
    if not pairs:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(pairs)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _signed(request: HTTPRequest, access_key: str, secret_key: str, now: float) -> HTTPRequest:
    parts = urlsplit(request.url)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    headers["Host"] = parts.netloc
    headers["x-bce-date"] = bce_timestamp(now)
    headers.setdefault("Content-Type", "application/json")
    query = parse_qsl(parts.query, keep_blank_values=True)
    headers["Authorization"] = sign_request(
        access_key,
        secret_key,
        request.method,
        parts.path or "/",
        query,
        headers,
        now=now,
        expiration=SIGNATURE_LIFETIME,
        signed_headers=("host", "content-type", "x-bce-date"),
    )
    return HTTPRequest(request.method, request.url, headers, request.body)


@dataclass(frozen=True, slots=True)
class NoAuth:
    """No credentials at all (an emulator started with ``--no-auth``)."""

    api: str = "any"
    needs_token: bool = False

    def authorize(self, request: HTTPRequest, token: AccessToken | None, now: float) -> HTTPRequest:
        """Return ``request`` unchanged."""
        return request


@dataclass(frozen=True, slots=True)
class FixedV1Token:
    """A v1 access token obtained elsewhere (``QIANFAN_ACCESS_TOKEN``); never refreshed."""

    token: str = field(repr=False)
    api: str = "v1"
    needs_token: bool = False

    def authorize(self, request: HTTPRequest, token: AccessToken | None, now: float) -> HTTPRequest:
        """Add ``?access_token=``."""
        url = with_query(request.url, (("access_token", self.token),))
        return HTTPRequest(request.method, url, request.headers, request.body)


@dataclass(frozen=True, slots=True)
class V1OAuth:
    """v1 API Key + Secret Key, exchanged for access tokens at ``{base_url}/oauth/2.0/token``."""

    api_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    base_url: str
    api: str = "v1"
    needs_token: bool = True

    def token_request(self, now: float) -> HTTPRequest:
        """The OAuth request (parameters in the query string, as Baidu wants)."""
        url = with_query(
            self.base_url + "/oauth/2.0/token",
            build_oauth_token_query(self.api_key, self.secret_key),
        )
        return HTTPRequest("POST", url, {"Accept": "application/json"}, b"")

    def parse_token(self, status: int, body: bytes, now: float) -> AccessToken:
        """Read the OAuth answer; raise the OAuth error (e.g. ``invalid_client``) on failure."""
        data = _json(body)
        if status != 200 or not isinstance(data, dict) or "access_token" not in data:
            raise api_error_from_oauth(status, data if data is not None else body)
        value, lifetime = data.get("access_token"), data.get("expires_in", 2592000)
        if not isinstance(value, str) or not value or not isinstance(lifetime, int | float):
            raise MalformedResponseError("the OAuth answer has no usable access_token", None)
        return AccessToken(value, now + float(lifetime), now)

    def authorize(self, request: HTTPRequest, token: AccessToken | None, now: float) -> HTTPRequest:
        """Add ``?access_token=`` with the current token."""
        assert token is not None
        url = with_query(request.url, (("access_token", token.value),))
        return HTTPRequest(request.method, url, request.headers, request.body)


@dataclass(frozen=True, slots=True)
class V1Signature:
    """IAM Access Key + Secret Key, signing every v1 request with bce-auth-v1."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    api: str = "v1"
    needs_token: bool = False

    def authorize(self, request: HTTPRequest, token: AccessToken | None, now: float) -> HTTPRequest:
        """Add ``Authorization: bce-auth-v1/…``, ``x-bce-date`` and ``Host``."""
        return _signed(request, self.access_key, self.secret_key, now)


@dataclass(frozen=True, slots=True)
class V2Bearer:
    """A v2 API key (``bce-v3/ALTAK-…/…``) sent as a bearer token; optional ``appid``."""

    key: str = field(repr=False)
    app_id: str | None = None
    api: str = "v2"
    needs_token: bool = False

    def authorize(self, request: HTTPRequest, token: AccessToken | None, now: float) -> HTTPRequest:
        """Add ``Authorization: Bearer …`` (and ``appid``)."""
        headers = {**request.headers, "Authorization": f"Bearer {self.key}"}
        if self.app_id:
            headers["appid"] = self.app_id
        return HTTPRequest(request.method, request.url, headers, request.body)


@dataclass(frozen=True, slots=True)
class OpenAIBearer:
    """The API key of an OpenAI-compatible server, sent as a bearer token (nothing else)."""

    key: str = field(repr=False)
    api: str = "openai"
    needs_token: bool = False

    def authorize(self, request: HTTPRequest, token: AccessToken | None, now: float) -> HTTPRequest:
        """Add ``Authorization: Bearer …``."""
        headers = {**request.headers, "Authorization": f"Bearer {self.key}"}
        return HTTPRequest(request.method, request.url, headers, request.body)


@dataclass(frozen=True, slots=True)
class V2IAMBearer:
    """IAM Access Key + Secret Key, exchanged for bearer tokens at IAM (as qianfan does)."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    iam_base_url: str
    lifetime: int = 43200
    app_id: str | None = None
    api: str = "v2"
    needs_token: bool = True

    def token_request(self, now: float) -> HTTPRequest:
        """The signed ``GET /v1/BCE-BEARER/token?expireInSeconds=N`` request."""
        url = with_query(
            self.iam_base_url + IAM_TOKEN_PATH, (("expireInSeconds", str(self.lifetime)),)
        )
        return _signed(HTTPRequest("GET", url, {}, None), self.access_key, self.secret_key, now)

    def parse_token(self, status: int, body: bytes, now: float) -> AccessToken:
        """Read the minted token; raise an APIError on failure."""
        data = _json(body)
        if status != 200 or not isinstance(data, dict) or not data.get("token"):
            raise api_error_from_v2(status if status != 200 else 502, data or body)
        expires_at = now + self.lifetime
        expire_time = data.get("expireTime")
        if isinstance(expire_time, str):
            with contextlib.suppress(ValueError):
                expires_at = datetime.fromisoformat(expire_time).timestamp()
        return AccessToken(str(data["token"]), expires_at, now)

    def authorize(self, request: HTTPRequest, token: AccessToken | None, now: float) -> HTTPRequest:
        """Add ``Authorization: Bearer <minted token>`` (and ``appid``)."""
        assert token is not None
        headers = {**request.headers, "Authorization": f"Bearer {token.value}"}
        if self.app_id:
            headers["appid"] = self.app_id
        return HTTPRequest(request.method, request.url, headers, request.body)


Authenticator = (
    NoAuth | FixedV1Token | V1OAuth | V1Signature | V2Bearer | V2IAMBearer | OpenAIBearer
)
"""Any of the strategies above."""

TokenSource = V1OAuth | V2IAMBearer
"""The strategies that fetch tokens."""
