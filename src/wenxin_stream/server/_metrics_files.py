"""Per-process metric files: how several worker processes answer one ``/metrics`` together.

Theory of operation
===================

This is prometheus_client's multiprocess mode. Every process writes its values into files of
its own in one shared directory, ``counter_<pid>.db``, ``histogram_<pid>.db`` and
``gauge_<mode>_<pid>.db``, in the format of prometheus_client's ``MmapedDict`` (a memory-mapped
table of doubles keyed by the JSON of metric name, sample name, labels and help). Any process
answers a scrape by reading every file with prometheus_client's ``MultiProcessCollector``
(:func:`collector`), which sums counters and histograms over every process that ever wrote
(so a restarted worker's counts stay in the totals) and combines each gauge by its *mode*:
``livesum`` adds the values of live processes, ``max`` takes the largest, ``all`` keeps one
series per process labelled ``pid``, and so on. Who starts the workers empties the directory
before the first starts and calls :func:`mark_process_dead` when one exits: that deletes the
dead process's ``live*`` gauge files (its counters and histograms stay).

prometheus_client's own metric objects write those files on every ``inc`` and ``observe`` (a
lock and an mmap write each: several microseconds) and only into the directory named by the
process-wide ``PROMETHEUS_MULTIPROC_DIR`` as it was when prometheus_client was imported. We keep
our own cheap in-process values instead (``_metrics``) and *copy* them into the files:
:meth:`ProcessFiles.flush` runs when this process renders ``/metrics``, every
``flush_interval`` seconds from a daemon thread, and when the metrics are closed (explicitly,
when garbage-collected, or at interpreter exit). A scrape therefore sees its own process's
values exactly and the other workers' as of their last flush (at most ``flush_interval`` old).
The thread only reads the values the event loop writes; under the GIL each read is whole, and
a histogram read between the bucket and the sum update of one observation is set right by the
next flush (prometheus_client derives ``_count`` from the buckets, so those always agree).

The files hold totals, not increments: a flush writes a sample's absolute value, and only if it
changed since the last flush. If files of our pid exist already (a dead process had this pid,
or an earlier ``Metrics`` of this process used the directory), counters and histograms continue
from their values, as prometheus_client's own do, and that pid's old gauge files are removed.
Two writers in one process would overwrite each other's totals, so a process holds one
:class:`ProcessFiles` per directory at a time; a second raises. The files belong to the process
that opened them: after a ``fork`` the child makes its own (a flush from another pid raises
instead of writing the parent's totals as the child's).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, cast

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.multiprocess import mark_process_dead as _mark_process_dead
from prometheus_client.registry import Collector

__all__ = [
    "FLUSH_INTERVAL",
    "FileSample",
    "ProcessFiles",
    "Source",
    "collector",
    "mark_process_dead",
]

FLUSH_INTERVAL = 1.0
"""Default seconds between two flushes of a process's values into its files."""

FileSample = tuple[str, tuple[str, ...], tuple[str, ...], float]
"""``(sample name, label names, label values, value)`` as written to a file."""

logger = logging.getLogger("wenxin_stream.server")


class Source(Protocol):
    """A metric family whose values go into the files."""

    @property
    def metric_name(self) -> str:
        """The family's name as prometheus_client keys it (a counter's without ``_total``)."""
        ...

    @property
    def help(self) -> str:
        """The family's help text."""
        ...

    @property
    def file_type(self) -> str:
        """``counter``, ``histogram`` or ``gauge_<mode>``: the file its samples go to."""
        ...

    def file_samples(self) -> Iterable[FileSample]:
        """The samples as the files hold them (histogram buckets *not* cumulative, no
        ``_count``)."""
        ...


class _MmapedDict(Protocol):
    def write_value(self, key: str, value: float, timestamp: float) -> None: ...
    def close(self) -> None: ...


# prometheus_client leaves these untyped; the casts state the signatures we rely on.
_open_file = cast("Callable[[str], _MmapedDict]", MmapedDict)
_read_file = cast(
    "Callable[[str], Iterable[tuple[str, float, float, int]]]",
    MmapedDict.read_all_values_from_file,
)
_new_collector = cast("Callable[[None, str], Collector]", MultiProcessCollector)
_forget_process = cast("Callable[[int, str], None]", _mark_process_dead)

_held: set[tuple[str, int]] = set()
"""(directory, pid) of every open :class:`ProcessFiles` of this process: one per directory."""
_held_lock = threading.Lock()


def collector(directory: str | os.PathLike[str]) -> Collector:
    """A prometheus_client collector that reads every process's files in ``directory``."""
    return _new_collector(None, os.fspath(directory))


def mark_process_dead(pid: int, directory: str | os.PathLike[str]) -> None:
    """Forget the ``live*`` gauges of process ``pid``, which has exited (its counters and
    histograms stay in the totals). Call it from whoever starts and reaps the workers."""
    _forget_process(pid, os.fspath(directory))


class ProcessFiles:
    """This process's files in a multiprocess directory, and the thread that keeps them
    current (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        sources: Sequence[Source],
        *,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        if not flush_interval > 0:
            raise ValueError("flush_interval must be positive")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.directory = path.resolve()
        self.pid = os.getpid()
        self._claim = (str(self.directory), self.pid)
        with _held_lock:
            if self._claim in _held:
                raise ValueError(
                    f"this process already writes metrics to {self.directory}: one Metrics "
                    "per process per multiprocess directory"
                )
            _held.add(self._claim)
        self._sources = sources
        self._lock = threading.Lock()
        self._files: dict[str, _MmapedDict] = {}
        self._base: dict[str, dict[str, float]] = {}
        self._keys: dict[tuple[str, str, tuple[str, ...]], str] = {}
        self._written: dict[str, float] = {}
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(flush_interval,), name="wenxin-metrics-flush", daemon=True
        )
        self._thread.start()

    def flush(self) -> None:
        """Write every value that changed since the last flush (nothing once closed)."""
        with self._lock:
            if self._closed:
                return
            if os.getpid() != self.pid:
                raise RuntimeError(
                    f"these metric files belong to process {self.pid}: make the Metrics in "
                    "the process that counts (after fork)"
                )
            self._flush()

    def close(self) -> None:
        """Stop the thread, flush a last time and close the files; safe to call again."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if os.getpid() == self.pid:  # a forked child leaves its parent's totals alone
                    self._flush()
            finally:
                for file in self._files.values():
                    file.close()
                self._files.clear()
                with _held_lock:
                    _held.discard(self._claim)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # keep serving; the next render's flush raises it again
                logger.exception("could not write the metrics to %s", self.directory)

    def _flush(self) -> None:
        keys, written = self._keys, self._written
        for source in tuple(self._sources):
            file: _MmapedDict | None = None
            base: dict[str, float] = {}
            for name, labelnames, labelvalues, value in source.file_samples():
                key = keys.get((source.metric_name, name, labelvalues))
                if key is None:
                    key = keys[source.metric_name, name, labelvalues] = mmap_key(
                        source.metric_name, name, list(labelnames), list(labelvalues), source.help
                    )
                if written.get(key) == value:
                    continue
                if file is None:
                    file, base = self._file(source.file_type)
                file.write_value(key, value + base.get(key, 0.0), 0.0)
                written[key] = value

    def _file(self, file_type: str) -> tuple[_MmapedDict, dict[str, float]]:
        file = self._files.get(file_type)
        if file is None:
            path = self.directory / f"{file_type}_{self.pid}.db"
            base: dict[str, float] = {}
            if file_type.startswith("gauge_"):
                path.unlink(missing_ok=True)  # an earlier process's gauges describe nothing now
            elif path.exists():
                base = {key: value for key, value, _, _ in _read_file(str(path))}
            file = self._files[file_type] = _open_file(str(path))
            self._base[file_type] = base
        return file, self._base[file_type]
