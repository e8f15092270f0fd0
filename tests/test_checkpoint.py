"""Checkpoint files: atomic, checksummed, rotated, and never able to run code when loaded."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
import torch

from macgpt.ckptformat import FOOTER, MAGIC
from macgpt.worker import checkpoint
from macgpt.worker.checkpoint import CheckpointError

from .conftest import MACGPT
from .helpers import trainer


def state(step: int) -> dict:
    return {"step": step, "w": torch.arange(10.0) * step, "name": "x"}


def test_round_trip_and_keep_last_two(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        checkpoint.save(tmp_path, state(step))
    assert [s for s, _ in checkpoint.checkpoint_files(tmp_path)] == [30, 20]
    loaded, path, warnings = checkpoint.load_latest(tmp_path)
    assert loaded["step"] == 30 and torch.equal(loaded["w"], torch.arange(10.0) * 30) and not warnings
    assert path.name == "ckpt-00000030.pt"
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_newest_falls_back_to_previous_with_a_warning(tmp_path: Path, damage: str) -> None:
    checkpoint.save(tmp_path, state(1))
    newest = checkpoint.save(tmp_path, state(2))
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 3] ^= 0x40
    else:
        data = bytearray()
    newest.write_bytes(bytes(data))
    loaded, path, warnings = checkpoint.load_latest(tmp_path)
    assert loaded["step"] == 1 and path.name == "ckpt-00000001.pt"
    assert len(warnings) == 1 and "ckpt-00000002.pt" in warnings[0]
    assert (tmp_path / "ckpt-00000002.pt.damaged").exists()  # kept aside, out of the rotation


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = checkpoint.save(tmp_path, state(5))
    before = path.read_bytes()

    with pytest.raises(Exception):  # noqa: B017  (any failure while encoding)
        checkpoint.save(tmp_path, {"step": 5, "bad": lambda: 1})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*tmp*"))


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(tmp_path: Path, with_footer: bool) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"format": 1, "step": Evil(marker)}, buf)
    payload = buf.getvalue()
    import hashlib

    if with_footer:
        payload += FOOTER.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload))
    path = tmp_path / "evil.pt"
    path.write_bytes(payload)
    return path, marker


@pytest.mark.parametrize("with_footer", [True, False])
def test_code_carrying_file_is_refused_without_running_it(tmp_path: Path, with_footer: bool) -> None:
    path, marker = evil_checkpoint(tmp_path, with_footer)
    with pytest.raises(CheckpointError, match=r"refused to load|not a macgpt checkpoint"):
        checkpoint.load_file(path)
    assert not marker.exists()


def test_raw_pickle_via_the_cli_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())  # a protocol-0 pickle
    r = subprocess.run([MACGPT, "sample", "你好", "--model", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and "not a macgpt checkpoint" in r.stderr
    evil, marker2 = evil_checkpoint(tmp_path, True)
    r = subprocess.run([MACGPT, "evaluate", "--model", str(evil)], capture_output=True, text=True)
    assert r.returncode == 2 and "refused to load" in r.stderr
    assert not marker.exists() and not marker2.exists()


def test_trainer_state_survives_a_checkpoint(tmp_path: Path) -> None:
    tr = trainer()
    for _ in range(5):
        tr.train_step()
    checkpoint.save(tmp_path, tr.state_dict())
    loaded, _, _ = checkpoint.load_latest(tmp_path)
    other = trainer()
    other.load_state_dict(loaded)
    assert other.step == 5 and other.batcher.state() == tr.batcher.state()
    for a, b in zip(tr.model.parameters(), other.model.parameters(), strict=True):
        assert torch.equal(a, b)
