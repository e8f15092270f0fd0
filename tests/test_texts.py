"""Data files: every problem is one clear line with file, line and column; the built-in set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from macgpt.data import BUILTIN_TEST, BUILTIN_TRAIN, builtin_path
from macgpt.data.texts import DataError, load_corpus


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return p


def problems(paths: list[Path]) -> list[str]:
    with pytest.raises(DataError) as e:
        load_corpus(paths)
    return e.value.problems


def test_missing_file(tmp_path: Path) -> None:
    assert problems([tmp_path / "nope.jsonl"]) == [f"{tmp_path / 'nope.jsonl'}: file not found"]


def test_empty_file(tmp_path: Path) -> None:
    p = write(tmp_path, "e.jsonl", "")
    assert problems([p]) == [f"{p}: file is empty"]


def test_only_blank_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "b.jsonl", "\n  \n\n")
    assert problems([p]) == [f"{p}: no usable text (only blank lines)"]


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    p = write(tmp_path, "j.jsonl", '{"text": "ok"}\n{"text": "broken"\n')
    [msg] = problems([p])
    assert msg.startswith(f"{p}:2:18: invalid JSON")


def test_missing_and_non_string_text(tmp_path: Path) -> None:
    p = write(tmp_path, "t.jsonl", '{"txt": "x"}\n{"text": 5}\n{"text": "  "}\n["text"]\n')
    msgs = problems([p])
    assert msgs[0] == f"{p}:1:1: missing field \"text\" (fields present: 'txt')"
    assert msgs[1] == f"{p}:2:1: field \"text\" must be a string, got int"
    assert msgs[2] == f"{p}:3:1: field \"text\" is empty"
    assert msgs[3].startswith(f"{p}:4:1: expected a JSON object")


def test_invalid_utf8_names_line_and_byte_offset(tmp_path: Path) -> None:
    p = write(tmp_path, "u.txt", "第一行\n第二\xff行".encode().replace(b"\xc3\xbf", b"\xff"))
    [msg] = problems([p])
    assert re.match(rf"{re.escape(str(p))}:2:7: invalid UTF-8 \(byte 0xff at byte offset 16\)", msg), msg


def test_unsupported_suffix(tmp_path: Path) -> None:
    p = write(tmp_path, "d.csv", "a,b")
    assert "unsupported file type '.csv'" in problems([p])[0]


def test_all_problems_of_several_files_reported(tmp_path: Path) -> None:
    good = write(tmp_path, "g.jsonl", '{"text": "你好"}\n')
    bad = write(tmp_path, "b.jsonl", "{\n")
    msgs = problems([good, bad, tmp_path / "missing.txt"])
    assert len(msgs) == 2


def test_txt_lines_and_bom(tmp_path: Path) -> None:
    p = write(tmp_path, "a.txt", "\ufeff第一段\n\n第二段\r\n")
    c = load_corpus([p])
    assert c.texts == ("第一段", "第二段")


def test_many_problems_are_capped(tmp_path: Path) -> None:
    p = write(tmp_path, "m.jsonl", "x\n" * 50)
    with pytest.raises(DataError) as e:
        load_corpus([p])
    assert len(e.value.problems) == 10 and e.value.more == 40 and "40 more" in str(e.value)


CHAT = re.compile(r"^<\|im_start\|>(.+?)<\|im_end\|> <\|im_start\|>(.+?)<\|im_end\|>$", re.S)


@pytest.mark.parametrize(("name", "count", "greetings"), [(BUILTIN_TRAIN, 200, 25), (BUILTIN_TEST, 30, 4)])
def test_builtin_dataset(name: str, count: int, greetings: int) -> None:
    texts = load_corpus([builtin_path(name)]).texts
    assert len(texts) == count == len(set(texts))
    for t in texts:
        m = CHAT.match(t)
        assert m, t
        q, a = m.groups()
        assert "<|" not in q + a
        assert 40 <= len(q) + len(a) <= 300, t
    assert sum("你好，" in t for t in texts) >= greetings


def test_builtin_train_and_test_do_not_overlap() -> None:
    train = {CHAT.match(t).groups() for t in load_corpus([builtin_path(BUILTIN_TRAIN)]).texts}
    test = {CHAT.match(t).groups() for t in load_corpus([builtin_path(BUILTIN_TEST)]).texts}
    assert not {q for q, _ in train} & {q for q, _ in test}
    assert not {a for _, a in train} & {a for _, a in test}


def test_builtin_files_are_plain_utf8_json() -> None:
    raw = builtin_path(BUILTIN_TRAIN).read_text(encoding="utf-8")
    assert "\\u" not in raw and raw.endswith("\n")
    assert all(set(json.loads(line)) == {"text"} for line in raw.splitlines())
