"""How events and numbers look on a terminal: the guide's metric lines, sizes, durations."""

from __future__ import annotations

import json
import time
from typing import Any


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    raise AssertionError("unreachable")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def fmt_num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def metrics_line(d: dict[str, Any]) -> str:
    """The guide's shape: 步骤 | 轮次 | 损失 | 平均损失 | 速度, then what macgpt adds (in the current language)."""
    from macgpt.client import lines

    return lines.metrics_line(d, lines.current())


def event_line(kind: str, d: dict[str, Any]) -> str | None:
    """One human-readable line for an event in the current language (see lines.py), or None."""
    from macgpt.client import lines

    return lines.event_line(kind, d)


def english_event_line(kind: str, d: dict[str, Any]) -> str | None:
    """The English line of an event, or None for events not worth a line."""
    if kind == "metrics":
        from macgpt.client import lines

        return lines.metrics_line(d, "en")
    if kind == "sample":
        return f"🧪 generation test @{d['step']} - prompt: {d['prompt']!r} → {d['text']!r}"
    if kind == "eval":
        return (f"📏 eval @{d['step']}: loss {d['loss']:.4f} | perplexity {d['perplexity']:.1f} | "
                f"{d['tokens']:,} tokens")
    if kind == "checkpoint":
        return f"💾 checkpoint @{d['step']} ({d.get('reason')}, {fmt_bytes(d.get('bytes', 0))}, {d.get('seconds', 0):.3f}s)"
    if kind == "setup":
        return setup_line(d)
    if kind == "progress":
        return "⏳ " + progress_text(d)
    return _control_line(kind, d)


def _control_line(kind: str, d: dict[str, Any]) -> str | None:
    if kind == "started":
        return f"🏃 training from step {d['step']} to {d['max_steps']} ({d['threads']} threads, batch {d['batch_size']})"
    if kind == "paused":
        return f"⏸  paused at step {d['step']} ({d.get('reason', 'user')})"
    if kind == "resumed":
        return f"▶  resumed at step {d['step']}"
    if kind == "stopped":
        where = f", checkpoint {d['checkpoint']}" if d.get("checkpoint") else ""
        return f"⏹  stopped at step {d['step']} ({d.get('reason')}){where}"
    if kind == "completed":
        ev = f", eval loss {d['eval_loss']:.4f}" if d.get("eval_loss") is not None else ""
        return f"✅ completed {d['step']} steps: train loss (last 20 steps) {d['train_loss']:.4f}{ev}"
    if kind in ("warning", "interrupt"):
        return f"⚠️  {d.get('message')}"
    if kind in ("error", "failed"):
        return f"❌ {d.get('message')}"
    if kind == "restarting":
        return (f"🔁 worker crashed ({d.get('last_error')}); restarting from step "
                f"{d.get('from_step') or 0} in {d['in_seconds']:.0f}s (crash {d['crashes']})")
    if kind == "gave_up":
        return f"❌ giving up after {d['crashes']} crashes: {d.get('last_error')}"
    if kind == "governor":
        return f"🛡  {d.get('message')}"
    if kind == "state":
        reason = f" ({d['reason']})" if d.get("reason") else ""
        return f"• state: {d['state']}{reason}"
    return None


def setup_line(d: dict[str, Any]) -> str | None:
    phase = d.get("phase")
    if phase == "torch":
        return f"🔧 PyTorch loaded ({d['seconds']:.1f}s after start)"
    if phase == "data":
        ev = f"; eval {d['eval_texts']} texts" if d.get("eval_texts") else "; no eval data"
        if d.get("holdout"):
            ev = "; no --eval-data: ~2% of the texts (chosen by hash, always the same) held out for evaluation"
        size = f"{d['bytes'] / 1e6:,.1f} MB" if "bytes" in d else f"{d['chars']:,} characters"
        return f"📚 data: {d['texts']:,} texts, {size}{ev}"
    if phase == "tokenizer":
        how = {"trained": "trained", "cache": "reused (same data and vocab)", "job": "loaded"}[d["origin"]]
        return f"🔤 tokenizer {how}: vocab {d['vocab_size']}, {d['path']}"
    if phase == "model":
        return (f"🧠 model on {d['device']}: {d['params_block']:,} block params, {d['params']:,} total; "
                f"{d['tokens']:,} training tokens ({d['chunks_per_epoch']} chunks per epoch)")
    if phase == "resumed":
        return f"↩️  resumed from step {d['step']}: {d['path']}"
    if phase == "initialized":
        return f"🌱 weights from {d['path']} (trained {d['from_step']} steps); a fresh optimizer and schedule"
    if phase == "spread":
        return (f"🔀 {d['world']} ranks ({d['nproc']} per machine x {d['nnodes']} machine(s), {d['backend']}): "
                f"rank {d['rank']} trains rows {d['rows'][0]}-{d['rows'][1] - 1} of each batch")
    return None


def progress_text(d: dict[str, Any]) -> str:
    """``encode: 12.0/100.0 MB (5.1 MB/s, ETA 17s)`` from a "progress" event."""
    if d.get("note"):
        return f"{d.get('phase')}: {d['note']}"
    total = f"/{d['total']:,.1f}" if d.get("total") is not None else ""
    rate = f" ({d['rate']:,.1f} {d.get('unit', '')}/s" if d.get("rate") else " ("
    eta = f", ETA {fmt_duration(d['eta'])})" if d.get("eta") is not None else ")"
    what = {"tokenizer": "training the tokenizer", "encode": "encoding the corpus"}.get(str(d.get("phase")), d.get("phase"))
    return f"{what}: {d.get('done', 0):,.1f}{total} {d.get('unit', '')}{rate}{eta}".replace(" ()", "")


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
