"""The metrics file: whole lines only, even when its writers are killed with SIGKILL mid-stream."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from macgpt import metricsfile

WRITER = textwrap.dedent("""
    import sys
    from macgpt import metricsfile
    path, tag = sys.argv[1], sys.argv[2]
    i = 0
    while True:
        # records of very different sizes up to a page (a real one is ~300 bytes): Linux copies a
        # write page by page and a SIGKILL between pages ends it, so larger lines could be torn
        metricsfile.append(path, "train", {"step": i, "tag": tag, "pad": "x" * (i * 997 % 3_900), "loss": 1.5})
        i += 1
""")


def _writer(path: Path, tag: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag])


def test_sigkilled_writers_leave_no_torn_or_interleaved_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for round_ in range(6):
        procs = [_writer(path, f"{round_}-{k}") for k in range(2)]  # two writers at once, like worker + daemon
        size = path.stat().st_size if path.exists() else 0
        deadline = time.monotonic() + 30
        while (path.stat().st_size if path.exists() else 0) < size + 200_000 and time.monotonic() < deadline:
            time.sleep(0.01 * (round_ + 1))  # let both write a while, then kill at a different moment each round
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            assert p.wait(10) == -signal.SIGKILL
    text = path.read_text()
    m = metricsfile.parse(text)
    # A SIGKILL can end a write between two pages, so the line being written at a kill may be torn
    # (and, with two writers, the other's next line may land on it): at most one line per kill is
    # unreadable, it is skipped and reported, and nothing else is lost or garbled.
    kills = 6 * 2
    assert len(m.skipped) <= kills
    assert len(m.records) > 50
    for r in m.records:
        assert len(r["pad"]) == r["step"] * 997 % 3_900 and r["loss"] == 1.5
    lost = 0
    for tag in {r["tag"] for r in m.records}:  # each writer's steps in order; a gap only at a torn line
        steps = [r["step"] for r in m.records if r["tag"] == tag]
        assert steps == sorted(steps) and steps[0] <= 1
        lost += steps[-1] + 1 - len(steps)
    assert lost <= len(m.skipped)


def test_a_torn_tail_is_skipped_and_the_next_record_starts_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    metricsfile.append(path, "train", {"step": 1, "loss": 2.0}, now=10.0)
    with open(path, "ab") as f:  # what a power cut in the middle of a write could leave
        f.write(b'{"t":11.0,"kind":"train","st')
    metricsfile.append(path, "eval", {"step": 2, "eval_loss": float("nan")}, now=12.0)
    m = metricsfile.read(path)
    assert m.skipped == [2]
    assert [(r["kind"], r["step"]) for r in m.records] == [("train", 1), ("eval", 2)]
    assert m.records[1]["eval_loss"] is None  # NaN is not JSON; recorded as null
    assert json.loads(path.read_text().splitlines()[-1])["t"] == 12.0


def test_csv_has_one_row_per_record_in_the_documented_columns(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    metricsfile.append(path, "train", {"step": 10, "loss": 3.25, "lr": 0.001, "threads": 2}, now=1.0)
    metricsfile.append(path, "governor", {"state": "throttled", "message": "throttled, to 1 thread"}, now=2.0)
    lines = metricsfile.csv_text(metricsfile.read(path)).splitlines()
    assert lines[0].split(",") == list(metricsfile.COLUMNS)
    assert lines[1].startswith("1.0,train,10,3.25,,,,0.001,")
    assert lines[2].endswith('throttled,"throttled, to 1 thread"')


def test_the_file_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    """Issue 11, "Also": it was created 0644 (0666 & ~umask), readable by every user on the machine."""
    import os

    old = os.umask(0)
    try:
        metricsfile.append(metricsfile.path_in(tmp_path), "train", {"step": 1, "loss": 2.0})
    finally:
        os.umask(old)
    assert oct(metricsfile.path_in(tmp_path).stat().st_mode & 0o777) == "0o600"
