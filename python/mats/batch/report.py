"""The end-of-day HTML report: one self-contained file, charts drawn as inline SVG here.

No script, stylesheet or font is loaded from anywhere: the file opens offline in any browser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

import polars as pl

__all__ = ["bar_chart", "grouped_bar_chart", "html_table", "line_chart", "page"]

POS, NEG = "#2f6db5", "#c0392b"
PALETTE = ("#2f6db5", "#e08e0b", "#27ae60", "#8e44ad", "#c0392b")


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        return f"{v:,.{digits}f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo or 1.0
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + 1e-12:
        out.append(round(v, 10))
        v += step
    return out


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, unit: str = "",
              width: int = 640) -> str:
    """Horizontal bars from a zero line: positive to the right, negative to the left."""
    row, left, right, top = 22, 150, 70, 28
    h = top + row * len(labels) + 30
    lo, hi = min(0.0, *values) if values else 0.0, max(0.0, *values) if values else 1.0
    if lo == hi:
        hi = lo + 1
    plot = width - left - right

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>']
    for t in _ticks(lo, hi):
        parts.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" '
                     f'y2="{h - 26}" stroke="#ddd"/>'
                     f'<text x="{x(t):.1f}" y="{h - 12}" text-anchor="middle" '
                     f'font-size="10">{_fmt(t, 1 if abs(t) < 10 else 0)}</text>')
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        x0, x1 = sorted((x(0.0), x(v)))
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="11">'
                     f'{escape(lab)}</text>'
                     f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 0.5):.1f}" '
                     f'height="{row - 6}" fill="{POS if v >= 0 else NEG}"/>'
                     # negative values are labelled right of the zero line, clear of names
                     f'<text x="{x1 + 4 if v >= 0 else x(0.0) + 4:.1f}" y="{y + 14}" '
                     f'font-size="10">{_fmt(v)}{escape(unit)}</text>')
    parts.append(f'<line x1="{x(0):.1f}" y1="{top - 4}" x2="{x(0):.1f}" y2="{h - 26}" '
                 'stroke="#333"/></svg>')
    return "".join(parts)


def grouped_bar_chart(categories: Sequence[str], series: dict[str, Sequence[float]],
                      title: str, unit: str = "", width: int = 720) -> str:
    """Vertical bars, one group per category, one colour per series (with a legend)."""
    h, left, bottom, top = 300, 100, 70, 40
    vals = [v for s in series.values() for v in s] or [0.0]
    lo, hi = min(0.0, *vals), max(0.0, *vals)
    if lo == hi:
        hi = lo + 1
    plot_h = h - top - bottom
    gw = (width - left - 10) / max(len(categories), 1)
    bw = gw * 0.8 / max(len(series), 1)

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>']
    for k, name in enumerate(series):
        parts.append(f'<rect x="{left + k * 130}" y="24" width="10" height="10" '
                     f'fill="{PALETTE[k % len(PALETTE)]}"/><text x="{left + k * 130 + 14}" '
                     f'y="33" font-size="11">{escape(name)}</text>')
    for t in _ticks(lo, hi):
        parts.append(f'<line x1="{left}" y1="{y(t):.1f}" x2="{width - 10}" y2="{y(t):.1f}" '
                     f'stroke="#ddd"/><text x="{left - 4}" y="{y(t) + 3:.1f}" '
                     f'text-anchor="end" font-size="10">{_fmt(t, 2)}{escape(unit)}</text>')
    for i, cat in enumerate(categories):
        gx0 = left + i * gw + gw * 0.1
        for k, vs in enumerate(series.values()):
            v = vs[i]
            y0, y1 = sorted((y(0.0), y(v)))
            parts.append(f'<rect x="{gx0 + k * bw:.1f}" y="{y0:.1f}" width="{bw:.1f}" '
                         f'height="{max(y1 - y0, 0.5):.1f}" '
                         f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(cat)}: '
                         f'{_fmt(v, 4)}{escape(unit)}</title></rect>')
        cx = left + i * gw + gw / 2
        parts.append(f'<text x="{cx:.1f}" y="{h - bottom + 14}" font-size="10" '
                     f'text-anchor="end" transform="rotate(-35 {cx:.1f} {h - bottom + 14})">'
                     f'{escape(cat)}</text>')
    parts.append(f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - 10}" y2="{y(0):.1f}" '
                 'stroke="#333"/></svg>')
    return "".join(parts)


def line_chart(x_labels: Sequence[str], series: dict[str, Sequence[float]], title: str,
               marks: Sequence[int] = (), width: int = 720) -> str:
    """Lines over a shared x axis; ``marks`` are indices drawn as red dots on the first line."""
    h, left, bottom, top = 280, 80, 40, 40
    vals = [v for s in series.values() for v in s] or [0.0]
    lo, hi = min(vals), max(vals)
    if lo == hi:
        hi = lo + 1
    n = max(len(x_labels), 2)

    def x(i: int) -> float:
        return left + i / (n - 1) * (width - left - 10)

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (h - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>']
    for k, name in enumerate(series):
        parts.append(f'<rect x="{left + k * 160}" y="24" width="10" height="10" '
                     f'fill="{PALETTE[k % len(PALETTE)]}"/><text x="{left + k * 160 + 14}" '
                     f'y="33" font-size="11">{escape(name)}</text>')
    for t in _ticks(lo, hi):
        parts.append(f'<line x1="{left}" y1="{y(t):.1f}" x2="{width - 10}" y2="{y(t):.1f}" '
                     f'stroke="#eee"/><text x="{left - 4}" y="{y(t) + 3:.1f}" '
                     f'text-anchor="end" font-size="10">{_fmt(t, 0)}</text>')
    step = max(1, len(x_labels) // 6)
    for i in range(0, len(x_labels), step):
        parts.append(f'<text x="{x(i):.1f}" y="{h - 20}" font-size="10" '
                     f'text-anchor="middle">{escape(x_labels[i])}</text>')
    for k, vs in enumerate(series.values()):
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs))
        parts.append(f'<polyline fill="none" stroke="{PALETTE[k % len(PALETTE)]}" '
                     f'stroke-width="1.2" points="{pts}"/>')
    first = next(iter(series.values()), [])
    for i in marks:
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(first[i]):.1f}" r="3.5" fill="{NEG}">'
                     f'<title>exception {escape(x_labels[i])}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def html_table(df: pl.DataFrame, max_rows: int = 50, digits: int = 2) -> str:
    """A frame as an HTML table (the first ``max_rows`` rows, and how many were left out)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in df.columns)
    body = []
    for row in df.head(max_rows).iter_rows():
        cells = "".join(
            f'<td class="{"n" if isinstance(v, int | float) else ""}">'
            f"{escape(_fmt(v, digits))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    more = (f'<p class="note">{df.height - max_rows:,} more rows in the Parquet file.</p>'
            if df.height > max_rows else "")
    if df.height == 0:
        return '<p class="note">None.</p>'
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>{more}")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 6px}th{background:#f3f3f3;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#666;font-size:12px}.tiles{display:flex;flex-wrap:wrap;gap:12px}
.tile{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:150px}
.tile b{display:block;font-size:1.4em}
.green{color:#1e8449}.yellow{color:#b7950b}.red{color:#c0392b}.fail{color:#c0392b}
svg{display:block;margin:10px 0;font-family:inherit}.wide{overflow-x:auto}
"""


def page(title: str, sections: Sequence[tuple[str, str]], tiles: Sequence[tuple[str, str]]
         ) -> str:
    """The whole document: a title, summary tiles and ``(heading, html)`` sections."""
    tile_html = "".join(f'<div class="tile">{escape(k)}<b>{v}</b></div>' for k, v in tiles)
    body = "".join(f"<h2>{escape(h)}</h2>{html}" for h, html in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1><div class=\"tiles\">{tile_html}</div>{body}"
            "</body></html>\n")
