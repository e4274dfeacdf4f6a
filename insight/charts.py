"""Server-side SVG charts: geometry computed here, markup in templates/insight/_*_chart.html.

Only numbers and pre-formatted labels reach the template, which escapes every text node; there is no
inline style (CSP): colours come from CSS classes and SVG presentation attributes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

WIDTH = 640
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40


DURATION_STEPS = (
    60,
    300,
    900,
    1800,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
)
RATIO_STEPS = (0.05, 0.1, 0.25)


def nice_top(value: float, scale: str) -> float:
    """Return an axis maximum of 4 round steps: counts 1/2/5x10^n, durations in clock units, ratios in %."""
    if value <= 0:
        return {"duration": 4 * 3600.0, "ratio": 1.0}.get(scale, 4.0)
    wanted = value / 4
    if scale == "duration":
        step = next((s for s in DURATION_STEPS if s >= wanted), math.ceil(wanted / (7 * 86400)) * 7 * 86400)
        return float(step * 4)
    if scale == "ratio":
        return float(next((s for s in RATIO_STEPS if s >= wanted), 0.25) * 4)
    return max(4.0, nice_max(wanted) * 4)


def nice_max(value: float) -> float:
    """Round a maximum up to 1, 2 or 5 x 10^n so the axis reads well."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str  # x label (bucket)
    value_label: str


@dataclass
class Series:
    name: str
    css: str
    segments: list[str] = field(default_factory=list)  # polyline "x,y x,y" strings (gaps split lines)
    points: list[Point] = field(default_factory=list)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value_label: str
    label_x: float
    css: str = ""


@dataclass
class Chart:
    """Everything a chart template needs; ``kind`` is "line" or "bar"."""

    chart_id: str
    kind: str
    title: str
    desc: str
    unit: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    plot_bottom: int = HEIGHT - BOTTOM
    plot_right: int = WIDTH - RIGHT
    ticks: list[Tick] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    x_labels: list[tuple[float, str]] = field(default_factory=list)
    empty: bool = False
    # The same numbers as a table (screen readers, copy/paste): header and rows.
    table_header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def _ticks(top: float, fmt: Callable[[float], str]) -> list[Tick]:
    plot_h = HEIGHT - BOTTOM - TOP
    return [Tick(y=round(HEIGHT - BOTTOM - plot_h * i / 4, 1), label=fmt(top * i / 4)) for i in range(5)]


def _x_labels(labels: Sequence[str], xs: Sequence[float]) -> list[tuple[float, str]]:
    # At most ~8 labels on the axis; every value stays in the table and the point titles.
    stride = max(1, math.ceil(len(labels) / 8))
    return [(xs[i], labels[i]) for i in range(len(labels)) if i % stride == 0 or i == len(labels) - 1]


def line_chart(
    *,
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    fmt: Callable[[float], str],
    unit: str = "",
    scale: str = "count",
) -> Chart:
    """Return a trend chart of one or more series; None values leave a gap in a line."""
    chart = Chart(chart_id=chart_id, kind="line", title=title, desc=desc, unit=unit)
    known = [v for _, values in series for v in values if v is not None]
    top = nice_top(max(known) if known else 0, scale)
    chart.empty = not known
    chart.ticks = _ticks(top, fmt)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - BOTTOM - TOP
    n = len(labels)
    xs = [round(LEFT + (plot_w * (i + 0.5) / n), 1) for i in range(n)] if n else []
    chart.table_header = ["Period", *[name for name, _ in series]]
    rows: list[list[str]] = [[label] for label in labels]
    for position, (name, values) in enumerate(series):
        line = Series(name=name, css=f"series-{'abcd'[position % 4]}")
        segment: list[str] = []
        for i, value in enumerate(values):
            rows[i].append(fmt(value) if value is not None else "—")
            if value is None:
                if segment:
                    line.segments.append(" ".join(segment))
                segment = []
                continue
            y = round(HEIGHT - BOTTOM - plot_h * (value / top), 1)
            segment.append(f"{xs[i]},{y}")
            line.points.append(Point(xs[i], y, labels[i], fmt(value)))
        if segment:
            line.segments.append(" ".join(segment))
        chart.series.append(line)
    chart.rows = rows
    chart.x_labels = _x_labels(labels, xs)
    return chart


def bar_chart(
    *,
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    values: Sequence[float],
    fmt: Callable[[float], str],
    unit: str = "",
    css: Sequence[str] | None = None,
    scale: str = "count",
) -> Chart:
    """Return a bar chart (a distribution or counts per period)."""
    chart = Chart(chart_id=chart_id, kind="bar", title=title, desc=desc, unit=unit)
    chart.table_header = ["", unit or "Value"]
    top = nice_top(max(values) if values else 0, scale)
    chart.empty = not any(values)
    chart.ticks = _ticks(top, fmt)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - BOTTOM - TOP
    n = len(values)
    slot = plot_w / n if n else plot_w
    width = round(slot * 0.7, 1)
    xs = []
    for i, value in enumerate(values):
        height = round(plot_h * (value / top), 1)
        x = round(LEFT + slot * i + (slot - width) / 2, 1)
        center = round(LEFT + slot * (i + 0.5), 1)
        xs.append(center)
        chart.bars.append(
            Bar(
                x=x,
                y=round(HEIGHT - BOTTOM - height, 1),
                width=width,
                height=height,
                label=labels[i],
                value_label=fmt(value),
                label_x=center,
                css=(css[i] if css else ""),
            )
        )
        chart.rows.append([labels[i], fmt(value)])
    chart.x_labels = _x_labels(labels, xs)
    return chart
