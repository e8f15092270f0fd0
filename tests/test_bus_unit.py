"""The event bus on a real PUB socket and a real SQLite store: numbering, live delivery, buffered storage."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import zmq

from macgpt import protocol
from macgpt.supervisor.bus import EventBus
from macgpt.supervisor.store import JobStore


def test_events_are_numbered_published_and_stored(tmp_path: Path) -> None:
    ctx = zmq.Context.instance()
    endpoint = f"ipc://{tmp_path}/pub"
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    pub.bind(endpoint)
    sub.connect(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, protocol.job_topic_prefix(1))
    store = JobStore(tmp_path / "q.sqlite3")
    try:
        job = store.create("j", "tiny", {}, 10)
        store.append_events([(job, 1, 0.0, "spawned", {})])  # numbering continues after history
        bus = EventBus(store, pub)
        deadline = time.monotonic() + 5
        while not sub.poll(50) and time.monotonic() < deadline:  # a slow joiner: resend until one arrives
            bus.emit(99, "warm", {})
            pub.send_multipart([protocol.event_topic(job, "probe"), protocol.pack({})])
        while sub.poll(100):
            sub.recv_multipart()
        seqs = [bus.emit(job, "metrics", {"step": s}) for s in (1, 2, 3)]
        assert seqs == [2, 3, 4]
        live = []
        while len(live) < 3 and sub.poll(2000):
            topic, body = sub.recv_multipart()
            live.append((topic, protocol.unpack(body)))
        assert [m["seq"] for _, m in live] == [2, 3, 4]
        assert live[0][0] == f"job.{job}.metrics".encode() and live[0][1]["data"] == {"step": 1}
        assert store.last_seq(job) == 1  # not stored before flush
        bus.flush()
        assert [e["seq"] for e in store.history(job)] == [1, 2, 3, 4]
    finally:
        store.close()
        pub.close(0)
        sub.close(0)


def test_a_database_error_keeps_events_buffered_until_a_later_flush(tmp_path: Path) -> None:
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.bind(f"ipc://{tmp_path}/pub")
    store = JobStore(tmp_path / "q.sqlite3")
    other = sqlite3.connect(tmp_path / "q.sqlite3", isolation_level=None)
    try:
        job = store.create("j", "tiny", {}, 10)
        bus = EventBus(store, pub)
        bus.emit(job, "metrics", {"step": 1})
        store.db.execute("PRAGMA busy_timeout=50")
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        bus.flush()
        assert store.last_seq(job) == 0
        other.execute("ROLLBACK")
        bus.emit(job, "metrics", {"step": 2})
        bus.flush()  # within the store's pause after a lock (StoreBusy): still buffered, nothing lost
        time.sleep(0.15)  # the first pause is 0.1 s
        bus.flush()
        assert [e["data"]["step"] for e in store.history(job)] == [1, 2]
    finally:
        other.close()
        store.close()
        pub.close(0)
