"""Bad input to the sampling and evaluation commands: a clear message, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from macgpt.worker import checkpoint

from .conftest import MACGPT
from .helpers import trainer


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tr = trainer(model={"block_size": 16})
    tr.train_step()
    return checkpoint.save_final(tmp_path_factory.mktemp("m"), {**tr.state_dict(), "kind": "final"})


def run(*args: str | bytes) -> subprocess.CompletedProcess:
    return subprocess.run([MACGPT, *args], capture_output=True, env={**os.environ, "MACGPT_HOME": "/nonexistent-home"})


def test_empty_prompt(model: Path) -> None:
    r = run("sample", "  ", "--model", str(model))
    assert r.returncode == 2 and b"the prompt is empty" in r.stderr and b"Traceback" not in r.stderr


def test_invalid_utf8_prompt(model: Path) -> None:
    r = run("sample", b"\xff\xfe bad", "--model", str(model))
    assert r.returncode == 2 and b"not valid UTF-8" in r.stderr


def test_prompt_longer_than_the_context_is_cut_with_a_notice(model: Path) -> None:
    r = run("sample", "很长的提示" * 30, "--model", str(model), "--json", "-n", "3")
    assert r.returncode == 0, r.stderr
    assert b"longer than the context" in r.stderr
    out = json.loads(r.stdout)
    assert out["truncated_prompt"] is True and out["tokens"] <= 3


def test_model_path_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is just a text file and not a model at all\n" * 3)
    for path, message in ((text, b"not a macgpt checkpoint"), (tmp_path / "missing.pt", b"file not found"),
                          (tmp_path, b"is a directory")):
        r = run("sample", "你好", "--model", str(path))
        assert r.returncode == 2 and message in r.stderr, r.stderr
        r = run("evaluate", "--model", str(path))
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_out_of_range_sampling_options(model: Path) -> None:
    r = run("sample", "你好", "--model", str(model), "--temperature", "-1")
    assert r.returncode == 2 and b"--temperature" in r.stderr
    r = run("sample", "你好", "--model", str(model), "--top-p", "1.5")
    assert r.returncode == 2 and b"--top-p" in r.stderr
