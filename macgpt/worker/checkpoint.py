"""Checkpoint files: atomic, checksummed, never unpickled, the last two kept.

A file is ``torch.save`` bytes sealed by ``macgpt.ckptformat`` (magic, SHA-256, length). Loading
verifies the seal before anything is parsed, then uses ``torch.load(weights_only=True)``, which
refuses any object that could run code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from macgpt import ckptformat
from macgpt.ckptformat import CheckpointError, checkpoint_files
from macgpt.fsutil import atomic_write_bytes

FORMAT_VERSION = 1
FINAL_NAME = "final_model.pt"

__all__ = ["CheckpointError", "checkpoint_files", "load_file", "load_latest", "load_step", "save", "save_final"]


def encode(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **state}, buf)
    return ckptformat.seal(buf.getvalue())


def decode(data: bytes, where: str = "checkpoint") -> dict[str, Any]:
    payload = ckptformat.verified_payload(data, where)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses code-carrying pickles with UnpicklingError
        raise CheckpointError(f"{where}: refused to load: {type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        version = state.get("format") if isinstance(state, dict) else "?"
        raise CheckpointError(f"{where}: unsupported checkpoint format {version}")
    return state


def load_file(path: Path) -> dict[str, Any]:
    return decode(ckptformat.read(path), str(path))



def save(job_dir: Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``ckpt-<step>.pt`` atomically, then delete all but the newest ``keep``."""
    path = Path(job_dir) / f"ckpt-{state['step']:08d}.pt"
    atomic_write_bytes(path, encode(state))
    for _, old in checkpoint_files(job_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def save_final(job_dir: Path, state: dict[str, Any]) -> Path:
    path = Path(job_dir) / FINAL_NAME
    atomic_write_bytes(path, encode(state))
    return path


def load_step(job_dir: Path, step: int) -> dict[str, Any] | None:
    """The checkpoint of exactly ``step`` if it is kept and verifies, else None."""
    for saved, path in checkpoint_files(job_dir):
        if saved == step:
            try:
                return load_file(path)
            except CheckpointError:
                return None
    return None


def load_latest(job_dir: Path) -> tuple[dict[str, Any] | None, Path | None, list[str]]:
    """The newest checkpoint that verifies, its path, and a warning per damaged newer one.

    A damaged file is renamed to ``*.damaged`` (kept for inspection) so that rotation never
    counts it among the checkpoints to keep.
    """
    warnings: list[str] = []
    for _, path in checkpoint_files(job_dir):
        try:
            return load_file(path), path, warnings
        except CheckpointError as e:
            path.replace(path.with_name(path.name + ".damaged"))
            warnings.append(f"{e}; moved aside as {path.name}.damaged, using an older checkpoint")
    return None, None, warnings
