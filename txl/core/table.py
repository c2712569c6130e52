"""Tables for the terminal and for reports: plain text, Markdown, CSV and LaTeX."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any


def _cell(value: Any, decimals: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == float("inf"):
            return "inf"
        if value != value:
            return "nan"
        return f"{value:,.{decimals}f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _decimals(column: Sequence[Any], least: int = 3, most: int = 6) -> int:
    """Decimals enough that a column's different numbers (under 1000) look different: 3, or up to 6 where two of
    them differ only further down (two plans' bpb in the fourth decimal)."""
    values = {v for v in column if isinstance(v, float) and math.isfinite(v) and abs(v) < 1000}
    for d in range(least, most + 1):
        if len({f"{v:.{d}f}" for v in values}) == len(values):
            return d
    return most


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False, title: str = "") -> str:
    """Columns of text: left-aligned labels, right-aligned numbers."""
    places = [_decimals([row[c] for row in rows]) for c in range(len(headers))]
    cells = [[_cell(v, d) for v, d in zip(row, places)] for row in rows]
    numeric = [
        all(isinstance(row[c], (int, float)) or row[c] is None for row in rows) if rows else False
        for c in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[c]) for r in cells]) for c, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    out = [title] if title else []
    out.append(line(list(headers)))
    if markdown:
        out.append(
            "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
        )
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells]
    return "\n".join(out)


FORMATS = ("text", "markdown", "csv", "latex")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "text") -> str:
    """The table as text or Markdown (formatted numbers), CSV (raw values) or a LaTeX tabular."""
    if fmt in ("text", "markdown"):
        return format_table(headers, rows, markdown=fmt == "markdown")
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return buf.getvalue().rstrip("\n")
    if fmt == "latex":
        numeric = [
            bool(rows) and all(isinstance(r[c], (int, float)) or r[c] is None for r in rows)
            for c in range(len(headers))
        ]
        spec = "".join("r" if num else "l" for num in numeric)
        lines = [
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            " & ".join(_tex(h) for h in headers) + r" \\",
            "\\midrule",
        ]
        lines += [" & ".join(_tex(_cell(v)) for v in row) + r" \\" for row in rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines)
    raise ValueError(f"unknown table format {fmt!r} (use {', '.join(FORMATS)})")


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(text: str) -> str:
    out = "".join(_TEX.get(ch, ch) for ch in str(text))
    return out.replace(",", "{,}") if out[:1].isdigit() else out  # 1{,}024: a thousands comma, not a column break


def clock(seconds: float) -> str:
    """A duration for people: '45 s', '3 min 20 s', '2 h 05 min'."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def whole(x):
    """A count stored as a float shown as the whole number it is; inf, nan, None and fractions as they are."""
    if isinstance(x, float) and math.isfinite(x) and x == int(x):
        return int(x)
    return x
