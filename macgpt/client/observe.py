"""Looking at a job's metrics file without the daemon: ``macgpt metrics`` (JSON lines or CSV),
``macgpt plot`` and the one-line loss sparkline of ``status`` and ``logs``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from macgpt import metricsfile
from macgpt.client.exitcodes import Exit
from macgpt.errors import DataError
from macgpt.paths import layout

BARS = "▁▂▃▄▅▆▇█"


def job_dir(home: str | None, ref: str) -> Path:
    """A job id (its directory under the home) or the directory of a run (``macgpt train --out``)."""
    if ref.isdigit():
        d = layout(home, create=False).job_dir(int(ref))
        if not d.is_dir():
            raise DataError([f"job {ref}: no directory {d} (is the id right, and the home?)"])
        return d
    d = Path(ref).expanduser()
    if not d.is_dir():
        raise DataError([f"{ref}: neither a job id nor a run directory"])
    return d


def load(home: str | None, ref: str) -> metricsfile.Metrics:
    path = metricsfile.path_in(job_dir(home, ref))
    if not path.exists():
        raise DataError([f"{path}: no metrics yet (the job has not logged a step)"])
    m = metricsfile.read(path)
    if m.skipped:
        click.echo(f"note: {path}: skipped unreadable line(s) {', '.join(map(str, m.skipped[:10]))}", err=True)
    return m


def metrics(home: str | None, ref: str, as_csv: bool) -> int:
    m = load(home, ref)
    if as_csv:
        click.echo(metricsfile.csv_text(m), nl=False)
    else:
        for r in m.records:
            click.echo(json.dumps(r, ensure_ascii=False))
    return Exit.OK


def plot(home: str | None, refs: Sequence[str], out: Path | None, as_json: bool = False) -> int:
    from macgpt.client.plot import Run, draw

    runs = [Run(label=f"job {r}" if r.isdigit() else Path(r).name, metrics=load(home, r)) for r in refs]
    for ref, run in zip(refs, runs, strict=True):
        if not run.metrics.of("train"):
            raise DataError([f"{ref}: the metrics file holds no training step yet"])
    if out is None:
        out = job_dir(home, refs[0]) / "loss.png"
    path = draw(runs, out)
    jobs = [{"id": int(r)} if r.isdigit() else {"id": None, "run": r} for r in refs]  # named by `id`, as everywhere
    click.echo(json.dumps({"path": str(path), "jobs": jobs}, ensure_ascii=False) if as_json else str(path))
    return Exit.OK


def sparkline(values: Sequence[float | None], width: int = 24) -> str:
    """The whole history in at most ``width`` bars from ▁ (lowest) to █ (highest), evenly sampled;
    gaps (None) as spaces."""
    vals = list(values)
    if len(vals) > width:
        vals = [vals[round(i * (len(vals) - 1) / (width - 1))] for i in range(width)]
    known = [v for v in vals if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = hi - lo or 1.0
    return "".join(" " if v is None else BARS[min(len(BARS) - 1, int((v - lo) / span * len(BARS)))] for v in vals)


def loss_line(job_dir_: Path, width: int = 24, label: str = "loss") -> str | None:
    """``loss ▇▆▅▄▃▂▁ 7.31 → 3.26`` from a job's metrics file, or None when it has no steps yet."""
    path = metricsfile.path_in(job_dir_)
    if not path.exists():
        return None
    losses = [r.get("loss") for r in metricsfile.read(path).of("train")]
    known = [v for v in losses if v is not None]
    if not known:
        return None
    return f"{label} {sparkline(losses, width)} {known[0]:.3f} → {known[-1]:.3f}"
