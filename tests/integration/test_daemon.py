"""The daemon as users meet it: real daemon process, real sockets, real SQLite, real workers."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from macgpt import protocol
from macgpt.client.connection import Client
from macgpt.paths import layout
from macgpt.supervisor import launch

from ..conftest import MACGPT, MACGPTD
from .live import job_status as job
from .live import wait_for

FAST_JOB = ["--set", "vocab_size=500", "--batch-size", "8", "--threads", "1"]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([MACGPT, *args], capture_output=True, text=True, timeout=timeout)


def cli_json(*args: str) -> dict:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)




@pytest.fixture
def daemon(home: Path) -> Iterator[Path]:
    r = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "started" in r.stdout, r.stderr
    yield home
    subprocess.run([MACGPTD, "stop", "--timeout", "60"], capture_output=True, text=True, timeout=90)


def test_submit_follow_sample_status_stop(daemon: Path) -> None:
    r = cli("submit", "tiny", "--steps", "30", *FAST_JOB, "--name", "first", "--follow", "--json", timeout=180)
    assert r.returncode == 0, r.stderr
    answer, *events = [json.loads(line) for line in r.stdout.splitlines()]
    assert answer["id"] == 1 and answer["name"] == "first"  # the submit answer first, on stdout too
    seqs = [e["seq"] for e in events]
    assert all(e["job"] == 1 for e in events)
    assert seqs == list(range(1, len(seqs) + 1))  # history then live: no gap, no duplicate
    kinds = [e["kind"] for e in events]
    assert kinds[-1] == "state" and events[-1]["data"]["state"] == "completed"
    for kind in ("metrics", "sample", "eval", "checkpoint", "completed"):
        assert kind in kinds
    logs = cli("logs", "1", "--json")
    assert [json.loads(line)["seq"] for line in logs.stdout.splitlines()] == seqs
    human = cli("--lang", "zh", "logs", "1").stdout
    assert "步骤" in human and "平均损失" in human and "生成测试" in human
    s = cli_json("status")
    [j] = s["jobs"]
    for key in ("id", "name", "config", "state", "reason", "step", "max_steps", "loss", "eval_loss", "pid", "threads",
                "batch_size", "checkpoint", "final_model"):
        assert key in j
    assert (j["name"], j["state"], j["step"], j["max_steps"]) == ("first", "completed", 30, 30)
    assert Path(j["final_model"]).exists() and j["eval_loss"] > 0
    out = cli_json("sample", "你好，", "--seed", "1", "-n", "10")
    assert out["text"].startswith("你好，") and out["source"] == "checkpoint"
    info = json.loads(subprocess.run([MACGPTD, "status", "--json"], capture_output=True, text=True).stdout)
    assert info["running"] and info["home"] == str(daemon)
    stop = subprocess.run([MACGPTD, "stop"], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert cli("pause", "1").returncode == 3  # reading works offline (test_cli_everyday); acting does not


def test_live_job_controls_and_restart_with_a_queue(daemon: Path) -> None:
    first = cli("submit", "tiny", "--steps", "100000", *FAST_JOB, "--set", "checkpoint_seconds=1")
    assert first.returncode == 0 and first.stdout.strip() == "1", first.stderr
    for _ in range(3):
        assert cli("submit", "tiny", "--steps", "20", *FAST_JOB).returncode == 0
    wait_for(lambda: job(1)["state"] == "running" and job(1)["step"] > 0)
    live = cli_json("sample", "你好，", "--job", "1", "-n", "8")
    assert live["source"] == "live" and live["text"].startswith("你好，")
    r = cli("checkpoint", "1")
    assert r.returncode == 0 and "checkpoint at step" in r.stdout
    assert cli("pause", "1").returncode == 0
    assert job(1)["state"] == "paused"

    def paused_event() -> int | None:
        events = [json.loads(x) for x in cli("logs", "1", "--json").stdout.splitlines()]
        return next((e["data"]["step"] for e in events if e["kind"] == "paused"), None)

    paused_at = wait_for(paused_event)  # the worker stopped at a step boundary
    time.sleep(1.2)  # heartbeats (every 0.5 s) carry its step
    assert job(1)["step"] == paused_at
    assert cli("resume", "1").returncode == 0
    wait_for(lambda: job(1)["step"] > paused_at)
    assert [j["state"] for j in cli_json("status")["jobs"]] == ["queued", "queued", "queued", "running"]

    ckpt_step = wait_for(lambda: job(1)["checkpoint_step"])
    stop = subprocess.run([MACGPTD, "stop"], capture_output=True, text=True, timeout=90)
    assert stop.returncode == 0, stop.stderr
    assert not _workers(daemon)
    start = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=30)
    assert start.returncode == 0
    wait_for(lambda: job(1)["state"] == "running")
    history = [json.loads(line) for line in cli("logs", "1", "--json").stdout.splitlines()]
    resumed = [e for e in history if e["kind"] == "setup" and e["data"].get("phase") == "resumed"]
    assert resumed and resumed[-1]["data"]["step"] >= ckpt_step
    assert [j["state"] for j in cli_json("status")["jobs"]][:3] == ["queued", "queued", "queued"]
    assert cli("cancel", "1").returncode == 0
    wait_for(lambda: job(1)["state"] == "cancelled")
    wait_for(lambda: job(2)["state"] in ("running", "completed"))  # the queue moves on, in order
    assert job(3)["state"] == "queued"
    for jid in (2, 3, 4):
        cli("cancel", str(jid))


def _workers(home: Path) -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"]) if str(home) in " ".join(p.info["cmdline"] or [])
            and "macgpt.worker" in " ".join(p.info["cmdline"] or [])]


def test_every_verb_without_a_daemon_exits_3(home: Path) -> None:
    for args in (["logs", "1", "-f"], ["submit", "tiny"], ["pause", "1"], ["resume", "1"], ["cancel", "1"],
                 ["checkpoint", "1"], ["limits"], ["rm", "1"], ["prune"], ["wait", "1"]):
        r = cli(*args, timeout=20)
        assert r.returncode == 3, (args, r.returncode, r.stderr)
        assert "macgptd start" in r.stderr, args
    for args, code in ((["status"], 0), (["ls"], 0), (["logs", "1"], 2), (["sample", "你好"], 2)):  # read the home
        r = cli(*args, timeout=20)
        assert r.returncode == code and "daemon not running" in r.stderr, (args, r.returncode, r.stderr)
    r = subprocess.run([MACGPTD, "status"], capture_output=True, text=True)
    assert r.returncode == 3


def test_second_daemon_refused_and_hostile_messages_answered(daemon: Path) -> None:
    second = subprocess.run([MACGPTD, "run"], capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "already running (pid" in second.stderr
    again = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and "already running" in again.stdout

    lay = layout(str(daemon))
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(lay.control)

    def ask(payload: bytes) -> dict:
        sock.send(payload)
        return protocol.unpack(sock.recv())

    assert ask(b"\xc1garbage")["error"]["code"] == "bad_message"
    assert ask(protocol.pack([1, 2, 3]))["error"]["code"] == "bad_message"
    assert ask(protocol.pack({"v": 99, "id": 1, "cmd": "ping"}))["error"]["code"] == "version_mismatch"
    assert ask(protocol.make_request(2, "rm -rf"))["error"]["code"] == "unknown_command"
    bad = ask(protocol.make_request(3, "submit", {"config": "tiny", "overrides": {"steps": 0}}))
    assert bad["error"]["code"] == "invalid_argument" and "steps=0" in bad["error"]["message"]
    assert ask(protocol.make_request(4, "status", {"job": "one"}))["error"]["code"] == "invalid_argument"
    deep: object = "x"
    for _ in range(50):
        deep = [deep]
    assert ask(protocol.pack({"v": 1, "id": 5, "cmd": "ping", "args": deep}))["error"]["code"] == "bad_message"
    sock.send_multipart([b"", b"a", b"b", b"c"])  # multi-frame garbage is answered with an error
    assert protocol.unpack(sock.recv())["error"]["code"] == "bad_message"
    assert ask(protocol.make_request(6, "ping"))["result"]["pong"] is True
    sock.close(0)
    assert cli("status").returncode == 0
    assert cli_json("status")["jobs"] == []  # nothing was queued by the bad requests

    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            c = Client(lay)
            for _ in range(50):
                assert c.call("ping")["pong"]
                assert c.call("status")["jobs"] == []
            c.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


def test_runtime_dir_and_socket_are_private(daemon: Path) -> None:
    lay = layout(str(daemon))
    assert oct(os.stat(lay.runtime).st_mode & 0o777) == "0o700"
    for name in ("control.sock", "events.sock", "workers.sock"):
        assert oct(os.stat(lay.runtime / name).st_mode & 0o777) == "0o600"


def test_tcp_is_off_by_default_loopback_only_when_on(home: Path) -> None:
    import psutil

    r = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    pid = json.loads(subprocess.run([MACGPTD, "status", "--json"], capture_output=True, text=True).stdout)["pid"]
    assert not [c for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    subprocess.run([MACGPTD, "stop"], capture_output=True, timeout=60)

    refused = subprocess.run([MACGPTD, "run", "--tcp-port", "47811", "--tcp-host", "0.0.0.0"], capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode == 2 and "only loopback is safe" in refused.stderr and "CURVE" in refused.stderr

    r = subprocess.run([MACGPTD, "start", "--tcp-port", "47811"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    pid = json.loads(subprocess.run([MACGPTD, "status", "--json"], capture_output=True, text=True).stdout)["pid"]
    listening = [c.laddr for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", 47811)]
    client = subprocess.run([MACGPT, "status", "--json"], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "MACGPT_TCP": "127.0.0.1:47811"})
    assert client.returncode == 0, client.stderr  # the client authenticates with the keys in the home
    subprocess.run([MACGPTD, "stop"], capture_output=True, timeout=60)


def test_a_jobs_own_limits_are_in_force_while_it_runs_and_a_live_change_overrules_them(daemon: Path) -> None:
    def in_force() -> dict:
        client = Client(layout())
        try:
            return client.call("status")["daemon"]["limits"]
        finally:
            client.close()

    assert in_force()["max_cpu"] == 70
    assert cli("submit", "tiny", "--steps", "100000", *FAST_JOB, "--max-cpu", "40", "--on-battery", "run").returncode == 0
    wait_for(lambda: job(1)["state"] == "running")
    wait_for(lambda: in_force()["max_cpu"] == 40)
    assert in_force()["on_battery"] == "run" and in_force()["max_memory"] == 60  # the rest stays the daemon's
    assert job(1)["limits"]["max_cpu"] == 40
    # under a limit the worker starts with short OpenMP spin-waits (unless the user set them)
    assert _spincount(1) == os.environ.get("GOMP_SPINCOUNT", launch.SPIN_UNDER_QUOTA)
    assert cli("limits", "--max-cpu", "55").returncode == 0  # live, for everything
    assert in_force()["max_cpu"] == 55 and in_force()["on_battery"] == "run"
    assert cli("cancel", "1").returncode == 0
    wait_for(lambda: job(1)["state"] == "cancelled")
    wait_for(lambda: in_force() == {**in_force(), "max_cpu": 55, "on_battery": "pause"})
    assert cli("submit", "tiny", "--steps", "100000", *FAST_JOB, "--max-cpu", "100").returncode == 0
    wait_for(lambda: job(2)["state"] == "running")
    assert _spincount(2) == os.environ.get("GOMP_SPINCOUNT")  # unthrottled: libgomp's default
    assert cli("cancel", "2").returncode == 0
    wait_for(lambda: job(2)["state"] == "cancelled")


def _spincount(jid: int) -> str | None:
    import psutil

    return psutil.Process(wait_for(lambda: job(jid)["pid"])).environ().get("GOMP_SPINCOUNT")
