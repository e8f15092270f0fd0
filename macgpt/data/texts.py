"""Read and validate training text: JSONL (one {"text": ...} per line) and plain UTF-8 .txt files.

Pure standard library (the client validates data at submit time without torch). Every problem
becomes one line ``path:line:column: what is wrong``; all of a file's problems (up to a limit)
are reported together in one ``DataError``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from macgpt.errors import DataError

__all__ = ["Corpus", "DataError", "load_corpus"]

MAX_REPORTED = 10
JSONL_SUFFIXES = (".jsonl", ".json")
TEXT_SUFFIXES = (".txt",)


@dataclass(frozen=True)
class Corpus:
    texts: tuple[str, ...]
    files: tuple[str, ...]

    @property
    def sha256(self) -> str:
        """Identity of the text content (for tokenizer reuse across jobs)."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()

    @property
    def chars(self) -> int:
        return sum(len(t) for t in self.texts)


def _decode(path: Path, raw: bytes, problems: list[str]) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        problems.append(
            f"{path}:{line}:{e.start - line_start + 1}: invalid UTF-8 "
            f"(byte 0x{raw[e.start]:02x} at byte offset {e.start}); save the file as UTF-8"
        )
        return None
    return text.removeprefix("\ufeff")


def _jsonl_texts(path: Path, text: str, problems: list[str]) -> list[str]:
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{where}:{e.colno}: invalid JSON ({e.msg.lower()} at column {e.colno}); each line "
                            'must be one object like {"text": "..."}')
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}:1: expected a JSON object like {{\"text\": \"...\"}}, got {type(obj).__name__}")
            continue
        if "text" not in obj:
            keys = ", ".join(map(repr, list(obj)[:5])) or "none"
            problems.append(f"{where}:1: missing field \"text\" (fields present: {keys})")
            continue
        value = obj["text"]
        if not isinstance(value, str):
            problems.append(f"{where}:1: field \"text\" must be a string, got {type(value).__name__}")
            continue
        if not value.strip():
            problems.append(f"{where}:1: field \"text\" is empty")
            continue
        out.append(value)
    return out


def read_file(path: Path) -> tuple[list[str], list[str]]:
    """(texts, problems) of one file."""
    problems: list[str] = []
    suffix = path.suffix.lower()
    if path.is_dir():  # before the suffix: `--data /tmp` is a directory, not a file of type "(none)"
        return [], [f"{path}: is a directory, not a data file; give the .jsonl or .txt files in it"]
    if suffix not in JSONL_SUFFIXES + TEXT_SUFFIXES:
        return [], [f"{path}: unsupported file type {suffix or '(none)'!r}; use .jsonl with one "
                    '{"text": ...} object per line, or a UTF-8 .txt file']
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], [f"{path}: file not found"]
    except IsADirectoryError:
        return [], [f"{path}: is a directory, not a data file"]
    except OSError as e:
        return [], [f"{path}: cannot read: {e.strerror or e}"]
    if not raw:
        return [], [f"{path}: file is empty"]
    text = _decode(path, raw, problems)
    if text is None:
        return [], problems
    if suffix in JSONL_SUFFIXES:
        texts = _jsonl_texts(path, text, problems)
    else:
        texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts and not problems:
        problems.append(f"{path}: no usable text (only blank lines)")
    return texts, problems


def load_corpus(paths: list[str | Path]) -> Corpus:
    """All texts of the given files, in order; DataError listing every problem found."""
    if not paths:
        raise DataError(["no data files given"])
    texts: list[str] = []
    problems: list[str] = []
    for p in paths:
        file_texts, file_problems = read_file(Path(p))
        texts.extend(file_texts)
        problems.extend(file_problems)
    if problems:
        raise DataError(problems[:MAX_REPORTED], more=max(0, len(problems) - MAX_REPORTED))
    return Corpus(tuple(texts), tuple(str(Path(p).resolve()) for p in paths))
