"""The emulator continues an interrupted answer when asked to (the client's continue mode)."""

from __future__ import annotations

from typing import Any

import httpx

from wenxin_stream._continuation import CONTINUE_PROMPT

V2 = "/v2/chat/completions"
KEY = {"Authorization": "Bearer bce-v3/ALTAK-cont/x"}


def answer(client: httpx.Client, messages: list[dict[str, Any]]) -> str:
    r = client.post(V2, headers=KEY, json={"model": "ernie-4.0-8k", "messages": messages})
    assert r.status_code == 200, r.text
    text: str = r.json()["choices"][0]["message"]["content"]
    return text


def test_continuation_delivers_exactly_the_rest(client: httpx.Client) -> None:
    question = {"role": "user", "content": "讲讲黄河 [[wenxin:fault chunks=6]]"}
    full = answer(client, [question])
    shown = full[: len(full) // 3]
    rest = answer(
        client,
        [
            question,
            {"role": "assistant", "content": shown},
            {"role": "user", "content": CONTINUE_PROMPT},
        ],
    )
    assert shown + rest == full


def test_a_partial_that_is_the_whole_answer_is_continued_with_nothing(
    client: httpx.Client,
) -> None:
    """A takeover can land between an answer's last text and its finish: all of it was shown,
    and an exact continuation adds nothing (not the whole answer again)."""
    question = {"role": "user", "content": "讲讲渭河 [[wenxin:fault chunks=6]]"}
    full = answer(client, [question])
    rest = answer(
        client,
        [
            question,
            {"role": "assistant", "content": full},
            {"role": "user", "content": CONTINUE_PROMPT},
        ],
    )
    assert rest == ""


def test_a_partial_that_is_not_a_prefix_gets_a_fresh_answer(client: httpx.Client) -> None:
    question = {"role": "user", "content": "讲讲长江"}
    full = answer(client, [question])
    other = answer(
        client,
        [
            question,
            {"role": "assistant", "content": "完全不同的开头"},
            {"role": "user", "content": CONTINUE_PROMPT},
        ],
    )
    assert other == full  # not a continuation: the answer to the question itself


def test_plain_follow_up_is_not_a_continuation(client: httpx.Client) -> None:
    question = {"role": "user", "content": "讲讲泰山"}
    full = answer(client, [question])
    follow = answer(
        client,
        [question, {"role": "assistant", "content": full[:5]}, {"role": "user", "content": "好的"}],
    )
    assert not full.startswith(full[:5] + follow)
