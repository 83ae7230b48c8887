"""Token estimates: one rule for the whole package, pure and deterministic.

Theory of operation
-------------------
ERNIE's tokenizer is not public and counting must not need a download, so every place that
needs a token count before (or without) the server's ``usage`` estimates it with ONE rule:

    tokens(text) = ceil(0.625 × C + W)

- ``C`` counts **CJK characters**: Han ideographs (every plane's CJK blocks), CJK radicals,
  symbols and punctuation (``。，「」``), kana, Hangul and the full-width forms —
  U+2E80–U+2FFF, U+3001–U+9FFF, U+AC00–U+D7AF, U+F900–U+FAFF, U+FF00–U+FFEF,
  U+20000–U+3FFFF. Each is 0.625 of a token (1.6 characters per token).
- ``W`` counts **words**: maximal runs of the other characters that are not whitespace — a
  Latin word, a number, ``wenxin-stream``, ``**``, an emoji, a Cyrillic word. Each is one token.

Several texts (the messages of a prompt) are counted apart, so a word never spans two of them,
and rounded up once, after summing. The estimate of text fed piece by piece
(:class:`TokenCounter`, a word may span pieces) equals the estimate of the joined text.

Who uses it: the SDK's client-side rate limiter reserves :func:`estimate_tokens` (prompt plus
an answer budget) and the stream core settles a broken stream's cost as prompt plus the text
delivered; the gateway admits a request against a key's TPM with :func:`estimate_tokens`; the
emulator reports ``usage`` from :class:`TokenCounter` (running totals per chunk).

Why this rule. It is qianfan's local estimate (0.625 per Chinese character plus one per
whitespace-separated word of the rest), which ERNIE users' rate limits have been tuned to, with
two corrections that make it err high rather than low, as a rate-limit estimate must (a low one
risks 336502): CJK punctuation and full-width forms count as CJK characters (qianfan counts
``，`` as a whole word when it stands between spaces, and not at all otherwise), and every
non-space character belongs to some token — the emulator's earlier rule counted only ASCII
letters and digits, so Cyrillic text, emoji and punctuation cost nothing. The two rules this
one replaces also disagreed with a third (0.7 per character of a partial answer); all three
now agree. The emulator's usage numbers changed with it, slightly: ``wenxin-stream`` is one
word instead of two, and a ``**`` or a ``1.`` is now a word.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_ANSWER_TOKENS",
    "TokenCounter",
    "estimate_prompt_tokens",
    "estimate_text_tokens",
    "estimate_tokens",
    "message_texts",
]

DEFAULT_ANSWER_TOKENS = 512
"""Tokens :func:`estimate_tokens` reserves for the answer when the caller sets no maximum."""

_CJK_RANGES = (
    "\u2e80-\u2fff\u3001-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff"
)
# Runs of CJK characters: their lengths sum to the CJK count, and with each run replaced by a
# space, the words are what ``str.split`` finds (its whitespace is the regex's ``\\s``). A scan
# that matched every character alone cost 10-20x more on Chinese text (a prompt's history is
# estimated at every admission).
_CJK_RUN = re.compile(f"[{_CJK_RANGES}]+")


CACHED_LENGTHS = (64, 16_384)
"""Texts this long (in characters, both included) have their counts kept (:func:`_counts`)."""


@functools.lru_cache(maxsize=256)  # at most 256 texts of at most 16,384 characters: ≤ 16 MiB
def _kept_counts(text: str) -> tuple[int, int]:
    return _scan(text)


def _counts(text: str) -> tuple[int, int]:
    """(CJK characters, words) in ``text``.

    A prompt is estimated at least twice — the server's admission, then the upstream client's
    limiter (on the native route the prompt is the conversation's history, estimated again at
    every question) — so the counts of texts of :data:`CACHED_LENGTHS` are kept (the last 256
    texts): the second estimate of a text is a hash lookup. Shorter texts cost less to scan
    than to look up; longer ones are not kept, to bound the memory.
    """
    low, high = CACHED_LENGTHS
    if low <= len(text) <= high:
        return _kept_counts(text)
    return _scan(text)


def _scan(text: str) -> tuple[int, int]:
    """(CJK characters, words) in ``text``, counted."""
    if text.isascii():
        return 0, len(text.split())
    runs = _CJK_RUN.findall(text)
    if not runs:
        return 0, len(text.split())
    return sum(map(len, runs)), len(_CJK_RUN.sub(" ", text).split())


def _is_word_char(char: str) -> bool:
    """Whether ``char`` belongs to a word (neither whitespace nor CJK; U+3000 is whitespace)."""
    if char.isspace():
        return False
    code = ord(char)
    return not (
        0x2E80 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
        or 0x20000 <= code <= 0x3FFFF
    )


def _tokens(cjk: int, words: int) -> int:
    """``ceil(0.625 × cjk + words)`` in integer arithmetic."""
    return (5 * cjk + 7) // 8 + words


def estimate_text_tokens(text: str) -> int:
    """The estimated tokens of one text (see the module docstring)."""
    return _tokens(*_counts(text))


def message_texts(message: Mapping[str, Any]) -> list[str]:
    """The texts of a chat message: its content string, or the ``text`` of each content part
    (v2's multi-part contents); none for other contents (``None``, a function call)."""
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, Sequence):
        return [
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        ]
    return []


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The estimated tokens of a prompt: every message's texts, counted apart and summed, then
    rounded up once."""
    cjk = words = 0
    for message in messages:
        for text in message_texts(message):
            c, w = _counts(text)
            cjk += c
            words += w
    return _tokens(cjk, words)


def estimate_tokens(
    messages: Sequence[Mapping[str, Any]], *, answer_tokens: int = DEFAULT_ANSWER_TOKENS
) -> int:
    """Tokens to reserve for a request: :func:`estimate_prompt_tokens` plus ``answer_tokens``
    for the answer (pass the request's ``max_output_tokens`` / ``max_tokens`` when it sets
    one). The margin errs high on purpose: a rate limiter corrects it from the usage the
    server reports, whereas an estimate that is too low risks a 336502."""
    return estimate_prompt_tokens(messages) + max(0, answer_tokens)


class TokenCounter:
    """The running estimate of text fed piece by piece (a word may span pieces); its
    :attr:`total` always equals :func:`estimate_text_tokens` of everything fed so far.

    Feeding a piece costs one regular-expression scan of it and O(1) state, so a running total
    per streamed chunk is cheap.
    """

    __slots__ = ("_cjk", "_in_word", "_words")

    def __init__(self) -> None:
        self._cjk = 0
        self._words = 0
        self._in_word = False  # the text so far ends inside a word

    def feed(self, piece: str) -> int:
        """Account for ``piece`` and return the running estimate."""
        if piece:
            cjk, words = _counts(piece)
            if self._in_word and words and _is_word_char(piece[0]):
                words -= 1  # the word the previous piece ended in goes on
            self._cjk += cjk
            self._words += words
            self._in_word = _is_word_char(piece[-1])
        return self.total

    @property
    def total(self) -> int:
        """The estimate of everything fed so far."""
        return _tokens(self._cjk, self._words)
