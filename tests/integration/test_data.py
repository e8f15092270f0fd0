"""Real data through real processes: resume on changed data refused (foreground and daemon jobs),
preparation progress in `status`, the daemon answering while a big input is validated, and exact
resume after SIGKILLs over a token file built from a directory of .gz files."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from macgpt.worker.checkpoint import load_file

from ..conftest import MACGPT, MACGPTD, REAL_CHAT
from .live import job_status, wait_for
from .test_train_cli import Killer

# --max-cpu 100: the suite runs on busy machines, where the default limit would stop the job for others' load
RUN = ["--set", "vocab_size=500", "--batch-size", "8", "--threads", "1", "--max-cpu", "100"]


def train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([MACGPT, "train", "tiny", *RUN, *args], capture_output=True, text=True, timeout=timeout)


def lines(n: int, tag: str) -> str:
    src = (REAL_CHAT / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return "\n".join(json.dumps({"text": f"{tag}{json.loads(x)['text']}"}, ensure_ascii=False) for x in src[:n]) + "\n"


def test_train_refuses_to_continue_on_other_or_edited_data(home: Path, tmp_path: Path) -> None:
    out = ["--out", str(tmp_path / "run")]
    assert train("--steps", "5", *out).returncode == 0
    mine = tmp_path / "mine.jsonl"
    mine.write_text(lines(300, ""), encoding="utf-8")
    r = train("--steps", "5", "--data", str(mine), *out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"added {mine}" in r.stdout and "trained on other data" in r.stdout and "--fresh" in r.stdout
    assert train("--steps", "5", "--data", str(mine), "--fresh", *out).returncode == 0
    r = train("--steps", "8", "--data", str(mine), *out, "--json")  # more steps on the same data: fine
    assert r.returncode == 0 and '"phase": "resumed"' in r.stdout
    mine.write_text(lines(300, "改"), encoding="utf-8")
    r = train("--steps", "12", "--data", str(mine), *out)
    assert r.returncode == 2 and f"edited {mine}" in r.stdout, r.stdout + r.stderr


@pytest.fixture
def daemon(home: Path):
    r = subprocess.run([MACGPTD, "start", "--max-cpu", "100"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr  # (admission, too, would wait for a busy machine to calm down)
    yield home
    subprocess.run([MACGPTD, "stop", "--timeout", "60"], capture_output=True, text=True, timeout=90)


def submit(*args: str) -> int:
    r = subprocess.run([MACGPT, "submit", "tiny", *RUN, *args, "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["job"]


def test_daemon_job_whose_data_changed_is_not_resumed_after_a_crash(daemon: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(lines(400, ""), encoding="utf-8")
    jid = submit("--steps", "100000", "--data", str(data), "--set", "checkpoint_interval=1")
    wait_for(lambda: job_status(jid)["step"] >= 3, timeout=400, interval=0.5)  # slow only on a saturated machine
    with open(data, "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "新的一行"}, ensure_ascii=False) + "\n")
    os.kill(job_status(jid)["pid"], signal.SIGKILL)
    final = wait_for(lambda: (s := job_status(jid))["state"] == "failed" and s, timeout=240, interval=0.5)
    assert f"{data}: changed since it was validated" in (final["error"] or ""), final
    r = subprocess.run([MACGPT, "submit", "tiny", "--data", str(tmp_path / "gone.jsonl")], capture_output=True, text=True)
    assert r.returncode == 2 and "gone.jsonl: file not found" in r.stderr


def test_preparation_progress_in_status_and_status_answers_during_validation(daemon: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    block = (REAL_CHAT / "train.jsonl").read_bytes()
    with open(big, "wb") as f:
        for i in range(90):  # ~30 MB; a different first text each time, so nothing is cached by accident
            f.write(json.dumps({"text": f"第{i}份"}, ensure_ascii=False).encode() + b"\n" + block)
    proc = subprocess.Popen([MACGPT, "submit", "tiny", *RUN, "--steps", "100000", "--data", str(big), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waits = []
    while proc.poll() is None:  # the client validates 30 MB; the daemon is not involved and keeps answering
        t0 = time.monotonic()
        subprocess.run([MACGPT, "status", "--json"], capture_output=True, text=True, timeout=30, check=True)
        waits.append(time.monotonic() - t0)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert waits and max(waits) < 10, waits
    jid = json.loads(out)["job"]
    seen = wait_for(lambda: (p := job_status(jid).get("preparing")) and p.get("phase") in ("tokenizer", "encode") and p,
                    timeout=240, interval=0.2)  # (the import of torch reports progress first)
    assert seen["phase"] in ("tokenizer", "encode") and seen["unit"] == "MB" and seen["total"] > 5, seen
    human = wait_for(lambda: (r := subprocess.run([MACGPT, "status"], capture_output=True, text=True).stdout)
                     and "preparing:" in r and r, timeout=120, interval=0.2)
    assert f"job {jid}: preparing: " in human
    t0 = time.monotonic()
    subprocess.run([MACGPT, "cancel", str(jid)], capture_output=True, text=True, timeout=60)
    wait_for(lambda: job_status(jid)["state"] == "cancelled", timeout=60, interval=0.2)
    # nothing to save while preparing: the worker ends at once, not after the stop message's 10 s grace
    assert time.monotonic() - t0 < 8, time.monotonic() - t0


def test_sigkills_over_a_token_file_from_gz_files_resume_bitwise(home: Path, tmp_path: Path) -> None:
    d = tmp_path / "corpus" / "part"
    d.mkdir(parents=True)
    with gzip.open(d / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write((REAL_CHAT / "train.jsonl").read_text(encoding="utf-8"))
    steps = 90
    common = ["train", "tiny", "--steps", str(steps), "--seed", "9", *RUN, "--json", "--data", str(tmp_path / "corpus"),
              "--set", "checkpoint_interval=7", "--set", "checkpoint_seconds=0", "--set", "sample_interval=0"]
    clean = subprocess.run([MACGPT, *common, "--out", str(tmp_path / "clean")], capture_output=True, text=True, timeout=400)
    assert clean.returncode == 0, clean.stderr
    assert '"holdout": true' in clean.stdout
    job = tmp_path / "killed"
    proc = subprocess.Popen([MACGPT, *common, "--out", str(job)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer = Killer(proc, job, kills=2, rng=random.Random(99))
    proc.wait(timeout=600)
    killer.thread.join(5)
    assert proc.returncode == 0 and len(killer.killed) >= 2, (proc.stderr.read(), killer.killed)
    assert sum(e["event"] == "restarting" for e in killer.events) >= 2
    a, b = load_file(tmp_path / "clean" / "final_model.pt"), load_file(job / "final_model.pt")
    assert a["step"] == b["step"] == steps and a["corpus"] == b["corpus"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(job) in " ".join(p.info["cmdline"] or [])
                and "macgpt.worker" in " ".join(p.info["cmdline"] or [])]
