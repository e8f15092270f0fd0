"""The checkpoint file format without torch: a ``torch.save`` payload followed by a 48-byte footer
(magic, SHA-256 of the payload, payload length). Verifying a file needs no torch, so the CLI
refuses a wrong or damaged ``--model`` file at once; nor does listing a job's checkpoints, so the
supervisor can."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
from pathlib import Path

MAGIC = b"MGPTCKP1"
FOOTER = struct.Struct("<8s32sQ")
NAME_RE = re.compile(r"^ckpt-(\d{8,})\.pt$")  # the rolling checkpoints: ckpt-<step>.pt
MAX_FILE_BYTES = 16 * 2**30  # far above any model a laptop trains; a bigger "checkpoint" is refused unread


class CheckpointError(Exception):
    """A file is not a loadable macgpt checkpoint; the message says why."""


def seal(payload: bytes) -> bytes:
    return payload + FOOTER.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload))


def verified_payload(data: bytes, where: str = "checkpoint") -> memoryview:
    """The payload of a sealed file, after checking magic, length and checksum."""
    if len(data) < FOOTER.size:
        raise CheckpointError(f"{where}: too short to be a macgpt checkpoint ({len(data)} bytes)")
    magic, digest, length = FOOTER.unpack_from(data, len(data) - FOOTER.size)
    if magic != MAGIC:
        raise CheckpointError(f"{where}: not a macgpt checkpoint (no macgpt footer)")
    payload = memoryview(data)[: len(data) - FOOTER.size]
    if length != len(payload):
        raise CheckpointError(f"{where}: truncated or extended (expected {length} payload bytes, found {len(payload)})")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{where}: checksum mismatch (the file is damaged)")
    return payload


def read(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The whole file, if it is a regular file of at most ``limit`` bytes. A FIFO, device or socket
    is refused without reading (opened non-blocking, so a FIFO with no writer cannot wedge us)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path}: not a regular file (a pipe, device or socket), refused unread")
        if st.st_size > limit:
            raise CheckpointError(f"{path}: {st.st_size} bytes, over the {limit}-byte limit for a checkpoint")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(st.st_size + 1)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > st.st_size:
        raise CheckpointError(f"{path}: grew while being read; refused")
    return data


def verify_file(path: Path) -> None:
    verified_payload(read(path), str(path))


def checkpoint_files(job_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the rolling checkpoints, newest first."""
    found = []
    for p in Path(job_dir).glob("ckpt-*.pt"):
        m = NAME_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)
