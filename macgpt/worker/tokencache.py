"""Token files: a corpus encoded once into flat uint16/uint32 ids, read back by windows.

A file is a 128-byte header (magic, item size, token count, tokenizer hash, corpus key, body
SHA-256) and the ids. It is written to a temp file and renamed, so a reader sees a whole file
or none; a short or damaged file fails ``open_tokens`` and is rebuilt. Windows are read with
``pread``, so resident memory does not grow with the corpus (a memory map would count every
page it ever touched).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from macgpt.fsutil import fsync_dir
from macgpt.prefetch import prefetched

MAGIC = b"MGTOKS1\n"
HEADER = struct.Struct("<8sB7xQ32s32s32s")
HEADER_SIZE = 128
BATCH_BYTES = 1 << 20  # text per encode_batch call
VERIFY_CHUNK = 8 << 20

Progress = Callable[[int], None]  # text bytes encoded so far


class TokenFile:
    """A token file opened for reading: ``len``, ``read(start, n)`` and ``gather(starts, n)``."""

    def __init__(self, path: Path, itemsize: int, count: int, tokenizer: str, key: str) -> None:
        self.path = path
        self.itemsize = itemsize
        self.dtype = np.dtype("<u2") if itemsize == 2 else np.dtype("<u4")
        self.count = count
        self.tokenizer = tokenizer
        self.key = key
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.count

    def numel(self) -> int:
        return self.count

    def read(self, start: int, n: int) -> np.ndarray:
        n = max(0, min(n, self.count - start))
        data = os.pread(self._fd, n * self.itemsize, HEADER_SIZE + start * self.itemsize)
        return np.frombuffer(data, dtype=self.dtype)

    def gather(self, starts: torch.Tensor, length: int) -> torch.Tensor:
        """Rows ``[s, s + length)`` for each start, as int64."""
        rows = np.stack([self.read(int(s), length) for s in starts.tolist()])
        return torch.from_numpy(rows.astype(np.int64))

    def close(self) -> None:
        os.close(self._fd)


class TensorTokens:
    """An in-memory id stream with TokenFile's reading interface (small corpora, tests)."""

    def __init__(self, stream: torch.Tensor) -> None:
        self.stream = stream

    def __len__(self) -> int:
        return int(self.stream.numel())

    def numel(self) -> int:
        return int(self.stream.numel())

    def read(self, start: int, n: int) -> np.ndarray:
        return self.stream[start : start + n].numpy()

    def gather(self, starts: torch.Tensor, length: int) -> torch.Tensor:
        return self.stream[starts.unsqueeze(1) + torch.arange(length)]


def as_tokens(stream: torch.Tensor | TokenFile | TensorTokens) -> TokenFile | TensorTokens:
    return TensorTokens(stream) if isinstance(stream, torch.Tensor) else stream


def open_tokens(path: Path, tokenizer_sha: str, key: str) -> tuple[TokenFile | None, str]:
    """The token file at ``path`` if whole and made for this tokenizer and corpus, else (None, why)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                return None, "missing header"
            magic, itemsize, count, tok, corpus, body_sha = HEADER.unpack_from(head)
            if magic != MAGIC or itemsize not in (2, 4):
                return None, "not a token file"
            if (tok, corpus) != (bytes.fromhex(tokenizer_sha), bytes.fromhex(key)):
                return None, "made for another tokenizer or corpus"
            size = os.fstat(f.fileno()).st_size
            if size != HEADER_SIZE + count * itemsize:
                return None, f"truncated ({size} bytes, expected {HEADER_SIZE + count * itemsize})"
            h = hashlib.sha256()
            while chunk := f.read(VERIFY_CHUNK):
                h.update(chunk)
            if h.digest() != body_sha:
                return None, "content does not match its checksum"
    except FileNotFoundError:
        return None, "not built yet"
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    return TokenFile(path, itemsize, count, tokenizer_sha, key), "ok"


def _sweep_orphans(path: Path) -> None:
    """Remove half-written copies of ``path`` left by a builder that was killed (its pid is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Writer:
    def __init__(self, path: Path, itemsize: int) -> None:
        self.path = path
        self.itemsize = itemsize
        self.dtype = np.dtype("<u2") if itemsize == 2 else np.dtype("<u4")
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        _sweep_orphans(path)
        self.f = open(self.tmp, "wb")
        self.f.write(b"\0" * HEADER_SIZE)
        self.hash = hashlib.sha256()
        self.count = 0

    def write(self, ids: list[list[int]]) -> None:
        n = sum(len(x) for x in ids)
        arr = np.fromiter(itertools.chain.from_iterable(ids), dtype=self.dtype, count=n)
        data = arr.tobytes()
        self.hash.update(data)
        self.f.write(data)
        self.count += n

    def finish(self, tokenizer_sha: str, key: str) -> None:
        self.f.seek(0)
        self.f.write(HEADER.pack(MAGIC, self.itemsize, self.count, bytes.fromhex(tokenizer_sha),
                                 bytes.fromhex(key), self.hash.digest()))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


def build(
    outputs: dict[str, Path],
    texts: Iterable[tuple[str, str]],
    encode_batch: Callable[[list[str]], list[list[int]]],
    vocab_size: int,
    tokenizer_sha: str,
    keys: dict[str, str],
    progress: Progress | None = None,
) -> dict[str, int]:
    """Encode ``(output name, text)`` pairs in batches into one token file per output (texts
    for other names are skipped); returns each file's token count. Nothing is left behind if it
    fails; progress gets the text bytes done."""
    itemsize = 2 if vocab_size <= 1 << 16 else 4
    for p in outputs.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    writers = {name: _Writer(p, itemsize) for name, p in outputs.items()}
    pending: dict[str, list[str]] = {name: [] for name in outputs}
    size = dict.fromkeys(outputs, 0)
    done = 0

    def flush(name: str) -> None:
        nonlocal done
        if pending[name]:
            writers[name].write(encode_batch(pending[name]))
            done += size[name]
            pending[name], size[name] = [], 0
            if progress is not None:
                progress(done)

    try:
        for name, text in prefetched(texts):  # reading and parsing overlap the encoder
            if name not in pending:
                continue
            pending[name].append(text)
            size[name] += len(text.encode("utf-8"))
            if size[name] >= BATCH_BYTES:
                flush(name)
        for name in outputs:
            flush(name)
        for name, w in writers.items():
            w.finish(tokenizer_sha, keys[name])
    except BaseException:
        for w in writers.values():
            if not w.f.closed:
                w.abort()
        raise
    return {name: w.count for name, w in writers.items()}


class Rate:
    """Progress in bytes as a "progress" event's fields: done and total MB, MB/s, ETA seconds."""

    def __init__(self, total_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total_bytes
        self.clock = clock
        self.t0 = clock()
        self._last = -1e9

    def due(self, every: float = 1.0) -> bool:
        """True at most once per ``every`` seconds (progress events are for people, not a log)."""
        now = self.clock()
        if now - self._last < every:
            return False
        self._last = now
        return True

    def fields(self, done_bytes: int) -> dict[str, float | None]:
        elapsed = max(1e-9, self.clock() - self.t0)
        rate = done_bytes / elapsed
        left = max(0, self.total - done_bytes)
        return {"done": round(done_bytes / 1e6, 2), "total": round(self.total / 1e6, 2), "unit": "MB",
                "rate": round(rate / 1e6, 2), "eta": round(left / rate, 1) if rate > 0 else None}
