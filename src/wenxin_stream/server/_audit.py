"""The audit log of ``wenxin serve``: one JSON line per request, written off the event loop.

Theory of operation
===================

:meth:`AuditLog.record` is called by request handlers on the event loop and must never make
a stream wait; :meth:`AuditLog.request` records one request with every field of the contract
(:data:`REQUEST_FIELDS`) present, ``null`` when unknown. It stamps the time (``ts``, ISO 8601
UTC), drops ``question`` unless the log was opened with ``include_questions``, and puts the
fields on a bounded queue — nothing more.
When the queue is full (the disk is slower than the traffic) the record is dropped and
counted (:attr:`AuditLog.dropped`); the first drop logs one warning.

A writer thread takes records off the queue, a batch at a time, and after each batch pauses
:data:`PAUSE` before taking the next: under load the records of that pause are one batch, and
a record's ``put`` finds no thread waiting to be woken — one thread wake-up per pause, not one
per request (each wake-up is a context switch and a hand-over of the GIL on the event loop's
core; ``bench/PROFILE.md``). An idle writer waits on the queue and the first record wakes it.
For each record it masks anything
that looks like a secret in every string value, nested ones included — API keys (``wx-…``),
``Bearer`` credentials, ``access_token=…`` and the other OAuth fields, ``bce-auth-v1``
signatures and ``bce-v3/…`` keys (:func:`wenxin_stream._redact.redact` plus a ``wx-`` rule) —
serialises it as one line of JSON (UTF-8, non-ASCII kept), and appends the whole batch with
one ``write`` to a file opened ``O_APPEND`` with mode ``0600``. Masking and serialising run on
the writer thread, so the loop pays only for a dict and a queue put; values must therefore not
be mutated after they are passed to ``record``. Values that JSON cannot represent are written
as their ``str``.

:meth:`AuditLog.flush` waits until everything recorded so far is on disk (for tests and
shutdown); :meth:`AuditLog.close` (:meth:`AuditLog.aclose` from the event loop) flushes, stops
the thread and closes the file (idempotent; records after it are ignored). A failing write
(disk full) is counted as dropped and logged once; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._redact import MASK, redact

__all__ = ["DEFAULT_QUEUE_SIZE", "REQUEST_FIELDS", "AuditLog", "redact_value"]

DEFAULT_QUEUE_SIZE = 10_000
"""Records that may wait for the writer before new ones are dropped."""

_BATCH = 512
PAUSE = 0.05
"""Seconds the writer waits after a batch before taking the next (records queue meanwhile)."""
_os_write = os.write  # the one system call the writer makes (tests slow it down or fail it)
_log = logging.getLogger("wenxin_stream.server.audit")
_WX_KEY_RE = re.compile(r"(?<![A-Za-z0-9])wx-[A-Za-z0-9_\-]{8,}")
_SECRET_FIELDS = frozenset({"api_key", "authorization", "secret", "password", "access_token"})

REQUEST_FIELDS = (
    "key_id", "route", "model", "conversation_id", "stream_id", "status", "end_reason", "usage",
    "ttft_ms", "total_ms", "client",
)  # fmt: skip
"""The fields every request's record has (``null`` when unknown): the contract of the log."""


def redact_value(value: Any) -> Any:
    """``value`` with secrets masked in every string, recursively through dicts, lists and
    tuples; fields named like credentials (``api_key``, ``authorization``…) are masked
    whole."""
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = k if type(k) is str else str(k)
            if key.lower() in _SECRET_FIELDS:
                out[key] = MASK
            elif type(v) is str:
                out[key] = _redact_text(v)
            elif v is None or type(v) in _PLAIN:
                out[key] = v  # (most of a record's values: nothing to look into)
            else:
                out[key] = redact_value(v)
        return out
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


_PLAIN = frozenset({int, float, bool})


def _redact_text(value: str) -> str:
    value = redact(value)
    return _WX_KEY_RE.sub(f"wx-{MASK}", value) if "wx-" in value else value


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Flush:
    """A marker on the queue: set once every record before it is written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()
_REQUEST_TEMPLATE: dict[str, Any] = dict.fromkeys(REQUEST_FIELDS)


class AuditLog:
    """Appends one JSON line per :meth:`record` call to ``path`` (see the module docstring).

    ``include_questions``: keep the ``question`` field (``--audit-questions``); otherwise it
    is dropped. ``queue_size`` bounds the records waiting for the writer. The file and its
    directory are created (``0600`` / ``0700``); an :class:`OSError` is raised here if that
    fails, never later.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        include_questions: bool,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.path = Path(path)
        self.include_questions = include_questions
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with contextlib.suppress(OSError):  # a file system without modes
            os.fchmod(self._fd, 0o600)  # an older file would keep its mode otherwise
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._warned = False
        self._lock = threading.Lock()
        self.dropped = 0
        """Records lost: the queue was full, or the write failed."""
        self.written = 0
        """Records written."""
        self._thread = threading.Thread(target=self._run, name="wenxin-audit", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, include_questions={self.include_questions})"

    def record(self, **fields: Any) -> bool:
        """Queue one line: ``ts`` and ``fields`` (``question`` only if configured). Never
        blocks; returns whether the record was queued (``False``: dropped or closed)."""
        if self._closed:
            return False
        if not self.include_questions:
            fields.pop("question", None)
        fields.pop("ts", None)
        fields = {"ts": time.time(), **fields}  # formatted by the writer, off the loop
        try:
            self._queue.put_nowait(fields)
        except queue.Full:
            self._drop(1, "the audit queue is full (the disk is too slow?)")
            return False
        return True

    def request(self, fields: Mapping[str, Any], **updates: Any) -> bool:
        """:meth:`record` one request: ``fields`` and ``updates`` over every one of
        :data:`REQUEST_FIELDS` (``null`` when not given)."""
        return self.record(**{**_REQUEST_TEMPLATE, **fields, **updates})

    def _drop(self, count: int, why: str) -> None:
        with self._lock:  # the loop and the writer both drop
            self.dropped += count
            warn, self._warned = not self._warned, True
        if warn:
            _log.warning("audit log %s: dropping records: %s", self.path, why)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued so far is written; whether that happened within
        ``timeout`` seconds. Blocks the calling thread: not for the event loop's hot path."""
        if self._closed:
            return True
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread, so the event loop keeps running meanwhile."""
        await asyncio.to_thread(self.close)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the writer and close the file. Idempotent. Blocks the
        calling thread (up to about ``timeout`` seconds): from the event loop, use
        :meth:`aclose`."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):  # a writer stuck for `timeout` seconds
            self._queue.put(_STOP, timeout=timeout)  # at shutdown the queued records come first
        self._thread.join(timeout)
        if self.dropped:
            _log.warning("audit log %s: %d records were dropped", self.path, self.dropped)
        if not self._thread.is_alive():
            os.close(self._fd)

    def _run(self) -> None:
        stop = False
        while not stop:
            items = [self._queue.get()]
            while len(items) < _BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines: list[str] = []
            markers: list[_Flush] = []
            for item in items:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                else:
                    try:
                        lines.append(_line(item))
                    except Exception as exc:  # a circular structure…: lose it, not the writer
                        self._drop(1, f"cannot serialise a record: {exc!r:.200}")
            self._write(lines)
            for marker in markers:
                marker.done.set()
            if not stop and len(items) < _BATCH:
                time.sleep(PAUSE)  # let the next records gather: one wake-up for all of them

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        try:
            while data:
                data = data[_os_write(self._fd, data) :]
        except OSError as exc:
            self._drop(len(lines), f"cannot write: {exc.strerror or exc}")
            return
        self.written += len(lines)


def _line(item: object) -> str:
    fields = redact_value(item)
    if isinstance(fields, dict) and isinstance(fields.get("ts"), float):
        fields["ts"] = _timestamp(fields["ts"])
    return _encode(fields) + "\n"


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
"""``json.dumps`` with these options, without building an encoder for every line."""
