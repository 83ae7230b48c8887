"""Answers, chunking, token estimates, quotas and config files: the pure parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wenxin_stream.emulator import (
    ConfigError,
    EmulatorConfig,
    FaultSpec,
    load_credentials,
    load_scenarios,
    parse_credentials,
    parse_scenarios,
)
from wenxin_stream.emulator._answers import (
    OPENING,
    TokenCounter,
    answer_kind,
    brief,
    cut_at_stop,
    cut_to_tokens,
    default_answer,
    delta_pieces,
    even_pieces,
    lengthen,
    sentence_pieces,
)
from wenxin_stream.emulator._quota import Quotas


@pytest.mark.parametrize("prompt", ["你好", "北京有什么好玩的？", "hello " * 6, ""])
def test_default_answer_shape(prompt: str) -> None:
    assert answer_kind(prompt) == "short"
    answer = default_answer(prompt, 0)
    assert answer.startswith(OPENING)
    assert 150 <= len(answer) <= 400
    assert "**要点：**" in answer
    assert "\n1. " in answer
    assert answer == default_answer(prompt, 0)


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("给我一段 Python 代码", "code"),
        ("写个例子", "code"),
        ("Show me example CODE", "code"),
        ("流式和非流式的对比", "table"),
        ("比较一下 v1 和 v2", "table"),
        ("SSE vs WebSocket", "table"),
        ("请详细介绍一下长城", "long"),
        ("how to stream answers", "long"),
        ("hello " * 50, "long"),
        ("x" * 5000, "long"),
        ("你好", "short"),
    ],
)
def test_default_answer_follows_the_question(prompt: str, kind: str) -> None:
    assert answer_kind(prompt) == kind
    answer = default_answer(prompt, 3)
    assert answer.startswith(OPENING)  # still clearly simulated
    assert answer == default_answer(prompt, 3)  # still seeded and deterministic
    if kind == "code":
        fence = answer.index("```")
        lang = answer[fence + 3 : answer.index("\n", fence)]
        assert lang in {"python", "javascript", "bash"}
        assert answer.count("```") == 2
        assert "\n```\n" in answer  # the block is closed on its own line
    elif kind == "table":
        lines = [line for line in answer.splitlines() if line.startswith("|")]
        assert lines[0] == "| 方面 | 流式 | 非流式 |"
        assert lines[1] == "|---|---|---|"
        assert len(lines) == 6
        assert all(line.count("|") == 4 for line in lines)
    elif kind == "long":
        assert answer.count("\n## ") == 3
        assert "\n1. " in answer
        assert "\n4. " in answer
        assert "\n- " in answer
        assert len(answer) > 300
    else:
        assert "**要点：**" in answer


def test_seed_changes_the_answer() -> None:
    answers = {default_answer("同一个问题", seed) for seed in range(8)}
    assert len(answers) > 1


def test_brief() -> None:
    assert brief("  a \n b ") == "a b"
    assert brief("") == "（空）"
    assert brief("很" * 30) == "很" * 24 + "…"


def test_sentence_pieces_split_after_sentence_ends() -> None:
    text = "第一句。第二句！“引号？”第三句；\n\n最后"
    assert sentence_pieces(text) == ("第一句。", "第二句！", "“引号？”", "第三句；\n\n", "最后")
    long = "很长" * 60 + "。"
    pieces = sentence_pieces(long)
    assert len(pieces) > 1
    assert all(len(p) <= 48 for p in pieces)
    assert "".join(pieces) == long


@given(st.text(max_size=300))
def test_splitters_preserve_text(text: str) -> None:
    assert "".join(sentence_pieces(text)) == text
    assert all(sentence_pieces(text))
    assert "".join(delta_pieces(text, 3)) == text
    assert all(1 <= len(p) <= 8 for p in delta_pieces(text, 3))
    assert all(len(p) >= 2 for p in delta_pieces(text, 3)[:-1])


@given(st.text(min_size=1, max_size=200), st.integers(1, 50))
def test_even_pieces(text: str, count: int) -> None:
    pieces = even_pieces(text, count)
    assert len(pieces) == count
    assert "".join(pieces) == text
    assert max(map(len, pieces)) - min(map(len, pieces)) <= 1


def test_lengthen() -> None:
    assert lengthen("abc", 2, 0) == "abc"
    longer = lengthen("abc", 500, 0)
    assert longer.startswith("abc")
    assert len(longer) >= 500
    assert longer == lengthen("abc", 500, 0)


def test_token_estimate_is_the_packages_with_a_floor_of_one() -> None:
    """The rule itself is tested in tests/test_token_estimate.py; the emulator reports it as
    at least one token."""
    counter = TokenCounter()
    assert counter.total == 1
    assert counter.feed("你好你好你好你好") == 5  # ceil(8 * 0.625)
    assert counter.feed(" hello") == 6


def test_cuts() -> None:
    assert cut_at_stop("abc。def。", ["。", "d"]) == "abc"
    assert cut_at_stop("abc", ["x", ""]) is None
    assert cut_to_tokens("hello world foo", 10) is None
    cut = cut_to_tokens("hello world foo", 2)
    assert cut == "hello world "


def test_quota_window_slides() -> None:
    quotas = Quotas(rpm=2, tpm=100)
    assert quotas.admit("a", 10, 10, 1000.0).error is None
    second = quotas.admit("a", 10, 10, 1000.5)
    assert second.error is None
    assert second.remaining_requests == 0
    assert second.remaining_tokens == 60
    third = quotas.admit("a", 1, 1, 1010.0)
    assert third.error == 336501
    assert third.retry_after == 50
    assert quotas.admit("b", 1, 1, 1010.0).error is None  # per identity
    assert quotas.admit("a", 1, 1, 1060.0).error is None  # the old second left the window


def test_quota_tpm_and_headers() -> None:
    quotas = Quotas(rpm=0, tpm=50)
    assert quotas.admit("a", 30, 30, 0.0).error is None  # charged in full, now over
    refused = quotas.admit("a", 1, 1, 1.0)
    assert refused.error == 336502
    assert refused.retry_after == 59
    headers = dict(quotas.headers(refused, v2=True))
    assert headers[b"x-ratelimit-limit-tokens"] == b"50"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"0"
    assert b"x-ratelimit-remaining-input-tokens" in headers
    assert b"x-ratelimit-limit-input-tokens" not in dict(quotas.headers(refused, v2=False))
    off = Quotas(0, 0)
    assert not off.enabled
    assert off.admit("a", 10**9, 10**9, 0).error is None


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        EmulatorConfig(ttft=-1)
    with pytest.raises(ConfigError):
        EmulatorConfig(token_ttl=0)
    with pytest.raises(ConfigError):
        EmulatorConfig(rpm=-1)
    with pytest.raises(ConfigError):
        EmulatorConfig(max_body_bytes=0)
    with pytest.raises(ConfigError):
        EmulatorConfig(fault_rates=((FaultSpec(stamp=True), 2.0),))
    assert "dev mode" in EmulatorConfig().mode_description
    assert "without credentials" in EmulatorConfig(no_auth=True).mode_description


def test_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text(
        json.dumps(
            {
                "apps": [{"api_key": "ak", "secret_key": "sk"}],
                "api_keys": ["bce-v3/ALTAK-x/y"],
                "iam": [{"access_key": "AK", "secret_key": "SK"}],
                "appids": ["app-1"],
            }
        )
    )
    creds = load_credentials(path)
    assert creds.apps == {"ak": "sk"}
    assert creds.api_keys == {"bce-v3/ALTAK-x/y"}
    assert creds.iam == {"AK": "SK"}
    assert creds.appids == {"app-1"}
    assert "strict mode" in EmulatorConfig(credentials=creds).mode_description


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"nope": []},
        {"apps": [{"api_key": "a"}]},
        {"apps": {}},
        {"api_keys": [1]},
        {"iam": [{"access_key": "", "secret_key": "s"}]},
    ],
)
def test_bad_credentials(data: object) -> None:
    with pytest.raises(ConfigError):
        parse_credentials(data)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_credentials(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_scenarios(bad)


def test_scenarios() -> None:
    scenarios = parse_scenarios(
        [
            {"match": "天气", "answer": "晴。"},
            {"match": "re:^error\\d+$", "fault": "error=336100"},
        ]
    )
    assert scenarios[0].matches("今天天气")
    assert not scenarios[0].matches("今天")
    assert scenarios[1].matches("error42")
    assert not scenarios[1].matches("xerror42")
    assert scenarios[1].fault == FaultSpec(error=336100)


@pytest.mark.parametrize(
    "data",
    [
        {},
        [{"answer": "x"}],
        [{"match": "a", "answer": ""}],
        [{"match": "a", "fault": 3}],
        [{"match": "a", "fault": "bogus=1"}],
        [{"match": "re:(", "answer": "x"}],
        [{"match": "a", "extra": 1}],
    ],
)
def test_bad_scenarios(data: object) -> None:
    with pytest.raises(ConfigError):
        parse_scenarios(data)
