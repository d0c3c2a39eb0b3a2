"""Charts as SVG text, drawn on the server: no chart library, no script, no asset to fetch.

Why not a charting library: the dashboard draws two kinds of chart (lines over time, and
cost-quality curves with points), each a few dozen SVG elements; a library (Chart.js, uPlot,
Plotly) would be the largest asset on the page and need JavaScript to draw what the server can
write directly. SVG from the server is small, works without JavaScript, and is testable as
text. Every label is escaped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from html import escape

#: Series colours (colour-blind safe, Okabe-Ito).
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000")

Point = tuple[float, float]


class _Axes:
    """Maps data to pixels inside margins; ``log_x`` for costs that span decades."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], width: int, height: int,
                 log_x: bool) -> None:
        self.width, self.height, self.log_x = width, height, log_x
        self.left, self.right, self.top, self.bottom = 56, 44, 10, 34
        fx = [self._fx(x) for x in xs] or [0.0, 1.0]
        self.x0, self.x1 = min(fx), max(fx)
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 0.5, self.x1 + 0.5
        self.y0, self.y1 = min([*ys, 0.0]), max([*ys, 1e-9])
        self.y1 += (self.y1 - self.y0) * 0.05

    def _fx(self, x: float) -> float:
        return math.log10(max(x, 1e-12)) if self.log_x else x

    def px(self, x: float) -> float:
        span = self.width - self.left - self.right
        return self.left + (self._fx(x) - self.x0) / (self.x1 - self.x0) * span

    def py(self, y: float) -> float:
        span = self.height - self.top - self.bottom
        return self.height - self.bottom - (y - self.y0) / (self.y1 - self.y0) * span

    def frame(self, x_label: str, y_label: str, x_ticks: Sequence[tuple[float, str]]) -> str:
        b, left = self.height - self.bottom, self.left
        parts = [f'<line x1="{left}" y1="{b}" x2="{self.width - self.right}" y2="{b}" '
                 'class="axis"/>',
                 f'<line x1="{left}" y1="{self.top}" x2="{left}" y2="{b}" class="axis"/>']
        for y in (self.y0, (self.y0 + self.y1) / 2, self.y1):
            parts.append(f'<text x="{left - 4}" y="{self.py(y) + 4:.1f}" text-anchor="end">'
                         f'{_num(y)}</text>')
        for x, text in x_ticks:
            parts.append(f'<text x="{self.px(x):.1f}" y="{b + 14}" text-anchor="middle">'
                         f'{escape(text)}</text>')
        parts.append(f'<text x="{(left + self.width - self.right) / 2:.1f}" '
                     f'y="{self.height - 3}" text-anchor="middle">{escape(x_label)}</text>')
        parts.append(f'<text x="12" y="{self.top + (b - self.top) / 2:.1f}" '
                     f'text-anchor="middle" transform="rotate(-90 12 '
                     f'{self.top + (b - self.top) / 2:.1f})">{escape(y_label)}</text>')
        return "".join(parts)


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _svg(width: int, height: int, title: str, body: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>{body}</svg>')


def _legend(names: Sequence[str], left: int) -> str:
    """Top left, inside the plot: cost-quality curves rise to the right, so it stays clear."""
    parts = []
    for k, name in enumerate(names):
        x = left + 10
        y = 16 + 14 * k
        parts.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" '
                     f'fill="{COLOURS[k % len(COLOURS)]}"/>'
                     f'<text x="{x + 14}" y="{y + 1}">{escape(name)}</text>')
    return "".join(parts)


def time_chart(series: Mapping[str, Sequence[tuple[float, float | None]]], *, title: str,
               y_label: str, width: int = 640, height: int = 220) -> str:
    """Lines over time: ``series`` maps a name to ``(unix time, value)`` points; ``None``
    values (no data in that bucket) break the line."""
    xs = [t for pts in series.values() for t, v in pts if v is not None]
    ys = [v for pts in series.values() for _, v in pts if v is not None]
    if not xs:
        return _svg(width, height, title, f'<text x="{width / 2}" y="{height / 2}" '
                    'text-anchor="middle" class="empty">no answered requests yet</text>')
    axes = _Axes(xs, ys, width, height, log_x=False)
    body = []
    for k, (name, pts) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        run: list[str] = []
        for t, v in [*pts, (0.0, None)]:
            if v is None:
                if len(run) == 1:
                    x, y = run[0].split(",")
                    body.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{colour}"/>')
                elif run:
                    body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                                f'points="{" ".join(run)}"><title>{escape(name)}</title>'
                                '</polyline>')
                run = []
            else:
                run.append(f"{axes.px(t):.1f},{axes.py(v):.1f}")
    ticks = [(t, time.strftime("%H:%M:%S", time.localtime(t)))
             for t in (axes.x0, (axes.x0 + axes.x1) / 2, axes.x1)]
    return _svg(width, height, title, axes.frame("time", y_label, ticks) + "".join(body)
                + _legend(list(series), axes.left))


def curve_chart(curves: Mapping[str, Sequence[Point]], points: Mapping[str, Point], *,
                title: str, width: int = 640, height: int = 300) -> str:
    """Cost-quality curves (lines through their points) and named single points (dots with
    labels), on a log cost axis: x is mean USD per request, y mean quality."""
    xs = [x for pts in curves.values() for x, _ in pts] + [x for x, _ in points.values()]
    ys = [y for pts in curves.values() for _, y in pts] + [y for _, y in points.values()]
    xs = [x for x in xs if x > 0]
    if not xs:
        return _svg(width, height, title, f'<text x="{width / 2}" y="{height / 2}" '
                    'text-anchor="middle" class="empty">no curve saved with this '
                    'artifact</text>')
    axes = _Axes(xs, ys, width, height, log_x=True)
    body = []
    for k, (name, pts) in enumerate(curves.items()):
        colour = COLOURS[k % len(COLOURS)]
        coords = " ".join(f"{axes.px(x):.1f},{axes.py(y):.1f}" for x, y in sorted(pts) if x > 0)
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                    f'points="{coords}"><title>{escape(name)}</title></polyline>')
    for name, (x, y) in points.items():
        if x <= 0:
            continue
        body.append(f'<circle cx="{axes.px(x):.1f}" cy="{axes.py(y):.1f}" r="3.5" '
                    f'class="point"><title>{escape(name)}: ${x:.3g}, {y:.3f}</title></circle>'
                    f'<text x="{axes.px(x) + 5:.1f}" y="{axes.py(y) - 5:.1f}" '
                    f'class="label">{escape(name)}</text>')
    ticks = [(10 ** e, f"${10 ** e:.3g}") for e in (axes.x0, (axes.x0 + axes.x1) / 2, axes.x1)]
    return _svg(width, height, title, axes.frame("mean USD per request (log)", "quality", ticks)
                + "".join(body) + _legend(list(curves), axes.left))
