"""Charts as hand-written SVG (matplotlib is not a dependency): horizontal bar charts and line charts.

The same data give the same bytes, so an unchanged chart is not rewritten.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import NamedTuple

SVG_FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12"'
CHAR_WIDTH = 7.2  # average width of a 12 px sans-serif character, for laying out labels
LINE_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")


def attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def svg_open(width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {SVG_FONT}>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{attr(title)}</text>',
    ]


def bar_chart_svg(items: Sequence[tuple[str, int]], title: str, empty_text: str, note: str = "") -> str:
    """A horizontal bar chart, one ``<rect class="bar">`` per item (in the given order).

    ``note`` is a line under the title (in red): what the reader must know before reading the bars.
    """
    row_height, bar_height, bar_span = 22, 15, 360
    label_width = round(max((len(label) for label, _ in items), default=10) * CHAR_WIDTH) + 12
    count_width = round(max((len(str(count)) for _, count in items), default=1) * CHAR_WIDTH) + 12
    width = label_width + bar_span + count_width + 10
    top = 34 + (20 if note else 0)
    if note:
        width = max(width, round(len(note) * CHAR_WIDTH) + 20)
    height = top + max(1, len(items)) * row_height + 10
    largest = max((count for _, count in items), default=0)
    parts = svg_open(width, height, title)
    if note:
        parts.append(f'<text class="note" x="10" y="40" fill="#b00020">{attr(note)}</text>')
    if not items:
        parts.append(f'<text x="10" y="{top + 15}" fill="#555555">{attr(empty_text)}</text>')
    for index, (label, count) in enumerate(items):
        y = top + index * row_height
        length = round(bar_span * count / largest, 1) if largest else 0
        parts += [
            f'<text x="{label_width - 6}" y="{y + 12}" text-anchor="end">{attr(label)}</text>',
            f'<rect class="bar" x="{label_width}" y="{y}" width="{length}" height="{bar_height}" '
            f'fill="#4c78a8" data-label="{attr(label)}" data-count="{count}">'
            f"<title>{attr(label)}: {count}</title></rect>",
            f'<text class="count" x="{label_width + length + 5}" y="{y + 12}">{count}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    # The round step nearest (in ratio) to an even split gives between about count/2 and 2*count ticks.
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda candidate: abs(math.log(candidate / raw)))
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def tick_text(value: float) -> str:
    return f"{value:.6g}"


class Series(NamedTuple):
    """One line of a line chart: its legend name, its points and the CSS class of its polyline."""

    name: str
    points: Sequence[tuple[int, float]]
    css_class: str


class Box(NamedTuple):
    left: int
    top: int
    width: int
    height: int


def _range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        pad = abs(low) * 0.1 or 0.1
        return low - pad, high + pad
    return low, high


def line_panel(series: Sequence[Series], box: Box, x_range: tuple[float, float], y_label: str) -> list[str]:
    """SVG elements of one plot: frame, round ticks, one polyline per series and a legend."""
    x_low, x_high = x_range
    y_low, y_high = _range([value for line in series for _, value in line.points])
    left, top, width, height = box

    def x_of(step: float) -> float:
        return left + (step - x_low) / (x_high - x_low) * width

    def y_of(value: float) -> float:
        return top + (1 - (value - y_low) / (y_high - y_low)) * height

    axis = 'stroke="#999999"'
    parts = [f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" {axis}/>']
    for tick in nice_ticks(x_low, x_high):
        x = round(x_of(tick), 1)
        parts.append(f'<line x1="{x}" y1="{top + height}" x2="{x}" y2="{top + height + 4}" {axis}/>')
        parts.append(f'<text x="{x}" y="{top + height + 17}" text-anchor="middle">{tick_text(tick)}</text>')
    for tick in nice_ticks(y_low, y_high, 4):
        y = round(y_of(tick), 1)
        parts.append(f'<line x1="{left}" y1="{y}" x2="{left + width}" y2="{y}" stroke="#eeeeee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{tick_text(tick)}</text>')
    parts.append(f'<text x="12" y="{top + height / 2}" transform="rotate(-90 12 {top + height / 2})" '
                 f'text-anchor="middle">{attr(y_label)}</text>')  # fmt: skip
    legend_x = left + 8
    for index, line in enumerate(series):
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]
        coordinates = " ".join(f"{x_of(step):.1f},{y_of(value):.1f}" for step, value in line.points)
        parts.append(f'<polyline class="{attr(line.css_class)}" data-name="{attr(line.name)}" fill="none" '
                     f'stroke="{colour}" stroke-width="1.5" points="{coordinates}"/>')  # fmt: skip
        if len(line.points) == 1:
            x, y = x_of(line.points[0][0]), y_of(line.points[0][1])
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x}" y="{top + 14}" fill="{colour}">{attr(line.name)}</text>')
        legend_x += round(len(line.name) * CHAR_WIDTH) + 16
    return parts


def line_chart_svg(title: str, panels: Sequence[tuple[str, Sequence[Series]]], empty_text: str) -> str:
    """Panels stacked over one shared step axis (``(y label, series)`` each); empty series are left out.

    Without any point the chart is the title and ``empty_text``.
    """
    width, panel_height, left, right, top = 640, 220, 70, 20, 36
    shown = [(label, [line for line in lines if line.points]) for label, lines in panels]
    shown = [(label, lines) for label, lines in shown if lines]
    height = top + max(1, len(shown)) * (panel_height + 44)
    parts = svg_open(width, height, title)
    if not shown:
        parts += [f'<text x="{left}" y="{top + panel_height // 2}" fill="#555555">{attr(empty_text)}</text>', "</svg>"]
        return "\n".join(parts) + "\n"
    steps = [step for _, lines in shown for line in lines for step, _ in line.points]
    x_low, x_high = min(steps), max(steps)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    for index, (label, lines) in enumerate(shown):
        box = Box(left, top + index * (panel_height + 44), width - left - right, panel_height)
        parts += line_panel(lines, box, (x_low, x_high), label)
    parts.append(f'<text x="{left + (width - left - right) / 2}" y="{height - 8}" text-anchor="middle">step</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
