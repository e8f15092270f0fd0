"""Faults: a full disk, damaged checkpoints, a damaged or locked database, the daemon killed with
-9 (also while its worker is stopped). Nothing is lost, nothing stays frozen, nobody runs twice."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from macgpt.worker import checkpoint

from ..conftest import MACGPT, MACGPTD
from .live import Hog, wait_for
from .live import job_status as status

FAST = ["--set", "vocab_size=500", "--batch-size", "8", "--threads", "1"]


def cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([MACGPT, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})




def workers(home: Path, job_dir: str | None = None) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "macgpt.worker" in cmd and str(home) in cmd and (job_dir is None or job_dir in cmd):
            found.append(p)
    return found


def daemon_pid() -> int:
    r = subprocess.run([MACGPTD, "status", "--json"], capture_output=True, text=True)
    return json.loads(r.stdout)["pid"]


def start_daemon(**env: str) -> None:
    r = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=30, env={**os.environ, **env})
    assert r.returncode == 0, r.stdout + r.stderr


def test_disk_full_keeps_the_previous_checkpoint_and_stops_with_a_clear_message(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = cli("train", "tiny", "--steps", "20", *FAST, "--out", str(out), "--json")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.glob("*.pt")}
    argv = json.dumps([sys.executable, str(Path(__file__).with_name("limited_worker.py"))])
    r = cli("train", "tiny", "--steps", "60", *FAST, "--set", "checkpoint_interval=10", "--out", str(out), "--json",
            MACGPT_WORKER_ARGV=argv, LIMIT_BYTES="200000")
    assert r.returncode == 1, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["result"] == "disk"
    assert "could not be written" in summary["error"] and "File too large" in summary["error"]
    assert "ckpt-00000020.pt" in summary["error"] and "Free some disk space" in summary["error"]
    assert {p.name: p.read_bytes() for p in out.glob("*.pt")} == before  # nothing corrupted, nothing lost
    assert not list(out.glob(".*tmp*"))
    state, _path, warnings = checkpoint.load_latest(out)
    assert state["step"] == 20 and not warnings
    resumed = cli("train", "tiny", "--steps", "60", *FAST, "--set", "checkpoint_interval=10", "--out", str(out), "--json")
    assert resumed.returncode == 0, resumed.stderr  # space is back: it goes on from step 20
    events = [json.loads(x) for x in resumed.stdout.splitlines()]
    assert [e["step"] for e in events if e.get("phase") == "resumed"] == [20]


def test_damaged_newest_checkpoint_falls_back_with_a_warning_in_status_and_log(home: Path) -> None:
    start_daemon()
    assert cli("submit", "tiny", "--steps", "100000", *FAST, "--set", "checkpoint_interval=20",
               "--set", "checkpoint_seconds=0").returncode == 0
    wait_for(lambda: (status(1)["checkpoint_step"] or 0) >= 40)
    assert subprocess.run([MACGPTD, "stop"], capture_output=True, timeout=90).returncode == 0
    job_dir = home / "jobs" / "000001"
    (newest_step, newest), (older_step, _) = checkpoint.checkpoint_files(job_dir)[:2]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    newest.write_bytes(bytes(data))
    start_daemon()
    wait_for(lambda: status(1)["state"] == "running" and status(1)["warning"])
    job = status(1)
    assert "checksum mismatch" in job["warning"] and newest.name in job["warning"]
    human = cli("status").stdout
    assert "checksum mismatch" in human
    history = [json.loads(x) for x in cli("logs", "1", "--json").stdout.splitlines()]
    resumed = [e["data"]["step"] for e in history if e["kind"] == "setup" and e["data"].get("phase") == "resumed"]
    assert resumed[-1] == older_step < newest_step
    log_lines = [json.loads(x) for x in (home / "logs" / "macgptd.log").read_text().splitlines()]
    assert any(x.get("event") == "worker_warning" and "checksum mismatch" in x.get("message", "") for x in log_lines)
    subprocess.run([MACGPTD, "stop"], capture_output=True, timeout=90)


def test_damaged_database_is_refused_untouched_with_a_recovery_hint(home: Path) -> None:
    db = home / "macgpt.sqlite3"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    r = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "damaged" in r.stderr or "not a database" in r.stderr, r.stderr
    assert ".recover" in (home / "logs" / "macgptd.out").read_text()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_damaged_database_is_restored_from_the_copy_the_daemon_keeps(home: Path) -> None:
    start_daemon()
    assert cli("submit", "tiny", "--steps", "5", *FAST, "--name", "kept").returncode == 0
    wait_for(lambda: status(1)["state"] == "completed", timeout=90)
    assert subprocess.run([MACGPTD, "stop"], capture_output=True, timeout=60).returncode == 0
    db = home / "macgpt.sqlite3"
    db.write_bytes(db.read_bytes()[:100] + os.urandom(4096))
    r = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "macgpt.sqlite3.bak" in r.stderr, r.stderr
    (home / "macgpt.sqlite3.bak").replace(db)  # what the message says to do
    for extra in ("-wal", "-shm"):
        (home / f"macgpt.sqlite3{extra}").unlink(missing_ok=True)
    start_daemon()
    job = status(1)
    assert (job["name"], job["state"], job["step"]) == ("kept", "completed", 5)


def test_locked_database_is_a_clear_error(home: Path) -> None:
    start_daemon()
    subprocess.run([MACGPTD, "stop"], capture_output=True, timeout=60)
    holder = sqlite3.connect(home / "macgpt.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "locked" in r.stderr, r.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_daemon_killed_mid_job_resumes_from_its_checkpoint_with_one_worker(home: Path) -> None:
    start_daemon()
    assert cli("submit", "tiny", "--steps", "100000", *FAST, "--set", "checkpoint_interval=20").returncode == 0
    for _ in range(2):
        assert cli("submit", "tiny", "--steps", "10", *FAST).returncode == 0
    wait_for(lambda: (status(1)["checkpoint_step"] or 0) >= 20)
    seq_before = max(json.loads(x)["seq"] for x in cli("logs", "1", "--json").stdout.splitlines())
    os.kill(daemon_pid(), signal.SIGKILL)
    [old] = workers(home)
    old.wait(15)  # the orphaned worker saves a checkpoint and leaves by itself
    counts: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            counts.append(len(workers(home)))
            time.sleep(0.02)

    t = threading.Thread(target=watch)
    t.start()
    try:
        start_daemon()
        wait_for(lambda: status(1)["state"] == "running" and status(1)["step"] > 0)
    finally:
        stop.set()
        t.join()
    assert max(counts) == 1  # never two workers for the job
    jobs = json.loads(cli("status", "--json").stdout)["jobs"]
    assert [j["state"] for j in jobs] == ["queued", "queued", "running"]
    history = [json.loads(x) for x in cli("logs", "1", "--json").stdout.splitlines()]
    seqs = [e["seq"] for e in history]
    assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] > seq_before  # history intact, numbering goes on
    resumed = [e["data"]["step"] for e in history if e["kind"] == "setup" and e["data"].get("phase") == "resumed"]
    assert resumed and resumed[-1] >= 20
    subprocess.run([MACGPTD, "stop"], capture_output=True, timeout=90)
    assert not workers(home)


def test_daemon_killed_while_its_worker_is_stopped_leaves_nothing_frozen(home: Path) -> None:
    start_daemon()
    assert cli("submit", "tiny", "--steps", "100000", *FAST).returncode == 0
    wait_for(lambda: status(1)["state"] == "running" and status(1)["step"] > 0)
    [worker] = workers(home)
    hog = Hog()
    try:
        wait_for(lambda: worker.status() == psutil.STATUS_STOPPED, timeout=10)
        time.sleep(0.5)
        assert worker.status() == psutil.STATUS_STOPPED
        os.kill(daemon_pid(), signal.SIGKILL)
        worker.wait(15)  # the guardian continued it; it noticed the daemon was gone and left
    finally:
        hog.stop()
    assert not [p for p in psutil.process_iter(["status", "cmdline"])
                if p.info["status"] == psutil.STATUS_STOPPED and str(home) in " ".join(p.info["cmdline"] or [])]
    start_daemon()
    wait_for(lambda: status(1)["state"] == "running")
    subprocess.run([MACGPTD, "stop"], capture_output=True, timeout=90)
    assert not workers(home)
