"""How events and tables look on a terminal: lines in the current language, JSON lines, tables
fitted to the width. The lines themselves are in ``lines.py``, the numbers in ``units.py``."""

from __future__ import annotations

import json
import time
from typing import Any

from macgpt.client import lines


def metrics_line(d: dict[str, Any]) -> str:
    """The guide's shape: 步骤 | 轮次 | 损失 | 平均损失 | 速度, then what macgpt adds (in the current language)."""
    return lines.metrics_line(d, lines.current())


def event_line(kind: str, d: dict[str, Any]) -> str | None:
    """One human-readable line for an event in the current language (see lines.py), or None."""
    return lines.event_line(kind, d)


def json_line(kind: str, d: dict[str, Any]) -> str:
    return json.dumps({"event": kind, "time": round(time.time(), 3), **d}, ensure_ascii=False, default=str)


def cells(text: str) -> int:
    """Terminal columns ``text`` takes: a Chinese character (East Asian wide or full-width) takes two."""
    if text.isascii():
        return len(text)
    from unicodedata import east_asian_width

    return sum(2 if east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - cells(text))


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` columns, an ellipsis marking the cut."""
    if cells(text) <= limit:
        return text
    out = ""
    for c in text:
        if cells(out + c) > limit - 1:
            break
        out += c
    return out + "…"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned table (no dependency: `macgpt status` must start fast), aligned in terminal
    columns, so Chinese names and headings line up."""
    widths = [max(cells(h), *(cells(r[i]) for r in rows)) if rows else cells(h) for i, h in enumerate(headers)]
    lines = ["  ".join(_pad(h, w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(_pad(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def fit_table(headers: list[str], rows: list[list[str]], width: int, drop_order: list[str],
              shrink: tuple[str, ...] = (), floor: int = 16, names: list[str] | None = None) -> str:
    """``table`` narrowed to ``width`` columns: the ``shrink`` columns are cut (with an ellipsis) down
    to ``floor`` columns, then the columns in ``drop_order`` go, first to last, until it fits. Those
    two name columns by ``names`` (the English headings) when ``headers`` are in another language."""
    names = names or headers
    keep = list(range(len(headers)))
    drops = [names.index(h) for h in drop_order if h in names]

    def render() -> str:
        return table([headers[i] for i in keep], [[r[i] for i in keep] for r in rows])

    def over() -> int:
        return max(map(cells, render().splitlines())) - width

    for name in shrink:
        excess = over()
        if excess <= 0 or name not in names or not rows:
            continue
        i = names.index(name)
        longest = max(cells(headers[i]), *(cells(r[i]) for r in rows))
        limit = max(cells(headers[i]), floor, longest - excess)
        rows = [[_cut(c, limit) if j == i else c for j, c in enumerate(r)] for r in rows]
    while drops and over() > 0:
        keep.remove(drops.pop(0))
    return render()


def terminal_width() -> int:
    """$COLUMNS, else the terminal's width; piped output is not narrowed."""
    import os
    import shutil
    import sys

    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if sys.stdout.isatty():
        return shutil.get_terminal_size((100, 24)).columns
    return 10**6
