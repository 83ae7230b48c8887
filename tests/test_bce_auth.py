"""bce-auth-v1 signing and verification.

The expected signature below was produced by Baidu's own signer (bce-python-sdk 0.9.79,
``baidubce.auth.bce_v1_signer.sign``) for the same request, so these tests pin our
canonicalisation to the reference implementation.
"""

from __future__ import annotations

from wenxin_stream._bce_auth import (
    bce_timestamp,
    canonical_headers,
    canonical_query,
    parse_authorization,
    parse_bce_timestamp,
    sign_request,
    uri_encode,
    verify_request,
)

NOW = 1700000000
HEADERS = {
    "Host": "127.0.0.1:8866",
    "Content-Type": "application/json",
    "x-bce-date": "2023-11-14T22:13:20Z",
}
PATH = "/v1/BCE-BEARER/token"
QUERY = [("expireInSeconds", "100")]
BAIDU_SIGNATURE = "f3e7f693728ef78b077296f86ed10590d58da6be33ee7964f743926d2c9d6ddc"


def test_signature_matches_baidus_reference_signer() -> None:
    auth = sign_request("AK", "SK", "POST", PATH, QUERY, HEADERS, now=NOW)
    assert auth == (
        "bce-auth-v1/AK/2023-11-14T22:13:20Z/1800/host;content-type;x-bce-date/" + BAIDU_SIGNATURE
    )


def test_signed_header_order_does_not_matter() -> None:
    # qianfan builds its signed-header list from a set: any order must verify.
    auth = parse_authorization(
        "bce-auth-v1/AK/2023-11-14T22:13:20Z/1800/x-bce-date;content-type;host/" + BAIDU_SIGNATURE
    )
    assert auth is not None
    assert verify_request(auth, "SK", "POST", PATH, QUERY, HEADERS, now=NOW + 10)


def test_verification_rejects_tampering_wrong_secret_and_expiry() -> None:
    auth = parse_authorization(sign_request("AK", "SK", "POST", PATH, QUERY, HEADERS, now=NOW))
    assert auth is not None
    assert verify_request(auth, "SK", "POST", PATH, QUERY, HEADERS, now=NOW + 1799)
    assert not verify_request(auth, "other", "POST", PATH, QUERY, HEADERS, now=NOW)
    assert not verify_request(auth, "SK", "GET", PATH, QUERY, HEADERS, now=NOW)
    assert not verify_request(
        auth, "SK", "POST", PATH, [("expireInSeconds", "101")], HEADERS, now=NOW
    )
    tampered = {**HEADERS, "Host": "evil:1"}
    assert not verify_request(auth, "SK", "POST", PATH, QUERY, tampered, now=NOW)
    assert not verify_request(auth, "SK", "POST", PATH, QUERY, HEADERS, now=NOW + 1801)
    assert not verify_request(auth, "SK", "POST", PATH, QUERY, HEADERS, now=NOW - 3600)


def test_unsigned_x_bce_headers_folded_in_still_verify() -> None:
    headers = {**HEADERS, "x-bce-request-id": "abc"}
    names = sorted({"host", "content-type", "x-bce-date", "x-bce-request-id"})
    auth_text = sign_request(
        "AK", "SK", "POST", PATH, QUERY, headers, now=NOW, signed_headers=names
    )
    # A client that listed only the three headers but folded x-bce-* in anyway.
    prefix, _, signature = auth_text.rpartition("/")
    listed = prefix.rsplit("/", 1)[0] + "/host;content-type;x-bce-date/" + signature
    auth = parse_authorization(listed)
    assert auth is not None
    assert verify_request(auth, "SK", "POST", PATH, QUERY, headers, now=NOW)


def test_empty_signed_header_list_uses_the_defaults() -> None:
    auth_text = sign_request(
        "AK",
        "SK",
        "POST",
        PATH,
        QUERY,
        HEADERS,
        now=NOW,
        signed_headers=("host", "content-md5", "content-length", "content-type"),
    )
    prefix, _, signature = auth_text.rpartition("/")
    empty = prefix.rsplit("/", 1)[0] + "//" + signature
    auth = parse_authorization(empty)
    assert auth is not None
    assert auth.signed_headers == ()
    assert verify_request(auth, "SK", "POST", PATH, QUERY, HEADERS, now=NOW)


def test_parse_rejects_other_schemes_and_garbage() -> None:
    assert parse_authorization("Bearer bce-v3/ALTAK-x/y") is None
    assert parse_authorization("bce-auth-v1/AK/ts/notanumber/host/sig") is None
    assert parse_authorization("bce-auth-v1//ts/10/host/sig") is None
    assert parse_authorization("bce-auth-v1/AK/ts/10/host/") is None
    bad_time = parse_authorization("bce-auth-v1/AK/yesterday/10/host/abc")
    assert bad_time is not None
    assert not verify_request(bad_time, "SK", "GET", "/", [], {}, now=NOW)


def test_canonical_pieces() -> None:
    assert uri_encode("a b/c~") == "a%20b%2Fc~"
    assert uri_encode("/a b/c", keep_slash=True) == "/a%20b/c"
    assert uri_encode("中") == "%E4%B8%AD"
    assert canonical_query([("b", "2"), ("a", ""), ("authorization", "x")]) == "a=&b=2"
    assert canonical_headers({"Host": " h:1 ", "X-Empty": ""}, ["host", "x-empty"]) == "host:h%3A1"
    assert bce_timestamp(NOW) == "2023-11-14T22:13:20Z"
    assert parse_bce_timestamp("2023-11-14T22:13:20Z") == NOW
