"""Issue 11, item 2: a hostile ``--model`` file never makes us allocate more than its tensors and
its size say. The seal is no defence (anyone can compute it), so the file is checked for what it
is (a regular file, capped), and its config against its tensors, before a model is built."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from macgpt.ckptformat import CheckpointError, read
from macgpt.worker import checkpoint, offline
from macgpt.worker.initfrom import InitFromError, load_init

from .conftest import MACGPT
from .helpers import trainer

HUGE = {"n_layer": 48, "n_embd": 4096, "n_head": 64, "block_size": 4096, "vocab_size": 65536}  # ~38 GiB of fp32


def small_state() -> dict:
    s = trainer().state_dict()
    return {k: s[k] for k in ("model_config", "model", "tokenizer_json", "step")}


def write(tmp_path: Path, state: dict, name: str = "m.pt") -> Path:
    path = tmp_path / name
    path.write_bytes(checkpoint.encode(state))
    return path


def test_a_small_file_claiming_a_huge_model_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    state = small_state()
    state["model_config"] = {**state["model_config"], **HUGE}
    path = write(tmp_path, state)
    assert path.stat().st_size < 1_000_000
    before = psutil.Process().memory_info().rss
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"describes \d+ bytes of weights but the file has \d+ bytes"):
        offline.load_model(path)
    assert time.perf_counter() - t < 20
    assert psutil.Process().memory_info().rss - before < 200 * 2**20
    r = subprocess.run([MACGPT, "sample", "你好", "--model", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "refused before building anything" in r.stderr, r.stderr


def test_init_from_a_small_file_claiming_a_huge_model_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    """`--init-from` gets the same check as `--model`: before, ``load_init`` handed the huge config to
    the trainer, which built ``GPT(cfg)`` (38 GiB) before looking at the weights."""
    state = small_state()
    state["model_config"] = {**state["model_config"], **HUGE}
    path = write(tmp_path, state)
    job = tmp_path / "job"
    job.mkdir()
    before = psutil.Process().memory_info().rss
    t = time.perf_counter()
    with pytest.raises(InitFromError, match=r"--init-from: .*describes \d+ bytes of weights but the file has \d+ bytes"):
        load_init(str(path), job)
    assert time.perf_counter() - t < 20
    assert psutil.Process().memory_info().rss - before < 200 * 2**20
    assert not (job / "tokenizer.json").exists()  # refused before anything was written either
    state = small_state()
    state["model"] = {k: v for k, v in state["model"].items() if not k.endswith("ln_f.weight")}
    with pytest.raises(InitFromError, match=r"missing \['ln_f.weight'\]"):
        load_init(str(write(tmp_path, state, "b.pt")), job)
    # a genuine one passes; its tokenizer is written atomically (a private 0600 file, no temp left)
    old = os.umask(0o022)
    try:
        good, cfg = load_init(str(write(tmp_path, small_state(), "c.pt")), job)
    finally:
        os.umask(old)
    assert cfg.n_embd == good["model_config"]["n_embd"]
    tok = job / "tokenizer.json"
    assert tok.read_text(encoding="utf-8") == good["tokenizer_json"]
    assert tok.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in job.iterdir()] == ["tokenizer.json"]


def test_tensors_that_do_not_match_the_config_are_named(tmp_path: Path) -> None:
    state = small_state()
    state["model"] = dict(state["model"])
    name = next(k for k in state["model"] if k.endswith("mlp.fc.weight"))
    rows, cols = state["model"][name].shape
    state["model"][name] = torch.zeros(cols, rows)  # as many bytes, the wrong shape
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' is \({cols}, {rows}\)"):
        offline.load_model(write(tmp_path, state))
    state = small_state()
    state["model"] = {k: v for k, v in state["model"].items() if not k.endswith("ln_f.weight")}
    with pytest.raises(CheckpointError, match=r"missing \['ln_f.weight'\]"):
        offline.load_model(write(tmp_path, state, "b.pt"))
    good = offline.load_model(write(tmp_path, small_state(), "c.pt"))  # and a genuine one still loads
    assert good.model.num_params() > 0


def test_a_fifo_or_device_is_refused_unread_and_a_file_over_the_cap_too(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    done: list[BaseException] = []

    def attempt() -> None:
        try:
            read(fifo)
        except CheckpointError as e:
            done.append(e)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(5)
    assert done and "not a regular file" in str(done[0])  # before: blocked forever waiting for a writer
    with pytest.raises(CheckpointError, match="not a regular file"):
        read(Path("/dev/zero"))
    big = tmp_path / "big.pt"
    with open(big, "wb") as f:
        f.truncate(2000)
    with pytest.raises(CheckpointError, match="over the 1000-byte limit"):
        read(big, limit=1000)
    r = subprocess.run([MACGPT, "sample", "你好", "--model", str(fifo)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a regular file" in r.stderr
