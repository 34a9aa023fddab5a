"""Line charts as inline SVG, drawn by hand: report.html needs no plotting library, so the images
(and any bare install) write the whole report. Lines with markers, extra points per series (every
try of a retried step), dashed reference lines, ticks at round numbers, a legend. No script, no
external font or style: the text uses the page's sans-serif.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
WIDTH, HEIGHT = 520, 300
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 28, 44  # margins around the plot area, px


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    extra: Sequence[tuple[float, float]] = field(default_factory=tuple)  # hollow points, no line


@dataclass(frozen=True)
class Reference:
    y: float
    label: str


def nice_ticks(low: float, high: float, target: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if high <= low:  # one value (or none): a unit range above it
        high = low + (abs(low) or 1.0)
    raw = (high - low) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    count = math.ceil((high - first) / step - 1e-9)
    return [round(first + i * step, 10) for i in range(count + 1)]


def _label(value: float) -> str:
    return f"{value:g}"


class _Scale:
    def __init__(self, ticks: list[float], start_px: float, end_px: float):
        self.low, self.high = ticks[0], ticks[-1]
        self.start_px, self.end_px = start_px, end_px

    def __call__(self, value: float) -> float:
        fraction = (value - self.low) / ((self.high - self.low) or 1.0)
        return round(self.start_px + fraction * (self.end_px - self.start_px), 1)


def line_chart(series: Sequence[Series], *, x_label: str, y_label: str,
               references: Sequence[Reference] = ()) -> str:
    """One <svg> element; an empty chart (axes and a note) when no series has a point."""
    xs = [x for s in series for x in (*s.xs, *(p[0] for p in s.extra))]
    ys = [y for s in series for y in (*s.ys, *(p[1] for p in s.extra))] + [r.y for r in references]
    x_ticks = nice_ticks(0.0, max(xs, default=1.0))
    y_ticks = nice_ticks(0.0, max(ys, default=1.0) * 1.05)
    x_of = _Scale(x_ticks, LEFT, WIDTH - RIGHT)
    y_of = _Scale(y_ticks, HEIGHT - BOTTOM, TOP)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
           f'height="{HEIGHT}" font-family="sans-serif" font-size="11" role="img" '
           f'aria-label="{escape(y_label)} vs {escape(x_label)}">']
    for tick in x_ticks:
        x = x_of(tick)
        out.append(f'<line x1="{x}" y1="{TOP}" x2="{x}" y2="{HEIGHT - BOTTOM}" stroke="#e5e5e5"/>'
                   f'<text x="{x}" y="{HEIGHT - BOTTOM + 15}" text-anchor="middle">{_label(tick)}</text>')
    for tick in y_ticks:
        y = y_of(tick)
        out.append(f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#e5e5e5"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{_label(tick)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
               'fill="none" stroke="#888"/>')
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>'
               f'<text transform="translate(14 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    for ref in references:
        y = y_of(ref.y)
        out.append(f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="grey" '
                   f'stroke-dasharray="5 4"/><text x="{LEFT + 4}" y="{y - 3}" fill="grey" '
                   f'font-size="10">{escape(ref.label)}</text>')
    for index, s in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{x_of(x)},{y_of(y)}" for x, y in zip(s.xs, s.ys, strict=True))
        if points:
            out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        out += [f'<circle cx="{x_of(x)}" cy="{y_of(y)}" r="3.2" fill="{colour}"/>'
                for x, y in zip(s.xs, s.ys, strict=True)]
        out += [f'<circle cx="{x_of(x)}" cy="{y_of(y)}" r="3.2" fill="none" stroke="{colour}"/>'
                for x, y in s.extra]
        legend_y = TOP + 4 + 15 * index
        out.append(f'<line x1="{LEFT + 10}" y1="{legend_y + 8}" x2="{LEFT + 28}" y2="{legend_y + 8}" '
                   f'stroke="{colour}" stroke-width="1.8"/><text x="{LEFT + 33}" y="{legend_y + 12}">'
                   f'{escape(s.label)}</text>')
    if not xs:
        out.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="grey">no figures</text>')
    out.append("</svg>")
    return "".join(out)
