"""The v2 stream's plain text chunk, read without the generic parse. No I/O.

:func:`text_chunk_events` recognises the chunk a v2 stream is mostly made of — one choice with
index 0 whose delta holds only ``content`` (and maybe ``role``), no finish reason, a zero
``flag``, no usage — and appends the events :class:`~wenxin_stream._wire_v2.V2StreamParser`
makes of it (``ChunkMeta``, then ``TextDelta`` if the text is not empty) without
``json.loads``, the generic dispatch or the frozen dataclasses' ``__init__``. Any other chunk
is left to the generic parse.
"""

# Theory of operation
# ===================
#
# The SSE decoder stays in front: what arrives here is one event's decoded data (line ends,
# multi-line data and UTF-8 split across reads are its business). One precompiled regex
# FULL-matches the compact form the upstreams send (Qianfan and the emulator alike):
#
#   {"id":"…","object":"…","created":N,"model":"…","choices":[{"index":0,"delta":
#    {["role":"assistant",]"content":"…"}[,"finish_reason":null][,"flag":0]}][,"usage":null]}
#
# Keys in that order, each once, no whitespace. A match vouches for the whole value: it is
# valid JSON (so json.loads would not have raised), it has no duplicate keys (json.loads keeps
# the last), and every field the generic parse would act on is one this shape pins down — a
# ``finish_reason`` other than null, a non-zero ``flag``, ``usage``, ``error``, reasoning, tool
# calls, a second choice or an unknown key all fail the match and take the generic path.
#
# Strings: ``id``, ``object`` and ``model`` must be free of escapes and control characters
# (then the slice is the string). ``content`` may hold the escapes JSON allows; the regex
# checks their form, and a content with a backslash is decoded by ``json.decoder.scanstring``,
# the very function ``json.loads`` uses for strings (same handling of ``\uXXXX``, surrogate
# pairs, lone surrogates). Raw control characters (U+0000–U+001F), which json.loads rejects,
# fail the match. ``created`` is a JSON integer of at most 18 digits (``[0-9]``, not ``\d``,
# which would take other scripts' digits; no leading zero, which JSON forbids).
#
# The events are built by setting their slots through the slot descriptors (the frozen
# dataclass's ``__init__`` goes through ``object.__setattr__`` once per field): the same
# objects, equal to and indistinguishable from ``ChunkMeta(...)`` and ``TextDelta(...)``.
# tests/test_wire_v2_text.py feeds the same streams through this path and the generic one,
# split at every byte, and compares the events, the parser's state and the errors.

from __future__ import annotations

import re

# The function json.loads decodes strings with (C); typeshed does not list it.
from json.decoder import scanstring  # type: ignore[attr-defined]

from ._events import ChunkMeta, StreamEvent, TextDelta

__all__ = ["text_chunk_events"]

# A JSON string's body without escapes. The quantifiers are possessive (``*+``: no backtracking
# state kept, ~25 % off the match): what may follow a run of these characters is never one of
# them, so giving some back could not make a match anyway.
_SIMPLE = r'[^"\\\x00-\x1f]*+'
_ESCAPE = r'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})'
_TEXT_CHUNK = re.compile(
    rf'\{{"id":"({_SIMPLE})","object":"{_SIMPLE}","created":(0|[1-9][0-9]{{0,17}}+),'
    rf'"model":"({_SIMPLE})","choices":\[\{{"index":0,"delta":\{{(?:"role":"assistant",)?'
    rf'"content":"({_SIMPLE}(?:{_ESCAPE}{_SIMPLE})*+)"\}}'
    r'(?:,"finish_reason":null)?(?:,"flag":0)?\}\](?:,"usage":null)?\}'
)
_match_text_chunk = _TEXT_CHUNK.fullmatch

_new_meta = ChunkMeta.__new__
_meta_slots = vars(ChunkMeta)
_set_id = _meta_slots["id"].__set__
_set_created = _meta_slots["created"].__set__
_set_sentence = _meta_slots["sentence_id"].__set__
_set_model = _meta_slots["model"].__set__
_new_text = TextDelta.__new__
_set_text = vars(TextDelta)["text"].__set__


def text_chunk_events(data: str, out: list[StreamEvent]) -> str | None:
    """If ``data`` is a plain text chunk, append its events to ``out`` and return its id
    (``""`` if it has none); else return None and leave ``out`` alone."""
    if data[-3:] != "}]}" and not data.endswith(',"usage":null}'):
        return None  # usage, an error, …: not worth the regex's scan to the end
    match = _match_text_chunk(data)
    if match is None:
        return None
    rid, created, model, text = match.groups()
    meta = _new_meta(ChunkMeta)
    _set_id(meta, rid)
    _set_created(meta, int(created))
    _set_sentence(meta, None)
    _set_model(meta, model)
    out.append(meta)
    if text:
        if "\\" in text:
            text = scanstring(data, match.start(4))[0]
        delta = _new_text(TextDelta)
        _set_text(delta, text)
        out.append(delta)
    return rid
