"""Hostile input on the control socket: over 10,000 malformed, oversized, deep, huge, unknown or
abandoned messages. Each is answered with an error or dropped; the daemon keeps serving `status`
at its usual latency, its memory stays bounded, and nothing is queued."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from macgpt import protocol
from macgpt.client.connection import Client
from macgpt.paths import layout

from ..conftest import MACGPTD

COUNT = {"messages": 0}


@pytest.fixture
def lay(home: Path) -> Iterator:
    r = subprocess.run([MACGPTD, "start"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    yield layout(str(home))
    subprocess.run([MACGPTD, "stop"], capture_output=True, timeout=60)


def dealer(lay, timeout_ms: int = 5000) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(lay.control)
    return s


def ask(sock: zmq.Socket, frames: list[bytes]) -> dict:
    COUNT["messages"] += 1
    sock.send_multipart(frames)
    reply = protocol.unpack(sock.recv_multipart()[-1])
    assert isinstance(reply, dict) and "ok" in reply
    return reply


def status_latency(lay, n: int = 40) -> float:
    c = Client(lay)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        c.call("status")
        times.append(time.perf_counter() - t)
    c.close()
    return statistics.median(times)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=True) | st.text(max_size=50)
    | st.binary(max_size=50),
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=10) | st.integers(-2**63, 2**64 - 1), inner, max_size=6),
    max_leaves=30,
)
commands = st.sampled_from([c for c in protocol.COMMANDS if c != "shutdown"]) | st.text(max_size=20)
requests = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 0, 2, "1", None]), "id": st.integers(0, 10**6) | st.text(max_size=10),
     "cmd": commands, "args": st.dictionaries(st.text(max_size=12), values, max_size=5) | values},
    optional={"extra": values},
)


def test_fuzzed_and_garbage_messages_never_hurt_the_daemon(lay, soak: int) -> None:
    pid = json.loads(subprocess.run([MACGPTD, "status", "--json"], capture_output=True, text=True).stdout)["pid"]
    daemon = psutil.Process(pid)
    before_latency = status_latency(lay)
    rss_before = daemon.memory_info().rss
    sock = dealer(lay)
    codes: dict[str, int] = {}

    @settings(max_examples=900 * soak, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(msg=requests)
    def structured(msg) -> None:
        reply = ask(sock, [msgpack.packb(msg, use_bin_type=True)])
        if not reply["ok"]:
            code = reply["error"]["code"]
            codes[code] = codes.get(code, 0) + 1
            assert code in {str(c) for c in protocol.ErrorCode} and reply["error"]["message"]
            assert code != "internal", (msg, reply)  # every bad request is caught by validation

    structured()
    rng = random.Random(7)
    for _ in range(9300 * soak):  # raw random frames, sometimes several
        frames = [rng.randbytes(rng.choice((0, 1, 5, 40, 700, 3000))) for _ in range(rng.choice((1, 1, 1, 2, 3, 5)))]
        assert ask(sock, frames)["ok"] is False
    deep = b"\x91" * 100_000 + b"\x00"  # 100,000 nested one-element arrays, built by hand
    assert ask(sock, [deep])["error"]["code"] == "bad_message"
    assert ask(sock, [protocol.make_request(1, "status", {"job": "x" * 60_000})])["error"]["code"] == "invalid_argument"
    assert ask(sock, [msgpack.packb({"v": 1, "id": 2, "cmd": "ping", "args": {"a": list(range(5000))}})])["ok"] is False
    assert ask(sock, [msgpack.packb("s" * 70_000)])["error"]["code"] == "bad_message"
    sock.close(0)

    big = dealer(lay, timeout_ms=500)  # past the socket's maximum: ZeroMQ drops it (and the connection)
    big.send(b"\x00" * (protocol.MAX_MESSAGE_BYTES + 10))
    with pytest.raises(zmq.Again):
        big.recv()
    big.close(0)
    for _ in range(200):  # clients that vanish mid-request
        gone = dealer(lay)
        gone.send(protocol.make_request(1, "status"))
        gone.close(0)
        COUNT["messages"] += 1

    time.sleep(0.5)
    after_latency = status_latency(lay)
    rss_growth = daemon.memory_info().rss - rss_before
    assert COUNT["messages"] >= 10_000 * soak
    assert after_latency <= 2 * before_latency + 0.002, (before_latency, after_latency)
    assert rss_growth < 25 * 2**20, rss_growth
    assert Client(lay).call("status")["jobs"] == []
    assert codes.get("invalid_argument") and codes.get("unknown_command") and codes.get("version_mismatch")
    report = {"messages": COUNT["messages"], "status_latency_ms": [before_latency * 1e3, after_latency * 1e3],
              "rss_growth_mb": rss_growth / 2**20, "error_codes": codes}
    print("hostile-input figures:", json.dumps(report))
