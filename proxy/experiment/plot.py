"""The cumulative difference of an experiment over time, with its 95 % interval, as SVG.

Pure: a list of series points in, an SVG document out (no plotting library needed, and the
file opens in any browser or embeds in a dashboard). One line per treatment, its interval
as a shaded band, and the zero line that the band must leave for a significant result.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

W, H, PAD = 720, 360, 56
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def render_svg(name: str, control: str, series: Sequence[dict[str, Any]]) -> str:
    """``series``: ``[{"t": unix, "diffs": {variant: [diff, lo, hi]}}, ...]``."""
    variants = sorted({v for p in series for v in p.get("diffs", {})})
    values = [x for p in series for d in p.get("diffs", {}).values() for x in d]
    times = [float(p["t"]) for p in series]
    lo, hi = (min([*values, 0.0]), max([*values, 0.0])) if values else (-0.01, 0.01)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.01, hi + 0.01
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return PAD + (t - t0) / span * (W - 2 * PAD)

    def y(v: float) -> float:
        return H - PAD - (v - lo) / (hi - lo) * (H - 2 * PAD)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{PAD}" y="24" font-size="15">{escape(name)}: difference in success '
             f'rate vs {escape(control)} (cumulative, 95% interval)</text>',
             f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
             'stroke="#888" stroke-dasharray="4 3"/>']
    for tick in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{PAD - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                     f'{tick:+.2%}</text>')
    for t, anchor in ((t0, "start"), (t1, "end")):
        label = datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") if times else ""
        parts.append(f'<text x="{x(t):.1f}" y="{H - PAD + 18}" text-anchor="{anchor}">'
                     f'{label}</text>')
    for i, variant in enumerate(variants):
        colour = COLOURS[i % len(COLOURS)]
        pts = [(float(p["t"]), p["diffs"][variant]) for p in series
               if variant in p.get("diffs", {})]
        upper = " ".join(f"{x(t):.1f},{y(d[2]):.1f}" for t, d in pts)
        lower = " ".join(f"{x(t):.1f},{y(d[1]):.1f}" for t, d in reversed(pts))
        line = " ".join(f"{x(t):.1f},{y(d[0]):.1f}" for t, d in pts)
        parts += [f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.18"/>',
                  f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>',
                  f'<text x="{W - PAD}" y="{44 + 16 * i}" text-anchor="end" fill="{colour}">'
                  f'{escape(variant)}</text>']
    parts.append("</svg>")
    return "\n".join(parts)
