"""Find, stream and validate training text files; the validated file list is the corpus identity.

Inputs are files and directories (searched recursively) of ``.txt``, ``.md``, ``.jsonl`` and
``.json``, each optionally ``.gz``. Files are read line by line, so memory stays constant
whatever their size. Every problem becomes ``path:line:column: what is wrong``; a file's
problems (up to a limit) are reported together. Anything that is not a regular file (a FIFO, a
device, a symlink to one) is refused before a byte is read. Pure standard library: the client
validates without torch.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from macgpt.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".json")
TEXT_SUFFIXES = (".txt", ".md")
SUFFIXES = JSONL_SUFFIXES + TEXT_SUFFIXES
MAX_PER_FILE = 10
MAX_REPORTED = 10
PROGRESS_BYTES = 8 << 20
FORMAT = "macgpt-text-1"  # bump when the rules that turn lines into texts change

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class FileEntry:
    """One validated file: where it is, what it was when read, and what it holds."""

    path: str
    size: int
    mtime_ns: int
    sha256: str  # of the (decompressed) content
    texts: int
    text_bytes: int  # UTF-8 bytes of its texts

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileEntry:
        return cls(str(d["path"]), int(d["size"]), int(d["mtime_ns"]), str(d["sha256"]),
                   int(d["texts"]), int(d["text_bytes"]))


@dataclass(frozen=True)
class Manifest:
    files: tuple[FileEntry, ...]

    @property
    def identity(self) -> str:
        """Content identity: the same texts in the same order give the same identity."""
        h = hashlib.sha256(FORMAT.encode())
        for f in self.files:
            h.update(f.sha256.encode())
        return h.hexdigest()

    @property
    def texts(self) -> int:
        return sum(f.texts for f in self.files)

    @property
    def text_bytes(self) -> int:
        return sum(f.text_bytes for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "files": [asdict(f) for f in self.files]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        return cls(tuple(FileEntry.from_dict(f) for f in d["files"]))


def _kind(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    return "text" if suffix in TEXT_SUFFIXES else None


def _not_regular(path: Path, st: os.stat_result) -> str:
    what = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a character device"
            if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    via = f" (a symlink to {os.path.realpath(path)})" if path.is_symlink() else ""
    return f"{path}: is {what}{via}; give a regular file or a directory of them"


def expand(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """The data files named by ``inputs`` (directories searched recursively, sorted), and problems."""
    found: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        path = Path(item)
        try:
            st = path.stat()
        except FileNotFoundError:
            problems.append(f"{path}: file not found")
            continue
        except OSError as e:
            problems.append(f"{path}: cannot read: {e.strerror or e}")
            continue
        if stat.S_ISDIR(st.st_mode):
            inside = sorted(p for p in path.rglob("*") if _kind(p) and not p.name.startswith("."))
            regular = [p for p in inside if p.is_file()]
            if not regular:
                problems.append(f"{path}: directory holds no data files ({', '.join(SUFFIXES)}, or .gz of them)")
            found.extend(regular)
            problems.extend(_not_regular(p, p.stat()) for p in inside if p.exists() and not p.is_file())
        elif not stat.S_ISREG(st.st_mode):
            problems.append(_not_regular(path, st))
        elif _kind(path) is None:
            problems.append(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use .jsonl with one "
                            '{"text": ...} object per line, a UTF-8 .txt or .md file, or a directory of them')
        else:
            found.append(path)
    return found, problems


def _open(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(line source, raw file whose position measures progress)."""
    raw = open(path, "rb")
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _jsonl_text(where: str, line: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, the problem)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return None, (f"{where}:{e.colno}: invalid JSON ({e.msg.lower()} at column {e.colno}); each line "
                      'must be one object like {"text": "..."}')
    if not isinstance(obj, dict):
        return None, f"{where}:1: expected a JSON object like {{\"text\": \"...\"}}, got {type(obj).__name__}"
    if "text" not in obj:
        keys = ", ".join(map(repr, list(obj)[:5])) or "none"
        return None, f"{where}:1: missing field \"text\" (fields present: {keys})"
    value = obj["text"]
    if not isinstance(value, str):
        return None, f"{where}:1: field \"text\" must be a string, got {type(value).__name__}"
    if not value.strip():
        return None, f"{where}:1: field \"text\" is empty"
    return value, None


class Problems(list[str]):
    """Problem lines, and how many more were found past the per-file cap (counted, not kept)."""

    extra = 0


def parse(path: Path, problems: list[str], hasher: Any = None, progress: Progress | None = None) -> Iterator[str]:
    """The texts of one file, streamed; problems are appended (past ``MAX_PER_FILE`` a file's
    problems are only counted, in ``Problems.extra``, so a file full of errors costs no memory)."""
    jsonl = _kind(path) == "jsonl"
    total = path.stat().st_size
    source, raw = _open(path)
    found: list[str] = []
    extra = 0
    offset, next_report = 0, PROGRESS_BYTES
    try:
        for lineno, data in enumerate(source, start=1):
            if hasher is not None:
                hasher.update(data)
            start, offset = offset, offset + len(data)
            if lineno == 1 and data.startswith(b"\xef\xbb\xbf"):
                data, start = data[3:], start + 3
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as e:
                msg = (f"{path}:{lineno}:{e.start + 1}: invalid UTF-8 (byte 0x{data[e.start]:02x} at byte offset "
                       f"{start + e.start}); save the file as UTF-8")
                text = None
            else:
                if not line.strip():
                    continue
                text, msg = _jsonl_text(f"{path}:{lineno}", line.rstrip("\r\n")) if jsonl else (line.strip(), None)
            if msg is not None:
                if len(found) < MAX_PER_FILE:
                    found.append(msg)
                else:
                    extra += 1
            elif text is not None:
                yield text
            if progress is not None and offset >= next_report:
                next_report = offset + PROGRESS_BYTES
                progress(raw.tell(), total)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        found.append(f"{path}: cannot read past byte {offset}: {getattr(e, 'strerror', None) or e}")
    finally:
        source.close()
        raw.close()
        problems.extend(found)
        if isinstance(problems, Problems):
            problems.extra += extra


def scan(path: Path, progress: Progress | None = None,
         on_text: Callable[[str], None] | None = None) -> tuple[FileEntry | None, list[str]]:
    """Validate one file in one streaming pass: its entry (None when it has problems) and its
    problems (a ``Problems`` that also counts those past the cap)."""
    problems = Problems()
    try:
        st = path.stat()
    except OSError as e:
        return None, [f"{path}: cannot read: {e.strerror or e}"]
    if st.st_size == 0:
        return None, [f"{path}: file is empty"]
    hasher = hashlib.sha256()
    texts = text_bytes = 0
    for text in parse(path, problems, hasher, progress):
        texts += 1
        text_bytes += len(text.encode("utf-8"))
        if on_text is not None:
            on_text(text)
    if problems:
        return None, problems
    if not texts:
        return None, [f"{path}: no usable text (only blank lines)"]
    return FileEntry(str(path.resolve()), st.st_size, st.st_mtime_ns, hasher.hexdigest(), texts, text_bytes), []


def validate(inputs: Iterable[str | Path], progress: Progress | None = None,
             on_text: Callable[[str], None] | None = None) -> Manifest:
    """Every file the inputs name, validated; DataError listing every problem found."""
    inputs = list(inputs)
    if not inputs:
        raise DataError(["no data files given"])
    paths, problems = expand(inputs)
    extra = 0
    total = sum(p.stat().st_size for p in paths)
    entries: list[FileEntry] = []
    done = 0
    for path in paths:
        report = (lambda n, _t, base=done: progress(base + n, total)) if progress else None
        entry, found = scan(path, report, on_text)
        problems.extend(found)
        extra += getattr(found, "extra", 0)
        if entry is not None:
            entries.append(entry)
        done += path.stat().st_size
    if problems:
        raise DataError(problems[:MAX_REPORTED], more=max(0, len(problems) - MAX_REPORTED) + extra)
    return Manifest(tuple(entries))


def texts_of(manifest: Manifest) -> Iterator[str]:
    """The texts of validated files, in order (problems are not expected; they are skipped)."""
    for f in manifest.files:
        yield from parse(Path(f.path), [])


def texts_in_range(path: Path, start: int, nbytes: int) -> Iterator[str]:
    """The texts of the whole lines beginning in ``[start, start + nbytes)`` of an uncompressed
    file (a sample from the middle of a big file without reading what comes before)."""
    jsonl = _kind(path) == "jsonl"
    with open(path, "rb") as f:
        f.seek(start)
        if start:
            f.readline()  # the rest of a line that began before the range
        while f.tell() < start + nbytes:
            data = f.readline()
            if not data:
                return
            try:
                line = data.decode("utf-8").lstrip("\ufeff")
            except UnicodeDecodeError:
                continue
            if line.strip():
                text = _jsonl_text("", line.rstrip("\r\n"))[0] if jsonl else line.strip()
                if text is not None:
                    yield text


def changed_files(manifest: Manifest) -> list[str]:
    """Files that are gone or whose size or modification time differ from the manifest (cheap
    ``stat`` checks only: the daemon and a restarted worker use this)."""
    out: list[str] = []
    for f in manifest.files:
        try:
            st = os.stat(f.path)
        except OSError as e:
            out.append(f"{f.path}: {e.strerror or e} (it was validated at submit)")
            continue
        if not stat.S_ISREG(st.st_mode):
            out.append(f"{f.path}: is no longer a regular file")
        elif st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
            out.append(f"{f.path}: changed since it was validated (size {f.size} -> {st.st_size} bytes, "
                       f"modified {'again' if st.st_mtime_ns != f.mtime_ns else 'no'})")
    return out


def describe_change(old: dict[str, Any], new: Manifest) -> str:
    """What differs between a recorded manifest and the current one, in a sentence."""
    before = {f["path"]: f["sha256"] for f in old.get("files", [])}
    after = {f.path: f.sha256 for f in new.files}
    parts = [f"removed {p}" for p in before if p not in after]
    parts += [f"added {p}" for p in after if p not in before]
    parts += [f"edited {p}" for p in after if p in before and before[p] != after[p]]
    return "; ".join(parts) or "the same files in a different order"
