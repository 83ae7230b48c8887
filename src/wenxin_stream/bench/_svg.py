"""Small self-contained SVG line charts (no plotting library): axes, ticks, grid, legend.

Theory of operation
===================

A chart is a row of :class:`Panel` objects rendered by :func:`render` into one SVG document.
Each panel maps data to its plot area linearly; :func:`nice_ticks` picks 4–8 round tick values
(1, 2, 2.5 or 5 × 10^k steps) covering the axis range. A series is a polyline, optionally with
markers; a hollow marker marks a point that failed (find-max). Points beyond ``ylim`` are drawn
on the top edge with their value written next to them, so one outlier cannot flatten the rest
of the chart. Horizontal and vertical guide lines (a threshold, a percentile, the result) are
dashed and labelled. All text is XML-escaped; the output needs no fonts or scripts beyond a
generic ``sans-serif``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

__all__ = ["PALETTE", "Guide", "Panel", "Series", "fmt_number", "nice_ticks", "render"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
"""Series colours, in order."""

_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 72, 24, 56, 64


@dataclass(frozen=True, slots=True)
class Series:
    """A line through ``points`` (x, y); ``hollow[i]`` draws point i as an open marker."""

    label: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    markers: bool = False
    hollow: Sequence[bool] = ()


@dataclass(frozen=True, slots=True)
class Guide:
    """A dashed guide line at ``value`` on the ``axis`` ("x" or "y"), labelled at the right
    end of a y guide (``label_at="end"``) or its left end (``"start"``)."""

    axis: str
    value: float
    label: str
    color: str = "#888888"
    label_at: str = "end"


@dataclass(frozen=True, slots=True)
class Panel:
    """One plot area with its axes."""

    title: str
    xlabel: str
    ylabel: str
    series: Sequence[Series]
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    guides: Sequence[Guide] = ()
    note: str = ""
    yticks: Sequence[tuple[float, str]] = field(default_factory=tuple)
    legend_at: str = "bottom-right"


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values covering ``[low, high]`` (about ``count`` of them)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks: list[float] = []
    value = first
    while value <= high + step * 1e-6 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def fmt_number(value: float) -> str:
    """A compact label: ``1,200``, ``2.5``, ``0.04``, ``12k``."""
    if value == 0:
        return "0"
    if abs(value) >= 10000:
        text = f"{value / 1000:.1f}".rstrip("0").rstrip(".")
        return f"{text}k"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _extent(panel: Panel) -> tuple[float, float, float, float]:
    xs = [x for s in panel.series for x, _ in s.points]
    ys = [y for s in panel.series for _, y in s.points]
    xs += [g.value for g in panel.guides if g.axis == "x"]
    ys += [g.value for g in panel.guides if g.axis == "y"]
    x0, x1 = panel.xlim or ((min(xs), max(xs)) if xs else (0.0, 1.0))
    y0, y1 = panel.ylim or ((min(ys), max(ys)) if ys else (0.0, 1.0))
    return x0, x1, y0, y1


def _panel(panel: Panel, left: float, top: float, width: float, height: float) -> list[str]:
    out: list[str] = []
    x0, x1, y0, y1 = _extent(panel)
    xticks = nice_ticks(x0, x1)
    x0, x1 = min(x0, xticks[0]), max(x1, xticks[-1])
    if panel.yticks:
        ytick_pairs = list(panel.yticks)
    else:
        ticks = nice_ticks(y0, y1)
        y0, y1 = min(y0, ticks[0]), max(y1, ticks[-1])
        ytick_pairs = [(t, fmt_number(t)) for t in ticks]
    x_span = (x1 - x0) or 1.0
    y_span = (y1 - y0) or 1.0

    def px(x: float) -> float:
        return left + (x - x0) / x_span * width

    def py(y: float) -> float:
        return top + height - (min(max(y, y0), y1) - y0) / y_span * height

    bottom = top + height
    out.append(
        f'<text x="{left + width / 2:.1f}" y="{top - 14:.1f}" text-anchor="middle" '
        f'font-size="15" font-weight="bold">{escape(panel.title)}</text>'
    )
    for t in xticks:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="grid"/>')
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 18:.1f}" text-anchor="middle">'
            f"{escape(fmt_number(t))}</text>"
        )
    for t, label in ytick_pairs:
        y = py(t)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" class="grid"/>'
        )
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    out.append(
        f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
        'stroke="#333" stroke-width="1"/>'
    )
    out.append(
        f'<text x="{left + width / 2:.1f}" y="{bottom + 42:.1f}" text-anchor="middle" '
        f'font-size="13">{escape(panel.xlabel)}</text>'
    )
    out.append(
        f'<text transform="translate({left - 54},{top + height / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" font-size="13">{escape(panel.ylabel)}</text>'
    )
    for guide in panel.guides:
        style = f'stroke="{guide.color}" stroke-width="1.2" stroke-dasharray="6 4"'
        if guide.axis == "y" and y0 <= guide.value <= y1:
            y = py(guide.value)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" {style}/>')
            at_end = guide.label_at == "end"
            out.append(
                f'<text x="{left + width - 4 if at_end else left + 6}" y="{y - 4:.1f}" '
                f'text-anchor="{"end" if at_end else "start"}" '
                f'fill="{guide.color}">{escape(guide.label)}</text>'
            )
        elif guide.axis == "x" and x0 <= guide.value <= x1:
            x = px(guide.value)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" {style}/>')
            out.append(
                f'<text x="{x + 4:.1f}" y="{bottom - 8:.1f}" fill="{guide.color}">'
                f"{escape(guide.label)}</text>"
            )
    for series in panel.series:
        out += _series(series, px, py, y1)
    out += _legend(panel, left, top, width, height)
    if panel.note:
        out.append(
            f'<text x="{left + width:.1f}" y="{bottom + 58:.1f}" text-anchor="end" '
            f'font-size="11" fill="#555">{escape(panel.note)}</text>'
        )
    return out


def _series(
    series: Series, px: Callable[[float], float], py: Callable[[float], float], y_top: float
) -> list[str]:
    out: list[str] = []
    if not series.points:
        return out
    coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in series.points)
    dash = ' stroke-dasharray="7 4"' if series.dashed else ""
    out.append(
        f'<polyline points="{coords}" fill="none" stroke="{series.color}" stroke-width="2"{dash}/>'
    )
    if series.markers:
        for i, (x, y) in enumerate(series.points):
            hollow = i < len(series.hollow) and series.hollow[i]
            fill = "white" if hollow else series.color
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{fill}" '
                f'stroke="{series.color}" stroke-width="1.5"/>'
            )
            if y > y_top:  # off scale: the value, written downwards under the marker
                cx, cy = px(x), py(y) + 8  # (rotated by 90°, "←" reads as an upward arrow)
                out.append(
                    f'<text transform="translate({cx + 4:.1f},{cy:.1f}) rotate(90)" '
                    f'fill="{series.color}" font-size="11">← {escape(fmt_number(y))}</text>'
                )
    return out


def _legend(panel: Panel, left: float, top: float, width: float, height: float) -> list[str]:
    items = [s for s in panel.series if s.label]
    if not items:
        return []
    box_w = 16 + 34 + 7.2 * max(len(s.label) for s in items)
    box_h = 10 + 18 * len(items)
    x = left + 10 if panel.legend_at.endswith("left") else left + width - box_w - 10
    y = top + 10 if panel.legend_at.startswith("top") else top + height - box_h - 10
    out = [
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w:.1f}" height="{box_h}" fill="white" '
        'fill-opacity="0.9" stroke="#aaa"/>'
    ]
    for i, s in enumerate(items):
        ly = y + 14 + 18 * i
        dash = ' stroke-dasharray="7 4"' if s.dashed else ""
        out.append(
            f'<line x1="{x + 8:.1f}" y1="{ly:.1f}" x2="{x + 36:.1f}" y2="{ly:.1f}" '
            f'stroke="{s.color}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{x + 42:.1f}" y="{ly + 4:.1f}">{escape(s.label)}</text>')
    return out


def render(
    panels: Sequence[Panel], *, title: str = "", panel_width: int = 460, height: int = 420
) -> str:
    """An SVG document with ``panels`` side by side under an optional ``title``."""
    head = 34 if title else 0
    width = len(panels) * (panel_width + _MARGIN_LEFT + _MARGIN_RIGHT)
    total_h = height + head
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_h}" '
        f'viewBox="0 0 {width} {total_h}" font-family="sans-serif" font-size="12">',
        "<style>.grid{stroke:#e3e3e3;stroke-width:1}</style>",
        f'<rect width="{width}" height="{total_h}" fill="white"/>',
    ]
    if title:
        parts.append(
            f'<text x="{width / 2:.1f}" y="24" text-anchor="middle" font-size="17" '
            f'font-weight="bold">{escape(title)}</text>'
        )
    plot_h = height - _MARGIN_TOP - _MARGIN_BOTTOM
    for i, panel in enumerate(panels):
        left = i * (panel_width + _MARGIN_LEFT + _MARGIN_RIGHT) + _MARGIN_LEFT
        parts += _panel(panel, left, head + _MARGIN_TOP, panel_width, plot_h)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
