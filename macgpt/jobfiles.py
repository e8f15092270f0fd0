"""What a job directory holds, for anyone who reads it without a worker: the file `sample` uses,
the message when there is none, and the disk space it takes. Standard library only."""

from __future__ import annotations

import os
from pathlib import Path


def disk_usage(path: Path) -> int:
    """Bytes in the files under ``path`` (0 when it does not exist); files vanishing meanwhile are skipped."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def no_checkpoint_message(job_id: int, state: str) -> str:
    if state in ("cancelled", "failed"):
        return f"job {job_id} was {state} before it saved a checkpoint: there is nothing to sample from"
    if state == "completed":
        return f"job {job_id} is completed but its final model is missing from its directory"
    return f"job {job_id} ({state}) has no checkpoint yet; try again once it has trained a little"


def best_checkpoint(job_dir: Path, state: str) -> Path | None:
    """The file `sample` uses for a job without a live worker: the final model of a completed job,
    else the newest checkpoint, else a final model."""
    from macgpt.ckptformat import checkpoint_files

    final = job_dir / "final_model.pt"
    if state == "completed" and final.exists():
        return final
    ckpts = checkpoint_files(job_dir)
    if ckpts:
        return ckpts[0][1]
    return final if final.exists() else None
