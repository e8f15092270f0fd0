"""A job's metrics file: append-only JSON lines that survive kill -9 (a torn line is skipped, never misread).

Two writers share it: the worker (a ``train`` record per metrics line, an ``eval`` record per
evaluation) and the supervisor (a ``governor`` record per decision). Each record is one
``os.write`` of a whole line to a descriptor opened with ``O_APPEND``, so writers never
interleave inside a line. A kill -9 can still end a write between two pages of the file (the
kernel checks for a fatal signal as it copies page by page), and a power cut can leave any tail:
then at most the line being written is torn, the next writer starts on a fresh line and readers skip
what does not parse. Imports only the standard library: the daemon and client read it too.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "metrics.jsonl"
# The columns of ``macgpt metrics --csv``, in order (a record lacking one leaves it empty).
COLUMNS = ("t", "kind", "step", "loss", "avg_loss", "eval_loss", "perplexity", "lr", "tokens_per_s",
           "steps_per_s", "threads", "batch_size", "micro_batch", "cpu_percent", "rss", "state", "message")


def path_in(job_dir: Path) -> Path:
    return Path(job_dir) / FILE_NAME


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a diverged loss is recorded as null
    return value


def encode(kind: str, fields: dict[str, Any], now: float | None = None) -> bytes:
    record = {"t": round(time.time() if now is None else now, 3), "kind": kind,
              **{k: _clean(v) for k, v in fields.items()}}
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode("utf-8")


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def append(path: Path, kind: str, fields: dict[str, Any], now: float | None = None) -> None:
    """Append one record; raises OSError (the caller decides whether metrics matter more than training)."""
    line = encode(kind, fields, now)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)  # the user's alone, whatever the umask
    try:
        if _ends_torn(fd):
            line = b"\n" + line
        written = os.write(fd, line)
        if written != len(line):  # a full disk mid-line: finish the line so the next record is whole
            os.write(fd, b"\n")
            raise OSError(28, "no space left for a whole metrics record", str(path))
    finally:
        os.close(fd)


@dataclass
class Metrics:
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # line numbers that did not parse

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]


def parse(text: str) -> Metrics:
    out = Metrics()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            out.skipped.append(number)
            continue
        if isinstance(record, dict) and isinstance(record.get("kind"), str):
            out.records.append(record)
        else:
            out.skipped.append(number)
    return out


def read(path: Path) -> Metrics:
    return parse(Path(path).read_text(encoding="utf-8", errors="replace"))


def csv_text(metrics: Metrics) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in metrics.records:
        writer.writerow({k: r.get(k) for k in COLUMNS})
    return buf.getvalue()


def record_governor(job_dir: Path, data: dict[str, Any]) -> None:
    """The supervisor's side: one ``governor`` record per decision; a write failure is only logged."""
    try:
        append(path_in(job_dir), "governor", {"state": data.get("state"), "message": data.get("message")})
    except OSError as e:
        import structlog

        structlog.get_logger("macgpt.metrics").warning("metrics_write_failed", path=str(path_in(job_dir)),
                                                        error=str(e))
