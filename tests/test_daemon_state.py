"""Issue 11: decisions of a real daemon object in-process (real SQLite, real sockets, a real job
supervisor and enforcer), driven to the state a review found wrong, without waiting minutes for it."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from macgpt import protocol
from macgpt.client import status_view
from macgpt.config.limits import Limits
from macgpt.paths import layout
from macgpt.protocol import JobState
from macgpt.supervisor import handlers
from macgpt.supervisor.daemon import Daemon


@pytest.fixture
def daemon(home: Path) -> Iterator[Daemon]:
    d = Daemon(layout(str(home)), Limits())
    d.open()
    yield d
    d._shutdown(zmq.Poller())


def test_a_cancelled_job_that_was_evicted_for_memory_never_comes_back(daemon: Daemon) -> None:
    """Item 10: cancel a job waiting for memory (no runner); when memory returns it stays cancelled."""
    jid = handlers.submit(daemon.context, {"config": "tiny"}, None)["job"]
    daemon.records.transition(jid, JobState.PAUSED, "memory: waiting for memory to come back")
    gov = daemon.supervisor.enforcer
    gov.wait_for_memory(jid)  # what the supervisor records for an evicted worker
    assert handlers.cancel(daemon.context, {"job": jid}, None)["state"] == "cancelled"
    gov.state = dataclasses.replace(gov.state, low_memory_since=gov.clock() - 10 * gov.tuning.hold)
    for _ in range(3):
        daemon._schedule()
    assert daemon.store.get(jid).state == JobState.CANCELLED
    assert not daemon.supervisor.runners


def pump(d: Daemon, until, timeout: float) -> None:
    """Serve the daemon's worker channel (a real worker on a real socket) until ``until()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.channel.sock.poll(50, zmq.POLLIN):
            d.supervisor.serve_channel()
        d.bus.flush()
        if until():
            return
    raise AssertionError(f"not reached within {timeout}s")


@pytest.mark.slow  # a real worker
def test_a_pause_sent_while_the_job_is_starting_reaches_the_worker(daemon: Daemon) -> None:
    """Item 6: paused while its worker was still starting, the job used to train on while status
    said "paused". Started directly (a busy machine would keep the scheduler waiting)."""
    jid = handlers.submit(daemon.context, {"config": "tiny", "overrides": {"vocab_size": 500, "steps": 100000,
                                                                             "threads": 1, "batch_size": 8}}, None)["job"]
    daemon._start(daemon.store.get(jid))
    runner = daemon.supervisor.runner(jid)
    assert daemon.store.get(jid).state == JobState.STARTING and not runner.live.connected
    assert handlers.pause(daemon.context, {"job": jid}, None)["state"] == "paused"
    pump(daemon, lambda: runner.live.paused, timeout=240)
    step = runner.live.step
    end = time.monotonic() + 3
    pump(daemon, lambda: time.monotonic() >= end, timeout=30)  # heartbeats carry its step meanwhile
    assert runner.live.step == step and daemon.store.get(jid).state == JobState.PAUSED
    assert handlers.resume(daemon.context, {"job": jid}, None)["state"] == "running"
    pump(daemon, lambda: runner.live.step > step, timeout=120)


def test_a_locked_database_at_runtime_neither_stops_nor_blocks_the_daemon(daemon: Daemon) -> None:
    """Item 7: another process holds the write lock; state changes wait in order and are written
    once it is released, a request gets 'unavailable', nothing raises out of the loop, no write
    blocks the loop for more than a fraction of a second."""
    jid = handlers.submit(daemon.context, {"config": "tiny"}, None)["job"]
    records = daemon.records
    other = sqlite3.connect(daemon.lay.db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        t = time.perf_counter()
        assert records.transition(jid, JobState.PAUSED, "user")
        records.event(jid, "metrics", {"step": 3, "loss": 2.5})
        records.transition(jid, JobState.QUEUED, None)
        daemon.bus.flush()
        assert time.perf_counter() - t < 2.0  # before: 5 s of busy-wait per write, then the daemon exited
        assert [p[1] for p in records.pending] == [JobState.PAUSED, JobState.QUEUED]
        sent: list[bytes] = []
        daemon._send = lambda identity, envelope, payload: sent.append(payload)  # capture the reply
        daemon._handle_frames([b"id", protocol.make_request(1, "submit", {"config": "tiny"})])
        assert protocol.unpack(sent[-1])["error"]["code"] == "unavailable"
        records.retry()
        # the trouble is in `status` (before: only in the daemon's log), JSON and the human header
        d = handlers.status(daemon.context, {}, None)["daemon"]
        assert d["db_errors"] >= 3 and d["db_pending_changes"] == 2 and d["db_unstored_events"] >= 3
        assert "locked" in d["db_last_error"]["message"] and d["db_last_error"]["time"] <= time.time()
        protocol.unpack(protocol.pack(d))  # what the wire carries
        head = status_view.header_line({"daemon": d, "disk_total": 0}, [], 80).splitlines()
        assert all(len(line) <= 80 for line in head), head
        text = "\n".join(head)
        assert f"database: {d['db_errors']} error(s) since start" in text and "2 state change(s)" in text
        assert "database is locked" in text or "locked" in head[-1]
        zh = status_view.header_line({"daemon": d, "disk_total": 0}, [], 80, "zh")
        assert "2 个状态变更" in zh and "database error (" in zh
    except sqlite3.Error as e:
        pytest.fail(f"a database error escaped: {e}")
    finally:
        other.execute("ROLLBACK")
        other.close()
    deadline = time.monotonic() + 5  # writes are tried again after a pause of at most 2 s (StoreBusy)
    while (records.pending or daemon.bus.unstored) and time.monotonic() < deadline:
        records.retry()
        daemon.bus.flush()
        time.sleep(0.05)
    assert not records.pending
    assert daemon.store.get(jid).state == JobState.QUEUED
    kinds = [e["kind"] for e in daemon.store.history(jid)]
    assert kinds.count("state") == 3 and "metrics" in kinds  # queued, paused, queued: nothing lost
    assert records.errors >= 3
    d = handlers.status(daemon.context, {}, None)["daemon"]
    assert d["db_pending_changes"] == 0 and d["db_unstored_events"] == 0 and d["db_errors"] == records.errors
    healthy = {**d, "db_errors": 0, "db_last_error": None}
    assert status_view.database_line(healthy) is None
    assert "database" not in status_view.header_line({"daemon": healthy, "disk_total": 0}, [], 80)


def test_a_worker_message_missing_a_field_is_dropped_at_the_channel(daemon: Daemon) -> None:
    """Also: a worker event without the fields the daemon reads (a worker of another version) used
    to raise KeyError out of the daemon's loop; it is now refused like a bad client message."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.lay.workers)
    bad = [{"kind": "metrics", "job": 1}, {"kind": "started", "job": 1, "step": 0},
           {"kind": "checkpoint", "job": 1, "step": "3", "path": "x"}, {"kind": "eval", "job": True, "loss": 1.0}]
    good = {"kind": "metrics", "job": 1, "step": 3, "loss": 2.5}
    for msg in [*bad, good]:
        sock.send(protocol.pack(msg))
    got: list = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        if daemon.channel.sock.poll(100, zmq.POLLIN):
            got += daemon.channel.receive()
    sock.close(0)
    assert [m for _, m in got] == [good]
    for msg in bad:
        with pytest.raises(protocol.ProtocolError, match="worker event"):
            protocol.parse_worker_event(protocol.pack(msg))


def test_nothing_is_scheduled_while_state_changes_wait_for_the_database(daemon: Daemon) -> None:
    """Item 7: the queue read from a database that is behind is stale; starting from it could start
    a job twice, so the scheduler waits until the held-back changes are written."""
    jid = handlers.submit(daemon.context, {"config": "tiny"}, None)["job"]
    daemon.records.pending.append((jid, JobState.PAUSED, "user", {}))
    daemon._schedule()
    assert not daemon.supervisor.runners
    daemon.records.retry()
    assert daemon.store.get(jid).state == JobState.PAUSED


def test_only_governor_decisions_become_governor_records_and_an_unreadable_spec_fails_its_job(daemon: Daemon) -> None:
    """Issue 12: the daemon wrote a governor record without a state for each "restarting" event (a
    plot read it as full speed); a queued job whose stored spec could not be read stopped the daemon."""
    from macgpt import metricsfile

    jid = handlers.submit(daemon.context, {"config": "tiny"}, None)["job"]
    job_dir = daemon.lay.job_dir(jid)
    job_dir.mkdir(parents=True, exist_ok=True)
    daemon.records.event(jid, "restarting", {"job": jid, "in_seconds": 0.0, "crashes": 1, "last_error": "x"})
    daemon._governor_event("governor", {"job": jid, "state": "throttled", "message": "throttled"})
    daemon._governor_event("limits", {"limits": {}})
    records = metricsfile.read(metricsfile.path_in(job_dir)).of("governor")
    assert [(r["state"], r["message"]) for r in records] == [("throttled", "throttled")]
    odd = daemon.store.create("odd", "tiny", {"config": "tiny"}, 10)  # as another version might have left it
    daemon._start(daemon.store.get(odd))
    job = daemon.store.get(odd)
    assert job.state == JobState.FAILED and "stored spec cannot be read" in job.reason
    assert not daemon.supervisor.runners
