"""The one token estimate: the rule, its running form, and everyone who uses it agreeing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wenxin_stream import _token_estimate
from wenxin_stream._accumulate import Accumulator
from wenxin_stream._credentials import NoAuth
from wenxin_stream._events import TextDelta
from wenxin_stream._retry import RetryPolicy
from wenxin_stream._stream_core import ChatCall, StreamCore
from wenxin_stream._timeouts import Timeout
from wenxin_stream._token_estimate import (
    DEFAULT_ANSWER_TOKENS,
    TokenCounter,
    estimate_prompt_tokens,
    estimate_text_tokens,
    estimate_tokens,
)
from wenxin_stream.emulator import _answers, _chat


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("hello world", 2),
        ("你好", 2),  # 1.25 → 2
        ("你好世界", 3),  # 2.5 → 3
        ("你好世界你好世界", 5),
        ("hello, 世界!", 4),  # "hello," and "!" are 2 words, + 1.25 → 3.25 → 4
        ("𠀀𠀁", 2),  # CJK extension B
        ("你好，世界。", 4),  # CJK punctuation counts as CJK: 6 × 0.625 = 3.75 → 4
        ("ＡＢＣ", 2),  # full-width forms too: 1.875 → 2
        ("こんにちは", 4),  # kana: 3.125 → 4
        ("안녕하세요", 4),  # Hangul syllables
        ("wenxin-stream v2.0", 2),  # a run of non-space, non-CJK characters is one word
        ("привет мир", 2),  # every script counts, not only ASCII
        ("😀 👍", 2),
        ("**要点：**", 4),  # "**" twice + 3 CJK (1.875): 3.875 → 4
        ("\u3000 \t\n", 0),  # whitespace, the ideographic space included
        ("a\u3000b", 2),  # the ideographic space separates words
    ],
)
def test_the_rule(text: str, tokens: int) -> None:
    assert estimate_text_tokens(text) == tokens
    assert estimate_prompt_tokens([{"role": "user", "content": text}]) == tokens


def test_the_rule_is_drawn_in_the_module_docstring() -> None:
    doc = _token_estimate.__doc__ or ""
    assert "ceil(0.625 × C + W)" in doc
    assert "U+2E80–U+2FFF, U+3001–U+9FFF, U+AC00–U+D7AF, U+F900–U+FAFF, U+FF00–U+FFEF" in doc


def test_estimate_covers_all_messages_and_content_parts() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "你好"}, {"type": "image_url"}]},
        {"role": "assistant", "content": None},
        {"role": "user", "content": 42},
    ]
    assert estimate_prompt_tokens(messages) == 4  # 2 words + 1.25 → 3.25 → 4
    assert estimate_tokens(messages) == 4 + DEFAULT_ANSWER_TOKENS
    assert estimate_tokens(messages, answer_tokens=100) == 104
    assert estimate_tokens(messages, answer_tokens=-5) == 4


def test_messages_are_counted_apart_and_rounded_once() -> None:
    # "a" and "b" in two messages are two words; in one message "ab" would be one
    two = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert estimate_prompt_tokens(two) == 2
    # 1 + 1 CJK characters: 1.25 → 2, not 1 + 1 (each rounded up alone)
    cjk = [{"role": "user", "content": "你"}, {"role": "assistant", "content": "好"}]
    assert estimate_prompt_tokens(cjk) == 2
    three = [{"role": "user", "content": "你"}] * 3  # 1.875 → 2
    assert estimate_prompt_tokens(three) == 2


def _counts_char_by_char(text: str) -> tuple[int, int]:
    """The rule read literally, one character at a time: (CJK characters, words)."""
    cjk = words = 0
    in_word = False
    for char in text:
        if char.isspace():
            in_word = False
        elif _token_estimate._is_word_char(char):
            words += not in_word
            in_word = True
        else:
            cjk += 1
            in_word = False
    return cjk, words


_TRICKY = st.sampled_from(
    [
        *"ab1-。，\t\n\x1c\x1f\x85\u00a0\u2028\u200b\u3000\u3001\u2e7f\u2e80\u2fff\u9fff",
        *("\ua000", "\uac00", "\ud7af", "\ud7b0", "\uf900", "\ufaff", "\uff00", "\uffef"),
        *("\ufff0", "\U00020000", "\U0003ffff", "\U00040000", "😀", "\ud800"),
    ]
)


@given(st.one_of(st.text(), st.lists(_TRICKY, max_size=30).map("".join)))
def test_the_fast_count_is_the_rule_read_character_by_character(text: str) -> None:
    # the estimate counts runs of CJK characters and splits the rest on whitespace (cheap on
    # long Chinese histories); it must give exactly what the rule says, character by character
    assert _token_estimate._counts(text) == _counts_char_by_char(text)


@given(st.lists(_TRICKY, min_size=64, max_size=200).map("".join))
def test_kept_counts_are_the_rule_too(text: str) -> None:
    # long enough to be kept: the first count scans, the second comes from the cache
    assert _token_estimate._counts(text) == _counts_char_by_char(text)
    assert _token_estimate._counts(text) == _counts_char_by_char(text)


def test_a_prompt_estimated_twice_is_scanned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # the server's admission, then the upstream client's limiter: the same texts (equal, not
    # necessarily the same objects); short texts and very long ones are scanned each time
    scanned: list[int] = []
    scan = _token_estimate._scan

    def counting(text: str) -> tuple[int, int]:
        scanned.append(len(text))
        return scan(text)

    monkeypatch.setattr(_token_estimate, "_scan", counting)
    _token_estimate._kept_counts.cache_clear()
    low, high = _token_estimate.CACHED_LENGTHS
    history = "你好，世界。" * 40
    huge = "长" * (high + 1)
    prompt = [
        {"role": "user", "content": history},
        {"role": "assistant", "content": "x" * low},
        {"role": "user", "content": "short"},
        {"role": "user", "content": huge},
    ]
    first = estimate_tokens(prompt)
    again = [{**m, "content": "".join(list(m["content"]))} for m in prompt]  # new objects
    assert estimate_tokens(again) == first
    assert sorted(scanned) == sorted([240, low, 5, high + 1, 5, high + 1])


@given(st.lists(st.text(), max_size=5))
def test_estimate_is_deterministic_and_monotonic(texts: list[str]) -> None:
    messages = [{"role": "user", "content": t} for t in texts]
    first = estimate_prompt_tokens(messages)
    assert first == estimate_prompt_tokens(messages)
    assert estimate_prompt_tokens([*messages, {"role": "user", "content": "多"}]) >= first


@given(st.lists(st.text(max_size=20), max_size=10))
def test_running_estimate_equals_whole_estimate(pieces: list[str]) -> None:
    counter = TokenCounter()
    totals = [counter.feed(piece) for piece in pieces]
    assert counter.total == estimate_text_tokens("".join(pieces))
    assert totals == sorted(totals)  # a running total never falls


@given(st.text(max_size=60), st.integers(min_value=0, max_value=60))
def test_a_prefix_never_costs_more(text: str, cut: int) -> None:
    assert estimate_text_tokens(text[:cut]) <= estimate_text_tokens(text)


def test_the_stream_core_settles_a_broken_stream_with_the_same_rule() -> None:
    messages = ({"role": "user", "content": "介绍一下长城, please"},)
    call = ChatCall(api="v2", model="ernie-lite-8k", messages=messages, params={})
    core = StreamCore(
        call, base_url="http://x", auth=NoAuth(), retry=RetryPolicy(), timeout=Timeout()
    )
    answer = "长城是中国古代的军事防御工程。It is long."
    core.accumulator = Accumulator()
    core.accumulator.add(TextDelta(answer))
    core.delivered = True
    expected = estimate_prompt_tokens(messages) + estimate_text_tokens(answer)
    assert core.tokens_used() == expected
    assert core.settlement() == expected


def test_the_emulator_reports_usage_with_the_same_rule() -> None:
    texts = ["介绍一下长城", "wenxin-stream 的离线模拟器"]
    # the emulator counts each message apart (a newline between them) and reports at least 1
    assert _chat.prompt_tokens(texts) == estimate_prompt_tokens(
        [{"role": "user", "content": t} for t in texts]
    )
    answer = _answers.default_answer("介绍一下长城", 0)
    pieces = _answers.delta_pieces(answer, 0)
    counter = _answers.TokenCounter()
    for piece in pieces:
        counter.feed(piece)
    assert counter.total == estimate_text_tokens(answer)
    assert _answers.TokenCounter().total == 1  # nothing costs at least one token
    assert _chat.prompt_tokens([""]) == 1


def test_the_emulator_cuts_answers_at_a_token_limit_by_the_same_rule() -> None:
    text = "你好，世界。hello world foo"
    for limit in range(1, estimate_text_tokens(text)):
        cut = _answers.cut_to_tokens(text, limit)
        assert cut is not None
        assert estimate_text_tokens(cut) <= limit
        assert estimate_text_tokens(text[: len(cut) + 1]) > limit  # the longest such prefix
    assert _answers.cut_to_tokens(text, estimate_text_tokens(text)) is None


def test_the_gateway_uses_the_same_estimate() -> None:
    from wenxin_stream.server import _answers

    assert _answers.estimate_tokens is estimate_tokens
    assert _answers.DEFAULT_ANSWER_TOKENS is DEFAULT_ANSWER_TOKENS


def test_no_other_estimator_is_left_in_the_package() -> None:
    """The three rules this module replaced are gone: no other module multiplies by a CJK or
    per-character token rate (0.625, 0.7) or scales CJK counts by 5/8."""
    rate = re.compile(r"\*\s*0\.(625|7)\b|\b0\.(625|7)\s*\*|\* ?5 \+ 7\) // 8")
    root = Path(_token_estimate.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "_token_estimate.py" and rate.search(path.read_text("utf-8"))
    ]
    assert offenders == []
    assert rate.search("(self._cjk * 5 + 7) // 8")  # the check would see the old emulator rule
    assert rate.search("math.ceil(len(self.text) * 0.7)")  # and the old settlement rate
