"""Inline SVG plots for the evidence report, drawn in Python (no JS, no network).

:func:`headroom_timeline` plots freshness headroom over time, one series per
key (a ``<g class="series" data-key=...>`` each, so a reader or a test can
count them); headroom below zero would have been a violation, so the zero
line is drawn. :func:`bar_chart` draws labelled horizontal bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Point", "bar_chart", "headroom_timeline"]

# Colour-blind-safe (Okabe-Ito), then repeats with a dash pattern.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement: event time (µs) and headroom (ms); ``violation`` marks a miss."""

    at_us: int
    headroom_ms: int | None
    violation: bool = False


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def headroom_timeline(
    series: Mapping[str, Sequence[Point]],
    *,
    from_us: int,
    to_us: int,
    width: int = 900,
    height: int = 320,
    label_of: Mapping[str, str] | None = None,
) -> str:
    """An SVG of headroom (ms) against time, one series per key in ``series``."""
    left, right, top, bottom = 70, 200, 20, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [p.headroom_ms for pts in series.values() for p in pts if p.headroom_ms is not None]
    y_low, y_high = min([0, *values]), max([1, *values])
    # The time axis spans the points (the window when there are none): reads
    # bunched in a few seconds of a day-long window would be one vertical smear.
    times = [p.at_us for pts in series.values() for p in pts]
    t_low, t_high = (min(times), max(times)) if times else (from_us, to_us)
    if t_high - t_low < 1_000_000:
        t_high = t_low + 1_000_000

    def x(us: int) -> float:
        return left + (us - t_low) / max(1, t_high - t_low) * plot_w

    def y(ms: float) -> float:
        return top + (y_high - ms) / max(1, y_high - y_low) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        "<title>Freshness headroom per key over time</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#bbb"/>',
    ]
    for ms in _ticks(y_low, y_high):
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(ms):.1f}" y2="{y(ms):.1f}" stroke="#e4e4e4"/>'
            f'<text x="{left - 6}" y="{y(ms) + 4:.1f}" text-anchor="end" font-size="11">{ms:.0f} ms</text>'
        )
    out.append(
        f'<line class="zero" x1="{left}" x2="{left + plot_w}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
        'stroke="#c00" stroke-dasharray="4 3"/>'
    )
    for us in _ticks(t_low, t_high):
        seconds = (us - t_low) / 1e6
        out.append(
            f'<text x="{x(int(us)):.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
            f'font-size="11">+{seconds:.1f} s</text>'
        )
    out.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle" font-size="11">'
        "time since the first read shown (event time)</text>"
    )
    for i, (key, points) in enumerate(sorted(series.items())):
        colour = PALETTE[i % len(PALETTE)]
        dash = "" if i < len(PALETTE) else ' stroke-dasharray="6 3"'
        label = escape((label_of or {}).get(key, key))
        out.append(f'<g class="series" data-key="{escape(key)}">')
        measured = [p for p in sorted(points, key=lambda p: p.at_us) if p.headroom_ms is not None]
        if len(measured) > 1:
            path = " ".join(f"{x(p.at_us):.1f},{y(p.headroom_ms or 0):.1f}" for p in measured)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>'
            )
        for p in measured:
            out.append(
                f'<circle cx="{x(p.at_us):.1f}" cy="{y(p.headroom_ms or 0):.1f}" r="3" fill="{colour}">'
                f"<title>{label}: {p.headroom_ms} ms headroom</title></circle>"
            )
        for p in points:
            if p.violation:
                cx, cy = x(p.at_us), top + plot_h - 2
                out.append(
                    f'<path class="violation" d="M{cx:.1f},{cy - 10:.1f} l5,9 l-10,0 z" fill="#c00">'
                    f"<title>{label}: violation</title></path>"
                )
        legend_y = top + 14 + 16 * i
        out.append(
            f'<rect x="{left + plot_w + 12}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + plot_w + 28}" y="{legend_y}" font-size="11">{label}</text>'
        )
        out.append("</g>")
    if not series:
        out.append(
            f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h / 2:.0f}" text-anchor="middle">'
            "no reads with a freshness proof in the window</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(bars: Mapping[str, int], *, width: int = 520, colour: str = "#0072B2") -> str:
    """Horizontal bars, one per label, with their counts."""
    row, left = 22, 190
    height = max(1, len(bars)) * row + 10
    top = max([1, *bars.values()])
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
    ]
    for i, (label, count) in enumerate(bars.items()):
        y = 5 + i * row
        length = (width - left - 50) * count / top
        out.append(
            f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" font-size="12">{escape(label)}</text>'
            f'<rect class="bar" x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" fill="{colour}"/>'
            f'<text x="{left + length + 6:.1f}" y="{y + 14}" font-size="12">{count}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
