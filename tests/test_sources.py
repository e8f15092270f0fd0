"""Data inputs: directories and .gz, non-regular files refused, streamed validation in bounded
memory with the line number of a problem deep in a big file, and the manifest that identifies data."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from macgpt.data.sources import changed_files, describe_change, texts_of, validate
from macgpt.data.texts import load_corpus
from macgpt.errors import DataError


def refused(paths: list[Path | str]) -> list[str]:
    with pytest.raises(DataError) as e:
        validate(paths)
    return e.value.problems


def test_directories_are_searched_recursively_and_gz_is_read(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("第一段\n", encoding="utf-8")
    (tmp_path / "d" / "sub" / "b.md").write_text("第二段\n", encoding="utf-8")
    with gzip.open(tmp_path / "d" / "sub" / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "第三段"}, ensure_ascii=False) + "\n")
    (tmp_path / "d" / "notes.csv").write_text("ignored", encoding="utf-8")  # not a data file: skipped in a directory
    (tmp_path / "d" / ".hidden.txt").write_text("ignored\n", encoding="utf-8")
    m = validate([tmp_path / "d"])
    assert [Path(f.path).name for f in m.files] == ["a.txt", "b.md", "c.jsonl.gz"]
    assert list(texts_of(m)) == ["第一段", "第二段", "第三段"]
    assert load_corpus([tmp_path / "d"]).texts == ("第一段", "第二段", "第三段")


def test_bad_line_inside_a_gz_file_names_its_line(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write('{"text": "好"}\n{"text": 7}\n')
    assert refused([p]) == [f"{p}:2:1: field \"text\" must be a string, got int"]


def test_empty_directory_and_unsupported_file_are_clear(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.csv").write_text("a,b", encoding="utf-8")
    msgs = refused([tmp_path / "empty", tmp_path / "x.csv"])
    assert "directory holds no data files" in msgs[0]
    assert "unsupported file type '.csv'" in msgs[1]


def test_fifo_device_and_symlink_to_device_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # opening it for reading would block forever: it must be refused on stat alone
    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")
    msgs = refused([fifo, "/dev/null", link])
    assert msgs[0] == f"{fifo}: is a FIFO (named pipe); give a regular file or a directory of them"
    assert msgs[1].startswith("/dev/null: is a character device")
    assert msgs[2].startswith(f"{link}: is a character device (a symlink to /dev/zero)")
    d = tmp_path / "d"
    d.mkdir()
    (d / "ok.txt").write_text("好\n", encoding="utf-8")
    (d / "p.txt").symlink_to(fifo)
    assert any("is a FIFO" in m for m in refused([d]))


@pytest.mark.slow  # writes and validates 150 MB
def test_bad_line_two_million_is_reported_in_bounded_memory(tmp_path: Path) -> None:
    p = tmp_path / "big.jsonl"
    line = json.dumps({"text": "床前明月光，疑是地上霜。举头望明月，低头思故乡。"}, ensure_ascii=False) + "\n"
    with open(p, "w", encoding="utf-8") as f:
        for _ in range(40):
            f.write(line * 50_000)
        f.write('{"text": "broken"\n')
    assert p.stat().st_size > 150e6
    code = ("import json, sys\n"
            "from macgpt.data.sources import validate\n"
            "from macgpt.errors import DataError\n"
            "try:\n    validate([sys.argv[1]])\nexcept DataError as e:\n"
            "    print(json.dumps({'problems': e.problems}))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(p)], stdout=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:  # resident memory seen from outside (ru_maxrss would carry pytest's over the fork)
        with contextlib.suppress(psutil.Error):
            peak = max(peak, watched.memory_info().rss)
        time.sleep(0.02)
    out = json.loads(proc.stdout.read())
    proc.stdout.close()
    assert out["problems"] == [f"{p}:2000001:18: invalid JSON (expecting ',' delimiter at column 18); "
                               'each line must be one object like {"text": "..."}']
    assert 0 < peak < 80e6, peak  # the file is 150+ MB; a streaming reader holds a line at a time


def test_manifest_identity_and_changes(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("一\n二\n", encoding="utf-8")
    before = validate([a])
    assert validate([a]).identity == before.identity and changed_files(before) == []
    a.write_text("一\n三三\n", encoding="utf-8")
    [msg] = changed_files(before)
    assert msg.startswith(f"{a}: changed since it was validated")
    after = validate([a])
    assert after.identity != before.identity
    assert describe_change(before.to_dict(), after) == f"edited {a}"
    b = tmp_path / "b.txt"
    b.write_text("四\n", encoding="utf-8")
    assert describe_change(before.to_dict(), validate([b])) == f"removed {a}; added {b}"
    a.unlink()
    assert "No such file" in changed_files(before)[0]
