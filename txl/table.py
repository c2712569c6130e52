"""Plain-text and Markdown tables for the terminal and for reports."""

from __future__ import annotations

from typing import Any, Sequence


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == float("inf"):
            return "inf"
        if value != value:
            return "nan"
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False, title: str = "") -> str:
    """Columns of text: left-aligned labels, right-aligned numbers."""
    cells = [[_cell(v) for v in row] for row in rows]
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
        out.append("|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|")
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells]
    return "\n".join(out)
