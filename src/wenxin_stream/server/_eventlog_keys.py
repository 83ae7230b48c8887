"""What the per-answer event log keeps in Redis: key names, entry ids, records, metadata.

One answer (stream id ``s_…``) owns two keys (three while other instances read it), all
hash-tagged by the stream id so they share a Redis Cluster slot (``SharedRedis.key``):

==============================  =============================================================
``<prefix>ans:{s_…}:log``       a Redis Stream: one entry per event, id ``<seq>-1`` (the SSE
                                event's seq; ``-1`` because Redis refuses the id ``0-0``),
                                fields ``k`` (the event's kind: its SSE event name) and ``d``
                                (its data: compact JSON) — any kind, stored the same way
``<prefix>ans:{s_…}:meta``      a hash: ``owner`` (who may resume or cancel it), ``instance``
                                (the producing process: where a cancel is sent), ``model``,
                                and once the answer has ended ``ended`` = ``1`` and ``last``
                                (the seq of its ``end`` event); ``crashed`` = ``1`` when
                                that end was written for a producer that died
                                (``_eventlog_upkeep``)
``<prefix>ans:{s_…}:remote``    a marker: some other instance has a client reading the
                                answer (``_eventlog_upkeep``); it expires by itself
==============================  =============================================================

Per process: ``<prefix>cancel:{<instance>}`` (the pub/sub channel its producer listens on for
cancels) and ``<prefix>wake:{<instance>}`` (a one-entry stream its reader's blocking
``XREAD`` also waits on, written to interrupt the block when the set of followed streams
grows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ._redis import SharedRedis

__all__ = [
    "END_KIND",
    "MERGEABLE_KIND",
    "Record",
    "entry_id",
    "log_key",
    "merge_texts",
    "meta_key",
    "record_of",
    "remote_key",
    "seq_of",
]

END_KIND = b"end"
"""The kind of an answer's last event (``EntryKind.END``'s name): a reader stops after it."""

MERGEABLE_KIND = b"delta"
"""The kind whose consecutive records a lagging remote reader may merge (text concatenates)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One event of an answer as the log stores it: its seq, its kind (the SSE event name) and
    its data (compact JSON bytes)."""

    seq: int
    kind: bytes
    data: bytes

    @property
    def is_end(self) -> bool:
        """Whether this is the answer's last event."""
        return self.kind == END_KIND


def log_key(shared: SharedRedis, stream_id: str) -> str:
    """The Redis Stream holding the answer's events."""
    return shared.key("ans", stream_id, "log")


def meta_key(shared: SharedRedis, stream_id: str) -> str:
    """The hash holding who owns and produces the answer, and whether it ended."""
    return shared.key("ans", stream_id, "meta")


def remote_key(shared: SharedRedis, stream_id: str) -> str:
    """The marker saying that a client of another instance reads the answer."""
    return shared.key("ans", stream_id, "remote")


def entry_id(seq: int) -> str:
    """The Redis entry id of the event ``seq``."""
    return f"{seq}-1"


def seq_of(redis_id: bytes | str) -> int:
    """The seq of a Redis entry id written by :func:`entry_id`."""
    text = redis_id.decode() if isinstance(redis_id, bytes) else redis_id
    return int(text.partition("-")[0])


def record_of(redis_id: bytes | str, fields: dict[bytes, bytes]) -> Record:
    """A :class:`Record` from a Redis Stream entry."""
    return Record(seq_of(redis_id), fields[b"k"], fields[b"d"])


def merge_texts(records: list[Record]) -> Record:
    """Consecutive ``delta`` records as one (the seq of the last): their texts joined."""
    text = "".join(json.loads(record.data)["text"] for record in records)
    data = json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":")).encode()
    return Record(records[-1].seq, MERGEABLE_KIND, data)
