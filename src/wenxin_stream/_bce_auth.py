"""Baidu Cloud's ``bce-auth-v1`` request signature: signing (SDK) and verification (emulator).

The algorithm (Baidu's "Reference/njwvz1yfu", see ``shared/ERNIE-PROTOCOL.md`` §2.2):

1. ``auth_prefix = "bce-auth-v1/{AK}/{timestamp}/{expiration}"`` with ``timestamp`` in UTC
   ``YYYY-MM-DDTHH:MM:SSZ``;
2. ``signing_key = hex(HMAC-SHA256(SK, auth_prefix))``;
3. ``canonical = METHOD \\n uri \\n query \\n headers`` where the URI is percent-encoded except
   ``/``, the query is ``k=v`` pairs percent-encoded, sorted and joined by ``&`` (``authorization``
   left out), and the headers are ``name:value`` lines (lower-case name, trimmed, encoded),
   sorted and joined by ``\\n``;
4. ``signature = hex(HMAC-SHA256(signing_key, canonical))`` — keyed by the *hex string*;
5. ``Authorization: {auth_prefix}/{signed_header_names joined by ;}/{signature}``.

Pure functions: the clock is a parameter. Secrets never appear in return values other than the
signature itself, and never in exception messages.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

DEFAULT_SIGNED_HEADERS: tuple[str, ...] = ("host", "content-md5", "content-length", "content-type")
"""Headers signed when the signed-header list is empty (plus every ``x-bce-*`` header)."""


def uri_encode(text: str, *, keep_slash: bool = False) -> str:
    """Percent-encode ``text`` as RFC 3986 wants: only ``A-Z a-z 0-9 - . _ ~`` stay as they are."""
    return quote(text, safe="/~" if keep_slash else "~")


def bce_timestamp(now: float) -> str:
    """Format a POSIX time as the signature's UTC timestamp, ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_bce_timestamp(text: str) -> float:
    """Parse a signature timestamp back into POSIX seconds; ValueError when malformed."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """The canonical query string: encoded ``k=v`` pairs, sorted, ``authorization`` omitted."""
    parts = [f"{uri_encode(k)}={uri_encode(v)}" for k, v in params if k.lower() != "authorization"]
    return "&".join(sorted(parts))


def canonical_headers(headers: Mapping[str, str], names: Iterable[str]) -> str:
    """The canonical header block for the header ``names`` (matched case-insensitively)."""
    lowered = {k.strip().lower(): v for k, v in headers.items()}
    lines = []
    for name in names:
        value = lowered.get(name.strip().lower(), "").strip()
        if value:
            lines.append(f"{uri_encode(name.strip().lower())}:{uri_encode(value)}")
    return "\n".join(sorted(lines))


def _hmac_hex(key: str, msg: str) -> str:
    return hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest()


def compute_signature(
    secret_key: str,
    auth_prefix: str,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_names: Iterable[str],
) -> str:
    """Return the hex signature of one request (steps 2–4 of the algorithm)."""
    signing_key = _hmac_hex(secret_key, auth_prefix)
    canonical = "\n".join(
        (
            method.upper(),
            uri_encode(path, keep_slash=True),
            canonical_query(query),
            canonical_headers(headers, signed_names),
        )
    )
    return _hmac_hex(signing_key, canonical)


def sign_request(
    access_key: str,
    secret_key: str,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    *,
    now: float,
    expiration: int = 1800,
    signed_headers: Iterable[str] = ("host", "content-type", "x-bce-date"),
) -> str:
    """Return the ``Authorization`` header value for a request.

    ``headers`` must already hold every header in ``signed_headers`` (notably ``Host`` and
    ``x-bce-date``, which should be :func:`bce_timestamp` of ``now``).
    """
    names = [n.lower() for n in signed_headers]
    prefix = f"bce-auth-v1/{access_key}/{bce_timestamp(now)}/{expiration}"
    signature = compute_signature(secret_key, prefix, method, path, query, headers, names)
    return f"{prefix}/{';'.join(names)}/{signature}"


@dataclass(frozen=True, slots=True)
class ParsedAuthorization:
    """The parts of a ``bce-auth-v1`` Authorization header."""

    access_key: str
    timestamp: str
    expiration: int
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def prefix(self) -> str:
        """The ``auth_prefix`` the signing key was derived from."""
        return f"bce-auth-v1/{self.access_key}/{self.timestamp}/{self.expiration}"


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Split an Authorization header into its parts; None when it is not ``bce-auth-v1``."""
    parts = value.strip().split("/")
    if len(parts) != 6 or parts[0] != "bce-auth-v1":
        return None
    _, ak, timestamp, expiration, names, signature = parts
    if not ak or not expiration.isdigit() or not signature:
        return None
    signed = tuple(n.strip().lower() for n in names.split(";") if n.strip())
    return ParsedAuthorization(ak, timestamp, int(expiration), signed, signature)


def verify_request(
    auth: ParsedAuthorization,
    secret_key: str,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    *,
    now: float,
) -> bool:
    """Check a parsed signature against the request it came with, at time ``now``.

    Accepts the variants real clients produce: signed-header lists in any order (qianfan builds
    its list from a ``set``), an empty list (the default headers are then signed), and
    signatures computed with every ``x-bce-*`` header folded in (bce-python-sdk).
    """
    try:
        signed_at = parse_bce_timestamp(auth.timestamp)
    except ValueError:
        return False
    if signed_at + auth.expiration < now or signed_at > now + 900:
        return False
    query = list(query)
    names = list(auth.signed_headers)
    if not names:
        names = [*DEFAULT_SIGNED_HEADERS]
    bce_extra = [k.lower() for k in headers if k.lower().startswith("x-bce-")]
    candidates = [names, sorted(set(names) | set(bce_extra))]
    for candidate in candidates:
        expected = compute_signature(
            secret_key, auth.prefix, method, path, query, headers, candidate
        )
        if hmac.compare_digest(expected, auth.signature):
            return True
    return False
