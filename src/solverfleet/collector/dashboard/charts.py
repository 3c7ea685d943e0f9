"""Charts drawn as SVG on the server: pure functions, points in, markup out (no script, no
chart library, nothing from a CDN; the stylesheet colours them through classes, so the
Content-Security-Policy stays ``default-src 'self'``).

Every chart is an ``<svg role="img">`` named by its ``<title>`` and described by ``<desc>``
(screen readers), every bar or point carries a ``<title>`` (the browser's tooltip) and the
figures as data attributes: ``data-chart`` and ``data-total`` on the ``<svg>``,
``data-label`` and ``data-value`` (the exact integer: a count, micros, milliseconds) on each
mark. Tests and scripts read those instead of pixels. The drawing scales with its box
(``viewBox``), so one chart serves 1366 and 800 px wide pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 180
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 8, 8, 22, 24
ROW = 22  # height of one row of a horizontal bar chart
LABEL_W = 150  # room for the row labels of a horizontal bar chart
MAX_LABEL = 24  # longer labels are cut (the full text stays in the tooltip)


@dataclass(frozen=True)
class Point:
    """One mark: ``label`` names it (a bucket's start, a captcha type), ``value`` is the exact
    integer it stands for, ``shown`` how a person reads it (``1.234000``, ``412 ms``)."""

    label: str
    value: int
    shown: str


def _attr(value: object) -> str:
    return str(escape(str(value)))


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _open(
    name: str, title: str, desc: str, total: str, height: int, kind: str, caption: str = ""
) -> list[str]:
    ident = "chart-" + "".join(c if c.isalnum() else "-" for c in name)
    return [
        f'<svg class="chart {kind}" id="{_attr(ident)}" viewBox="0 0 {WIDTH} {height}"'
        f' role="img" aria-labelledby="{_attr(ident)}-t {_attr(ident)}-d"'
        f' data-chart="{_attr(name)}" data-total="{_attr(total)}"'
        ' preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{_attr(ident)}-t">{escape(title)}</title>',
        f'<desc id="{_attr(ident)}-d">{escape(desc)}</desc>',
        f'<text class="caption" x="{PAD_LEFT}" y="14">{escape(title)}{escape(caption)}</text>',
    ]


def _empty(parts: list[str], height: int) -> Markup:
    parts.append(
        f'<text class="none" x="{WIDTH // 2}" y="{height // 2}" text-anchor="middle">'
        "No data in this range.</text></svg>"
    )
    return Markup("".join(parts))


def column_chart(
    name: str, title: str, points: Sequence[Point], *, total: int, total_shown: str
) -> Markup:
    """Vertical bars over time (oldest left): one per bucket, zeros included, the largest
    at full height; the first, middle and last buckets are labelled below."""
    desc = f"{len(points)} buckets, total {total_shown}"
    caption = f" (total {total_shown})"
    parts = _open(name, title, desc, str(total), HEIGHT, "columns", caption)
    if not points:
        return _empty(parts, HEIGHT)
    top = max(max(p.value for p in points), 1)
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    step = inner_w / len(points)
    base = HEIGHT - PAD_BOTTOM
    parts.append(
        f'<line class="axis" x1="{PAD_LEFT}" y1="{base}" x2="{WIDTH - PAD_RIGHT}" y2="{base}"/>'
    )
    peak = max(points, key=lambda p: p.value)
    parts.append(
        f'<text class="peak" x="{WIDTH - PAD_RIGHT}" y="14" text-anchor="end">'
        f"max {escape(peak.shown)}</text>"
    )
    for i, p in enumerate(points):
        h = max(0.0, p.value) / top * inner_h
        x = PAD_LEFT + i * step + step * 0.1
        tip = f"<title>{escape(p.label)}: {escape(p.shown)}</title>"
        # A transparent column under each bar: an empty bucket has a tooltip too.
        parts.append(
            f'<rect class="hit" x="{PAD_LEFT + i * step:.1f}" y="{PAD_TOP}" width="{step:.1f}"'
            f' height="{inner_h}">{tip}</rect>'
        )
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{base - h:.1f}" width="{step * 0.8:.1f}"'
            f' height="{h:.1f}" data-label="{_attr(p.label)}" data-value="{p.value}">'
            f"{tip}</rect>"
        )
    for i in sorted({0, len(points) // 2, len(points) - 1}):
        anchor = "start" if i == 0 else ("end" if i == len(points) - 1 else "middle")
        x = (
            PAD_LEFT
            if i == 0
            else (WIDTH - PAD_RIGHT if anchor == "end" else PAD_LEFT + (i + 0.5) * step)
        )
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
            f"{escape(_short(points[i].label))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    name: str,
    title: str,
    points: Sequence[Point],
    *,
    scale_max: int | None = None,
    total: int | None = None,
) -> Markup:
    """Horizontal bars, one row per category (a captcha type), in the order given, the value
    written after the bar; ``scale_max`` fixes the full length (10000 for a rate in hundredths
    of a percent). ``data-total``: ``total`` (the figure over every category, where a sum
    means nothing, as for a rate), else the sum."""
    height = PAD_TOP + max(1, len(points)) * ROW + 6
    total = sum(p.value for p in points) if total is None else total
    parts = _open(name, title, f"{len(points)} rows", str(total), height, "bars")
    if not points:
        return _empty(parts, height)
    top = max(scale_max or 0, max(p.value for p in points), 1)
    bar_w = WIDTH - LABEL_W - PAD_RIGHT - 90  # room for the value's text after the bar
    for i, p in enumerate(points):
        y = PAD_TOP + i * ROW
        w = max(0.0, p.value) / top * bar_w
        parts.append(
            f'<text class="label" x="{LABEL_W - 6}" y="{y + 15}" text-anchor="end">'
            f"{escape(_short(p.label))}</text>"
            f'<rect class="bar" x="{LABEL_W}" y="{y + 3}" width="{w:.1f}" height="{ROW - 6}"'
            f' data-label="{_attr(p.label)}" data-value="{p.value}">'
            f"<title>{escape(p.label)}: {escape(p.shown)}</title></rect>"
            f'<text class="value" x="{LABEL_W + w + 6:.1f}" y="{y + 15}">'
            f"{escape(p.shown)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(name: str, title: str, points: Sequence[Point]) -> Markup:
    """A line through the points in order (oldest left), the scale from the lowest value (or
    zero) to the highest; a zero line when the values go below it. ``data-total`` is the last
    value (a balance now)."""
    last = points[-1] if points else None
    parts = _open(
        name,
        title,
        f"{len(points)} points" + (f", now {last.shown}" if last else ""),
        str(last.value) if last else "0",
        HEIGHT,
        "line",
    )
    if not points or last is None:
        return _empty(parts, HEIGHT)
    low = min(0, min(p.value for p in points))
    high = max(max(p.value for p in points), low + 1)
    top = PAD_TOP + 6  # the highest dot stays clear of the caption
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT - 8
    inner_h = HEIGHT - top - PAD_BOTTOM
    step = inner_w / max(1, len(points) - 1)
    # One point (a key opened today) sits at the right end: it is "now".
    x0 = PAD_LEFT + 4 + (inner_w if len(points) == 1 else 0)

    def y(value: int) -> float:
        return top + (high - value) / (high - low) * inner_h

    parts.append(
        f'<text class="peak" x="{WIDTH - PAD_RIGHT}" y="14" text-anchor="end">'
        f"now {escape(last.shown)}</text>"
        f'<line class="axis" x1="{PAD_LEFT}" y1="{y(0):.1f}" x2="{WIDTH - PAD_RIGHT}"'
        f' y2="{y(0):.1f}"/>'
    )
    coords = [(x0 + i * step, y(p.value)) for i, p in enumerate(points)]
    path = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in coords)
    parts.append(f'<polyline class="trace" points="{path}"/>')
    for (x, yy), p in zip(coords, points, strict=True):
        parts.append(
            f'<circle class="dot" cx="{x:.1f}" cy="{yy:.1f}" r="3.5"'
            f' data-label="{_attr(p.label)}" data-value="{p.value}">'
            f"<title>{escape(p.label)}: {escape(p.shown)}</title></circle>"
        )
    if len(points) > 1:
        parts.append(
            f'<text class="tick" x="{PAD_LEFT}" y="{HEIGHT - 8}">'
            f"{escape(_short(points[0].label))}</text>"
        )
    parts.append(
        f'<text class="tick" x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
        f"{escape(_short(last.label))}</text></svg>"
    )
    return Markup("".join(parts))
