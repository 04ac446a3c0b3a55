"""The 90-day usage chart as inline SVG rendered on the server: no script, nothing loaded."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

W, H, PAD_L, PAD_B, PAD_T = 720, 180, 56, 24, 12
ACCEPTED, REJECTED = "#1d4ed8", "#b91c1c"


def daily(buckets: list[dict[str, Any]], resource: str, first: date, days: int) -> list[tuple[date, int, int]]:
    """One (day, accepted, rejected) per day from `first`, zeros where the report has no bucket."""
    by_day: dict[date, tuple[int, int]] = {}
    for b in buckets:
        if b.get("resource") != resource:
            continue
        try:
            d = datetime.fromisoformat(str(b["start"]).replace("Z", "+00:00")).date()
        except (KeyError, ValueError):
            continue
        a, r = by_day.get(d, (0, 0))
        by_day[d] = (a + int(b.get("accepted") or 0), r + int(b.get("rejected") or 0))
    return [(first + timedelta(i), *by_day.get(first + timedelta(i), (0, 0))) for i in range(days)]


def svg(series: list[tuple[date, int, int]], title: str, desc: str, chart_id: str) -> Markup:
    peak = max([a + r for _, a, r in series] + [1])
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    bw = plot_w / max(len(series), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(desc)}</desc>',
        f'<line x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 8}" y2="{PAD_T + plot_h}" stroke="#374151"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{PAD_T + plot_h}" stroke="#374151"/>',
        f'<text x="{PAD_L - 6}" y="{PAD_T + 10}" text-anchor="end" font-size="11" fill="#111827">{peak:,}</text>',
        f'<text x="{PAD_L - 6}" y="{PAD_T + plot_h}" text-anchor="end" font-size="11" fill="#111827">0</text>',
    ]
    for i, (d, a, r) in enumerate(series):
        x = PAD_L + i * bw + 0.5
        ha, hr = plot_h * a / peak, plot_h * r / peak
        if a:
            parts.append(f'<rect x="{x:.1f}" y="{PAD_T + plot_h - ha:.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{ha:.1f}" fill="{ACCEPTED}"><title>{d.isoformat()}: {a:,}</title></rect>')
        if r:
            parts.append(f'<rect x="{x:.1f}" y="{PAD_T + plot_h - ha - hr:.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{hr:.1f}" fill="{REJECTED}"><title>{d.isoformat()}: {r:,}</title></rect>')
    for i in (0, len(series) // 2, len(series) - 1):
        if 0 <= i < len(series):
            x = PAD_L + i * bw + bw / 2
            anchor = "start" if i == 0 else "end" if i == len(series) - 1 else "middle"
            parts.append(f'<text x="{x:.1f}" y="{H - 6}" text-anchor="{anchor}" font-size="11" '
                         f'fill="#111827">{series[i][0].isoformat()}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
