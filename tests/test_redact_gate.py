"""The fast path of ``redact``: one gate scan, and the seven rules only when it finds a trigger.

The gate must never skip text that a rule would change, so ``redact`` has to equal running every
rule unconditionally, whatever mix of ordinary text, Chinese and secrets in any case it gets."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wenxin_stream import _redact
from wenxin_stream._redact import _RULES, MASK, redact


def _every_rule(text: str) -> str:
    """The reference: every rule of ``_RULES``, applied without the gate."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


CREDENTIALS = [
    "access_token=24.abc",
    '"client_secret": "x"',
    "Authorization: Bearer abcdefgh123",
    "bearer xyz12345678",
    "bce-auth-v1/AK/2024/1800//sig",
    "bce-v3/ALTAK-abc/def",
    "sk-proj-abcdefghijklmnop1234",
    "REFRESH_TOKEN=r3fr35h.tok",
    "Session_Key=9f8e7d",
    "client_id=cid42",
    '"session_secret":"s3"',
    '"access_token" : "24.xyz"',
    "authorization='token abc'",
    'Authorization="bce-auth-v1/ak/x"',
    "Authorization: Basic dXNlcjpwYXNz",
    "authorization=AK1234",
]

NEAR_MISSES = [  # bare triggers and near misses: the gate may fire, the rules may not
    "token",
    "client_",
    "session_",
    "bce-",
    "Bearer ***",
    "bearer short",
    "acc_token",
    "tokn=1",
    "client=2",
    "sesion_key=3",
    "bce_v3/x",
    "authorisation: x",
]

SECRETS = CREDENTIALS + NEAR_MISSES

ORDINARY = [
    "hello ",
    "ERNIE answered error 110: ",
    "?a=1&",
    "&",
    "=",
    ": ",
    '"',
    "'",
    ",",
    ";",
    "/",
    " ",
    "\n",
    "\t",
    "{",
    "}",
    "<b>",
]

CHINESE = ["你好，", "文心一言", "令牌", "访问密钥", "授权失败。", "会话"]

# letters that match ASCII ones case-insensitively in Python's re (ſ ~ s, K ~ k, İ/ı ~ i)
ODD_CASE = "ſKİı"


def _cased(text: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [text, text.upper(), text.lower(), text.swapcase(), text.title()]
    ) | st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda flips: "".join(
            c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True)
        )
    )


fragments = st.one_of(
    st.sampled_from(SECRETS).flatmap(_cased),
    st.sampled_from(ORDINARY),
    st.sampled_from(CHINESE),
    st.text(
        alphabet=st.sampled_from("abcdekstno_-=:/.\"' 令牌你好" + ODD_CASE + "ABCTS0189"),
        max_size=12,
    ),
)

texts = st.lists(fragments, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_redact_equals_every_rule_applied(text: str) -> None:
    assert redact(text) == _every_rule(text)


ascii_fragments = st.one_of(
    st.sampled_from(SECRETS).flatmap(_cased),
    st.sampled_from(ORDINARY),
    st.text(alphabet=st.sampled_from("abcdekstno_-=:/.\"' ABCTS0189KIz"), max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ascii_fragments, max_size=12).map("".join))
def test_ascii_text_takes_the_lower_case_search_and_loses_nothing(text: str) -> None:
    """ASCII text is searched lower-cased instead of by the gate's regex: the same texts
    reach the rules."""
    assert text.isascii()
    assert _redact._may_hold_secret(text) == (_redact._GATE.search(text) is not None)
    assert redact(text) == _every_rule(text)


@given(
    st.sampled_from(CREDENTIALS).flatmap(_cased),
    st.sampled_from(CHINESE),
    st.sampled_from([" ", "，", "\n", "?", "&", "（"]),
)
def test_secret_shapes_are_masked_whatever_their_case(secret: str, around: str, sep: str) -> None:
    text = around + sep + secret + sep + around
    masked = redact(text)
    assert masked == _every_rule(text)
    assert MASK in masked  # the fixture secrets are all real credential shapes


def test_a_secret_glued_to_chinese_text_is_masked() -> None:
    text = "请求失败access_token=24.abc"
    assert redact(text) == _every_rule(text)  # the gate is not the cause
    assert "24.abc" not in redact(text)


def test_text_without_a_trigger_is_returned_unchanged() -> None:
    text = '文心一言 answered error 110: {"error_msg": "Access denied", "id": "as-1"} 你好'
    assert _redact._GATE.search(text) is None  # the premise
    assert redact(text) is text
    assert redact("") == ""


def test_the_gate_skips_the_rules_for_ordinary_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path really is taken: rules that would change anything are not run."""
    loud = ((re.compile(r"(?s).+"), "RULES RAN"),)
    monkeypatch.setattr(_redact, "_RULES", loud)
    assert redact("普通的错误信息 status=500") == "普通的错误信息 status=500"
    assert redact("a token here") == "RULES RAN"  # a trigger: the rules run
    assert redact("POST /v1/chat/completions 200") == "POST /v1/chat/completions 200"  # ASCII
    assert redact("a BeArEr here") == "RULES RAN"
    assert redact("ſk-glued") == "RULES RAN"  # re takes ſ for s: the gate still decides


def test_an_api_key_glued_to_chinese_text_is_masked_in_audit_records() -> None:
    from wenxin_stream.server._audit import redact_value

    record = redact_value({"question": "我的密钥wx-abcdefgh12345678，请保密", "n": 1})
    assert "abcdefgh12345678" not in record["question"]
    assert record["question"].startswith("我的密钥wx-***")
    assert record["n"] == 1
