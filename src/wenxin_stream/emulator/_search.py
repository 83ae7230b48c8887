"""Web search in the emulator: the sources, the citation markers and the status signal.

Theory of operation
===================

A request with ``web_search.enable: true`` searches (``search_mode: "auto"`` leaves the
decision to the model; the emulator always decides to search, so tests see the same thing
every time). What comes back follows ``shared/ERNIE-CURRENT.md`` §4.2:

* **sources** (:attr:`SearchPlan.results`): ``min(3, search_number, reference_number)``
  entries ``{index, url, title}`` on ``example.com`` (reserved for examples: plainly fake),
  derived from the question; sent only with ``enable_trace``, as the top-level
  ``search_results`` of the first content chunk (non-stream: of the body);
* **citation markers** (:func:`cite`): with ``enable_citation``, ``^[1]^`` / ``^[1][2]^`` before
  the ends of the answer's second to fourth sentences; the answer is then cut into deltas as
  usual, so a marker sometimes spans two chunks — as in the real capture;
* **usage**: the search adds :data:`TOKENS_PER_SOURCE` prompt tokens per source, reported in
  ``usage.prompt_tokens_details.search_tokens`` (and counted in ``prompt_tokens``);
* **status**: with ``enable_status``, a first chunk tagged ``delta_tag: "search_status"``
  carrying :data:`STATUS_TEXT`.

Both spellings of the counts are accepted (``search_number`` / ``search_num``,
``reference_number`` / ``reference_num``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .._parameters import search_field
from ._answers import brief

__all__ = ["STATUS_TEXT", "TOKENS_PER_SOURCE", "SearchPlan", "cite", "plan_search"]

STATUS_TEXT = "正在搜索相关网页……"
"""The text of the search-status signal chunk."""

TOKENS_PER_SOURCE = 150
"""Prompt tokens a search adds per source."""

MAX_SOURCES = 3


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """What a search returns: the ``results`` (``{index, url, title}``), whether they are sent
    (``trace``), whether the answer carries citation markers, whether a status chunk comes
    first, and the prompt ``tokens`` the search added."""

    results: tuple[dict[str, Any], ...]
    trace: bool
    citation: bool
    status: bool
    tokens: int


def plan_search(web_search: object, question: str) -> SearchPlan | None:
    """The search a request's ``web_search`` asks for, or None when it does not search."""
    if not isinstance(web_search, Mapping) or web_search.get("enable") is not True:
        return None
    count = MAX_SOURCES
    for name, legacy in (("search_number", "search_num"), ("reference_number", "reference_num")):
        value = search_field(web_search, name, legacy)
        if isinstance(value, int) and not isinstance(value, bool):
            count = min(count, value)
    topic = brief(question)
    results = tuple(
        {
            "index": index,
            "url": f"https://example.com/wenxin-emulator/search/{index}?q={quote(topic)}",
            "title": f"关于“{topic}”的资料 {index}（模拟搜索结果）",
        }
        for index in range(1, count + 1)
    )
    return SearchPlan(
        results,
        trace=web_search.get("enable_trace") is True,
        citation=web_search.get("enable_citation") is True,
        status=web_search.get("enable_status") is True,
        tokens=TOKENS_PER_SOURCE * count,
    )


def _markers(ordinal: int, count: int) -> str:
    first = (ordinal - 1) % count + 1
    if ordinal == 2 and count >= 2:
        return f"^[{first}][{first % count + 1}]^"
    return f"^[{first}]^"


def cite(text: str, count: int) -> str:
    """``text`` with citation markers for ``count`` sources before the ends of its second to
    fourth sentences (``。``)."""
    if count < 1:
        return text
    parts = text.split("。")
    out: list[str] = []
    ordinal = 0
    for position, part in enumerate(parts):
        out.append(part)
        if position == len(parts) - 1:
            break
        if 1 <= position <= 3 and part.strip():
            ordinal += 1
            out.append(_markers(ordinal, count))
        out.append("。")
    return "".join(out)
