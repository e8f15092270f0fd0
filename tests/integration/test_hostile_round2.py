"""Issue 11 (hostile review, round two): each hole found by the review, tried against a real daemon
and real workers. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from macgpt import curvekeys, protocol
from macgpt.client.connection import Client, RemoteError
from macgpt.paths import layout

from ..conftest import MACGPT, MACGPTD, env_with_home


def macgptd(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([MACGPTD, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def daemon(home: Path) -> Iterator[Path]:
    r = macgptd("start")
    assert r.returncode == 0 and "started" in r.stdout, r.stderr
    yield home
    macgptd("stop", "--timeout", "60", timeout=90)


def test_one_daemon_per_home_whatever_the_runtime_dir(home: Path) -> None:
    """Item 3: the lock is in the home, so a second shell with another runtime dir is refused, and
    finds the running daemon instead of starting a second one on the same queue."""
    a, b = (Path(tempfile.mkdtemp(prefix="mgrt-", dir="/tmp")) for _ in range(2))
    first = macgptd("start", env=env_with_home(home, MACGPT_RUNTIME_DIR=str(a)))
    assert first.returncode == 0, first.stderr
    try:
        other = env_with_home(home, MACGPT_RUNTIME_DIR=str(b))
        second = macgptd("run", env=other, timeout=30)
        assert second.returncode == 1 and "already running (pid" in second.stderr, second.stderr
        assert not (b / "control.sock").exists()
        status = subprocess.run([MACGPT, "status", "--json"], capture_output=True, text=True, env=other, timeout=30)
        assert status.returncode == 0, status.stderr  # the client follows the lock to the daemon's sockets
        assert json.loads(status.stdout)["jobs"] == []
    finally:
        macgptd("stop", env=env_with_home(home, MACGPT_RUNTIME_DIR=str(a)), timeout=90)
        for d in (a, b):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()


def _tcp_dealer(port: int, keys: tuple[bytes, bytes, bytes] | None = None, host: str = "127.0.0.1") -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDTIMEO, 2000)
    if keys:
        s.setsockopt(zmq.CURVE_SERVERKEY, keys[0])
        s.setsockopt(zmq.CURVE_PUBLICKEY, keys[1])
        s.setsockopt(zmq.CURVE_SECRETKEY, keys[2])
    s.setsockopt(zmq.IPV6, 1)
    s.connect(f"tcp://{host}:{port}")
    return s


def test_tcp_lets_in_only_a_client_holding_an_authorized_curve_key(home: Path) -> None:
    """Item 1: over TCP another local user (a plain ZMTP client, or CURVE with a key of their own)
    gets nothing: no listing, no cancel, no shutdown, no file opened; the owner's keys work."""
    port = 47000 + os.getpid() % 900
    r = macgptd("start", "--tcp-port", str(port))
    assert r.returncode == 0, r.stderr
    try:
        kd = home / "keys"
        assert oct(kd.stat().st_mode & 0o777) == "0o700"
        for f in kd.iterdir():
            assert oct(f.stat().st_mode & 0o777) == "0o600", f
        keys = curvekeys.client(home)
        server = keys.server_public
        attackers = [_tcp_dealer(port), _tcp_dealer(port, (server, *zmq.curve_keypair()))]
        for sock in attackers:
            for cmd, args in (("status", {}), ("shutdown", {}), ("submit", {"spec": {"data": [str(home / "x")]}})):
                # A refused peer has no pipe, so a DEALER's send would wait for one forever: a send
                # that cannot be queued within 2 s is itself "nothing delivered".
                try:
                    sock.send(protocol.make_request(1, cmd, args))
                except zmq.Again:
                    pass
            assert not sock.poll(3000), "an unauthenticated TCP client was answered"
            sock.close(0)
        owner = _tcp_dealer(port, (server, keys.public, keys.secret))
        owner.send(protocol.make_request(7, "ping"))
        assert owner.poll(10000) and protocol.unpack(owner.recv())["result"]["pong"] is True
        owner.close(0)
        status = subprocess.run([MACGPT, "status", "--json"], capture_output=True, text=True, timeout=30,
                                env=env_with_home(home, MACGPT_TCP=f"127.0.0.1:{port}"))
        assert status.returncode == 0, status.stderr
        log = (home / "logs" / "macgptd.log").read_text()
        assert log.count("tcp_client_refused") >= 1  # the CURVE impostor, refused by the ZAP handler
        assert Client(layout(str(home))).call("ping")["pong"] is True  # the Unix socket is unchanged
    finally:
        macgptd("stop", timeout=90)


def test_tcp_on_ipv6_loopback_listens_or_fails_with_a_clear_message(home: Path) -> None:
    """Item 1: ``--tcp-host ::1`` passed the loopback check, then died in bind with a ZMQError traceback."""
    port = 47000 + os.getpid() % 900 + 1
    r = macgptd("start", "--tcp-port", str(port), "--tcp-host", "::1")
    if r.returncode == 0:
        try:
            keys = curvekeys.client(home)
            owner = _tcp_dealer(port, (keys.server_public, keys.public, keys.secret), host="[::1]")
            owner.send(protocol.make_request(1, "ping"))
            assert owner.poll(10000) and protocol.unpack(owner.recv())["result"]["pong"] is True
            owner.close(0)
        finally:
            macgptd("stop", timeout=90)
    else:  # a machine without IPv6: one clear line, no traceback
        out = (home / "logs" / "macgptd.out").read_text()
        assert "cannot listen on TCP ::1" in out and "Traceback" not in out, out



def test_the_home_is_private_whatever_the_umask(home: Path) -> None:
    """Also: the database, logs, models and tokenizers were created 0644 (readable by every user)."""
    old = os.umask(0o022)
    try:
        r = macgptd("start")
        assert r.returncode == 0, r.stderr
        try:
            sub = subprocess.run([MACGPT, "submit", "tiny", "--steps", "5"], capture_output=True, text=True, timeout=60)
            assert sub.returncode == 0, sub.stderr
        finally:
            macgptd("stop", timeout=90)
    finally:
        os.umask(old)
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    loose = [str(p) for p in home.rglob("*") if p.stat().st_mode & 0o077]
    assert not loose, loose
    from macgpt.fsutil import atomic_write_text

    os.umask(0o022)
    try:
        atomic_write_text(home / "t.json", "{}")
    finally:
        os.umask(old)
    assert oct((home / "t.json").stat().st_mode & 0o777) == "0o600"


def test_a_train_run_outside_the_home_is_private_whatever_the_umask(home: Path, tmp_path: Path) -> None:
    """Also: `macgpt train --out DIR` outside the private home created the run directory 0755 and
    events.jsonl and metrics.jsonl 0644 under a umask of 022 (the worker's own files were private)."""
    out = tmp_path / "elsewhere" / "run"
    old = os.umask(0o022)
    try:
        r = subprocess.run([MACGPT, "train", "tiny", "--steps", "2", "--batch-size", "4", "--threads", "1",
                            "--max-cpu", "100", "--out", str(out), "--json"], capture_output=True, text=True,
                           timeout=300)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "events.jsonl").is_file() and (out / "metrics.jsonl").is_file()
    assert oct(out.stat().st_mode & 0o777) == "0o700" and oct(out.parent.stat().st_mode & 0o777) == "0o700"
    loose = [f"{p} {oct(p.stat().st_mode & 0o777)}" for p in out.rglob("*") if p.stat().st_mode & 0o077]
    assert not loose, loose


def test_logs_of_a_long_job_is_paged_and_a_reader_that_stops_reading_pins_little(daemon: Path) -> None:
    """Item 9: `macgpt logs` failed ("not answering") once a job's history passed the client's 1 MiB
    reply cap (~50k steps); a client that stopped reading pinned up to 1,000 replies in the daemon."""
    import sqlite3

    import psutil

    sub = subprocess.run([MACGPT, "submit", "tiny", "--steps", "5"], capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    assert subprocess.run([MACGPT, "pause", "1"], capture_output=True, timeout=30).returncode == 0
    db = sqlite3.connect(daemon / "macgpt.sqlite3", timeout=30)
    first = db.execute("SELECT MAX(seq) FROM events WHERE job = 1").fetchone()[0]
    data = json.dumps({"step": 1, "loss": 5.123456, "avg_loss": 5.2, "lr": 0.001, "tokens_per_s": 12345.6,
                       "steps_per_s": 3.2, "threads": 2, "batch_size": 8, "micro_batch": 8, "rss": 123456789})
    with db:
        db.executemany("INSERT INTO events (job, seq, t, kind, data) VALUES (1, ?, 0, 'metrics', ?)",
                       [(first + i, data) for i in range(1, 60_001)])
    db.close()
    logs = subprocess.run([MACGPT, "logs", "1", "--json"], capture_output=True, text=True, timeout=300)
    assert logs.returncode == 0, logs.stderr[-500:]
    seqs = [json.loads(line)["seq"] for line in logs.stdout.splitlines()]
    assert seqs == list(range(1, first + 60_001))

    pid = json.loads(macgptd("status", "--json").stdout)["pid"]
    rss0 = psutil.Process(pid).memory_info().rss
    slow = zmq.Context.instance().socket(zmq.DEALER)
    slow.setsockopt(zmq.LINGER, 0)
    slow.setsockopt(zmq.RCVHWM, 1)
    slow.setsockopt(zmq.RCVBUF, 4096)
    slow.connect(layout(str(daemon)).control)
    for i in range(300):  # half a MiB each, never read
        slow.send(protocol.make_request(i, "history", {"job": 1, "after": 0, "limit": 5000}))
    c = Client(layout(str(daemon)))
    c.call("status")  # the daemon keeps answering others meanwhile
    grown = (psutil.Process(pid).memory_info().rss - rss0) / 2**20
    c.close()
    slow.close(0)
    print(f"slow reader, 300 unread half-MiB replies: daemon RSS +{grown:.1f} MB")
    assert grown < 64, f"daemon RSS grew {grown:.0f} MB for one reader that stopped reading"


def test_many_idle_connections_and_1000_opened_and_dropped_leave_the_daemon_serving(home: Path) -> None:
    """Item 4: under a descriptor limit of 256 (macOS's default), 306 idle connections made libzmq
    abort the daemon ("Too many open files"). The daemon raises its soft limit at start."""
    import resource
    import statistics

    import psutil

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # room for this test's own sockets
    try:
        r = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=60,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
        assert r.returncode == 0, r.stderr
        pid = json.loads(macgptd("status", "--json").stdout)["pid"]
        assert psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)[0] > 1000
        lay = layout(str(home))
        ctx = zmq.Context.instance()
        idle = []
        for _ in range(400):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(lay.control)
            s.send(protocol.make_request(1, "ping"))
            idle.append(s)
        assert all(s.poll(30000) for s in idle[-5:])
        c = Client(lay)
        latencies = []
        for i in range(1000):  # opened, a request sent, dropped without reading the answer
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(lay.control)
            s.send(protocol.make_request(i, "status"))
            s.close(0)
            if i % 10 == 0:
                t = time.perf_counter()
                c.call("status")
                latencies.append(time.perf_counter() - t)
        for s in idle:
            s.close(0)
        p99 = statistics.quantiles(latencies, n=100)[98] * 1000
        print(f"400 idle + 1000 dropped connections: status median {statistics.median(latencies) * 1000:.2f} ms,"
              f" p99 {p99:.2f} ms; daemon fds {psutil.Process(pid).num_fds()}")
        assert c.call("ping")["pong"] is True
        c.close()
        assert psutil.Process(pid).is_running()
    finally:
        macgptd("stop", timeout=90)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _idle_connections(lay, n: int) -> list[zmq.Socket]:
    out = []
    for _ in range(n):
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(lay.control)
        out.append(s)
    return out


def _status_until_ok(home: Path, timeout: float) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run([MACGPT, "status", "--json"], capture_output=True, text=True, timeout=30,
                           env=env_with_home(home))
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.3)


def test_connections_over_the_cap_are_refused_with_an_error_and_served_again_when_they_go(home: Path) -> None:
    """Item 4: a cap on concurrent connections; the excess gets an error naming the count and the
    limit (exit 1), the connections already served go on, and the cap lifts when they close."""
    r = macgptd("start", "--max-clients", "40")
    assert r.returncode == 0, r.stderr
    try:
        lay = layout(str(home))
        served = Client(lay)
        assert served.call("ping")["pong"] is True  # served before the flood: still served during it
        idle = _idle_connections(lay, 60)
        time.sleep(1.5)  # let the daemon accept them all
        refused = subprocess.run([MACGPT, "status"], capture_output=True, text=True, timeout=30, env=env_with_home(home))
        assert refused.returncode == 1, (refused.returncode, refused.stderr)
        assert "too many connections (" in refused.stderr and "limit 40" in refused.stderr, refused.stderr
        assert served.call("ping")["pong"] is True
        for s in idle:
            s.close(0)
        assert _status_until_ok(home, 15).returncode == 0
        served.close()
        log = (home / "logs" / "macgptd.log").read_text()
        assert "client_refused" in log
    finally:
        macgptd("stop", timeout=90)


def test_a_flood_of_idle_connections_near_the_descriptor_limit_is_shed_and_the_daemon_lives(home: Path) -> None:
    """Item 4: under a hard descriptor limit of 256 the soft one cannot be raised; 300 idle
    connections (which reconnect by themselves) would exhaust it and libzmq would abort. The
    daemon closes its listeners for a moment instead, and serves again once the flood is gone."""
    import resource

    import psutil

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    try:
        r = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=60,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
        assert r.returncode == 0, r.stderr
        pid = json.loads(macgptd("status", "--json").stdout)["pid"]
        flood = _idle_connections(layout(str(home)), 300)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            assert psutil.Process(pid).is_running() and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            assert psutil.Process(pid).num_fds() < 256
            time.sleep(0.05)
        for s in flood:
            s.close(0)
        assert _status_until_ok(home, 20).returncode == 0
        assert "connections_shed" in (home / "logs" / "macgptd.log").read_text()
    finally:
        macgptd("stop", timeout=90)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_two_train_runs_on_one_directory_the_second_is_refused_before_fresh_deletes(home: Path) -> None:
    """Also: nothing stopped two `macgpt train` runs on one --out directory, and --fresh deleted the
    first one's files under it."""
    import signal

    from macgpt.supervisor.lock import holder

    out = home / "runs" / "shared"
    args = [MACGPT, "train", "tiny", "--steps", "100000", "--set", "vocab_size=500", "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_with_home(home))
    try:
        deadline = time.monotonic() + 60
        while holder(out / ".macgpt-train.lock") is None or not (out / "events.jsonl").exists():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = subprocess.run([*args, "--fresh"], capture_output=True, text=True, timeout=60, env=env_with_home(home))
        assert second.returncode == 1 and "another `macgpt train` is using this directory" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert (out / "events.jsonl").exists()  # --fresh deleted nothing of the running one
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(60)
        except subprocess.TimeoutExpired:
            first.kill()


def test_a_fifo_named_like_data_never_wedges_the_daemon(daemon: Path, tmp_path: Path) -> None:
    """Item 8 (with the data issue): a FIFO named `*.txt` wedged the daemon's loop. The client
    refuses it on stat; a raw request that names it anyway is answered and the daemon never opens it."""
    fifo = tmp_path / "poems.txt"
    os.mkfifo(fifo)
    r = subprocess.run([MACGPT, "submit", "tiny", "--data", str(fifo)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "poems.txt: is a FIFO" in r.stderr, r.stderr
    c = Client(layout(str(daemon)), timeout=5)
    t0 = time.monotonic()
    try:
        jid = c.call("submit", {"config": "tiny", "data": [str(fifo)], "overrides": {"steps": 5}})["job"]
    except RemoteError:
        jid = None  # refused at once: as good as a worker that fails it
    assert time.monotonic() - t0 < 3 and c.call("ping")["pong"] is True  # the loop never blocked on it
    if jid is not None:  # the worker refuses it on stat too, and the job fails saying so
        deadline = time.monotonic() + 120
        while (j := c.call("status", {"job": jid})["jobs"][0])["state"] not in ("failed", "cancelled"):
            assert time.monotonic() < deadline, j
            time.sleep(0.2)
        assert "FIFO" in (j.get("error") or j.get("reason") or ""), j
    c.close()
