"""The Prometheus text exposition format 0.0.4, written from prometheus_client ``Metric``
families.

Theory of operation
===================

:func:`text_format` takes what a prometheus_client registry collects (``Metric`` families of
``Sample``s) and the families the caller *declared* (name, kind, help, label names, in their
order), and writes per family ``# HELP`` and ``# TYPE`` lines and one sample per line:
histograms as ``_bucket{le="…"}`` (ending with ``le="+Inf"``), ``_sum`` and ``_count``, one
child after another; labels in the family's declared order, undeclared ones (``pid``) after,
``le`` last; label values escape ``\\``, ``"`` and newlines, help text ``\\`` and newlines.
Values print like Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` (``1``, ``0.25``, ``+Inf``).
Declared families print in their order even without samples (HELP and TYPE alone: a
multiprocess directory has no samples of a family nobody has written yet); undeclared ones
(another process's, in multiprocess mode) follow.

Why not prometheus_client's ``generate_latest``: it names every counter family
``<name>_total`` (so the documented counter ``wenxin_gc_pause_seconds`` would be renamed, or
its samples would not match their ``TYPE``), prints ``le="1.0"`` and ``1.0`` where we have
always printed ``1``, and sorts labels by name. This writer keeps ``/metrics`` byte for byte
what it was before prometheus_client came in. It formats each distinct label value and ``le``
once per render (a histogram repeats them in every bucket), and sorts a histogram's samples
only when they come out of order (from the multiprocess files; our own collectors yield them
in order).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric

__all__ = ["Declared", "escape_label_value", "format_value", "text_format"]


def format_value(value: float | int) -> str:
    """A sample value as Prometheus prints it (Go's shortest ``'g'`` form)."""
    if value.__class__ is int:  # bucket counts: the common case, and the quickest
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def escape_label_value(value: str) -> str:
    """A label value escaped for the text format (``\\``, ``"``, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Declared(Protocol):
    """What :func:`text_format` knows of a family before any sample: its text."""

    @property
    def name(self) -> str: ...
    @property
    def metric_name(self) -> str: ...
    @property
    def help(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def labelnames(self) -> tuple[str, ...]: ...


_SUFFIX_ORDER = {"_bucket": 0, "_sum": 1, "_count": 2}


def text_format(declared: Iterable[Declared], metrics: Iterable[Metric]) -> bytes:
    """The Prometheus text format 0.0.4 of ``metrics`` (``Metric`` families as a
    prometheus_client registry collects them), with the names, help and label order of the
    ``declared`` families (in their order; undeclared families follow)."""
    collected = {metric.name: metric for metric in metrics}  # a registry's names are unique
    out: list[str] = []
    writer = _Writer(out)
    for family in declared:
        found = collected.pop(family.metric_name) if family.metric_name in collected else None
        samples = found.samples if found is not None else ()
        writer.family(family.name, family.kind, family.help, family.labelnames, samples)
    for metric in collected.values():  # written to the files by some other code
        counter = metric.type == "counter" and metric.samples  # named as its samples are
        name = metric.samples[0].name if counter else metric.name
        writer.family(name, metric.type, metric.documentation, (), metric.samples)
    return "".join(out).encode("utf-8")


class _Writer:
    """Appends families to ``out``, remembering escaped label values and label orders (a
    histogram repeats each of them for every bucket)."""

    def __init__(self, out: list[str]) -> None:
        self.out = out
        self._values: dict[str, str] = {}
        self._les: dict[str, str] = {}

    def _value(self, value: str) -> str:
        text = self._values.get(value)
        if text is None:
            text = self._values[value] = escape_label_value(value)
        return text

    def _le(self, value: str) -> str:  # prometheus_client writes 1.0 where we write 1
        text = self._les.get(value)
        if text is None:
            text = self._les[value] = format_value(float(value))
        return text

    def family(
        self, name: str, kind: str, help: str, labelnames: tuple[str, ...], samples: Iterable[Any]
    ) -> None:
        """Append one family: HELP, TYPE and its samples."""
        out = self.out
        out.append(f"# HELP {name} {_escape_help(help)}\n")
        out.append(f"# TYPE {name} {kind}\n")
        rank = {label: i for i, label in enumerate(labelnames)}
        orders: dict[tuple[str, ...], tuple[str, ...]] = {}
        histogram = kind == "histogram"
        lines: list[tuple[tuple[int, int, float], str]] = []
        groups: dict[str, int] = {}
        in_order = True  # as our own histograms yield them; the files' order needs a sort
        for sample in samples:
            labels: dict[str, str] = sample.labels
            keys = tuple(labels)
            order = orders.get(keys)
            if order is None:  # declared labels first, in their order; others; le last
                order = orders[keys] = tuple(
                    sorted(keys, key=lambda k: (k == "le", rank.get(k, len(rank)), k))
                )
            text = ",".join(
                f'{k}="{self._le(labels[k]) if k == "le" else self._value(labels[k])}"'
                for k in order
            )
            line = f"{sample.name}{{{text}}}" if text else sample.name
            line = f"{line} {format_value(sample.value)}\n"
            if not histogram:
                out.append(line)
                continue
            # a child's buckets (by bound), sum and count together; children as first seen
            child = text.rpartition(',le="')[0] if "le" in labels else text
            group = groups.setdefault(child, len(groups))
            suffix = _SUFFIX_ORDER.get(sample.name[len(name) :], 3)
            bound = float(labels["le"]) if suffix == 0 and "le" in labels else 0.0
            if lines and in_order:
                in_order = lines[-1][0] <= (group, suffix, bound)
            lines.append(((group, suffix, bound), line))
        if not in_order:
            lines.sort(key=lambda item: item[0])
        out.extend(line for _, line in lines)
