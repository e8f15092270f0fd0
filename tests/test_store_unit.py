"""The job store on a real SQLite file: every transition of the table, refusals, fields, events, backup."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from macgpt.protocol import FINISHED, TRANSITIONS, JobState
from macgpt.supervisor.store import JobStore, StoreError, TransitionError


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "q.sqlite3")
    yield s
    s.close()


def _job_in(store: JobStore, state: JobState) -> int:
    """A job brought to ``state`` through allowed transitions only (breadth-first over the table)."""
    job = store.create("j", "tiny", {"config": "tiny"}, 10)
    paths = {JobState.QUEUED: []}
    frontier = [JobState.QUEUED]
    while frontier and state not in paths:
        nxt = []
        for s in frontier:
            for t in TRANSITIONS[s]:
                if t not in paths:
                    paths[t] = [*paths[s], t]
                    nxt.append(t)
        frontier = nxt
    for step in paths[state]:
        store.transition(job, step)
    assert store.get(job).state == state
    return job


@pytest.mark.parametrize("old", list(JobState))
def test_every_allowed_transition_is_taken_and_every_other_refused(store: JobStore, old: JobState) -> None:
    for new in JobState:
        job = _job_in(store, old)
        if new == old or new in TRANSITIONS[old]:
            assert store.transition(job, new, reason="test") == old
            row = store.get(job)
            assert row.state == new and row.reason == "test"
            assert (row.finished is not None) == (new in FINISHED)
        else:
            with pytest.raises(TransitionError, match=f"job {job} is {old}; it cannot become {new}"):
                store.transition(job, new)
            assert store.get(job).state == old  # a refused change writes nothing


def test_unknown_fields_and_jobs_are_refused(store: JobStore) -> None:
    job = store.create("j", "tiny", {}, 10)
    with pytest.raises(ValueError, match="unknown job fields"):
        store.update(job, state="completed")  # the state only changes through transition()
    with pytest.raises(ValueError, match="unknown job fields"):
        store.transition(job, JobState.STARTING, spec="{}")
    with pytest.raises(TransitionError, match="does not exist"):
        store.transition(job + 1, JobState.STARTING)
    store.update(job, step=7, loss=3.5)
    row = store.get(job)
    assert (row.step, row.loss, row.state) == (7, 3.5, JobState.QUEUED)


def test_queue_order_and_state_queries(store: JobStore) -> None:
    a, b, c = (store.create(n, "tiny", {}, 10) for n in "abc")
    store.transition(c, JobState.QUEUED, queue_order=0.0)  # moved to the front
    assert [j.id for j in store.queued()] == [c, a, b]
    store.transition(a, JobState.STARTING)
    assert [j.id for j in store.in_states([JobState.STARTING])] == [a]
    assert store.latest_id() == c and [j.id for j in store.jobs()] == [c, b, a]


def test_events_are_numbered_per_job_and_survive_reopening(tmp_path: Path) -> None:
    s = JobStore(tmp_path / "q.sqlite3")
    job = s.create("j", "tiny", {}, 10)
    s.append_events([(job, i, float(i), "metrics", {"step": i, "text": "你好"}) for i in range(1, 6)])
    s.close()
    s = JobStore(tmp_path / "q.sqlite3")
    assert s.last_seq(job) == 5 and s.last_seq(job + 1) == 0
    page = s.history(job, after=2, limit=2)
    assert [e["seq"] for e in page] == [3, 4] and page[0]["data"] == {"step": 3, "text": "你好"}
    s.close()


def test_backup_is_a_consistent_copy_and_a_damaged_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    s = JobStore(path)
    job = s.create("kept", "tiny", {}, 10)
    backup = s.backup()
    s.close()
    with sqlite3.connect(backup) as db:
        assert db.execute("SELECT name FROM jobs WHERE id = ?", (job,)).fetchone() == ("kept",)
    for extra in ("-wal", "-shm"):
        Path(str(path) + extra).unlink(missing_ok=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"damaged.*Nothing was changed.*q\.sqlite3\.bak"):
        JobStore(path)


def test_a_database_from_a_newer_macgpt_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="newer macgpt"):
        JobStore(path)


def test_under_another_programs_lock_a_write_waits_once_then_fails_at_once_until_the_pause_ends(tmp_path: Path) -> None:
    import time

    from macgpt.supervisor.store import StoreBusy

    store = JobStore(tmp_path / "jobs.db")
    store.set_busy_timeout(300)
    jid = store.create("a", "tiny", {}, 10)
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    t0 = time.perf_counter()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.update(jid, step=1)
    waited = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(20):
        with pytest.raises(StoreBusy):
            store.update(jid, step=2)
    assert waited >= 0.25 and time.perf_counter() - t1 < 0.1  # one busy wait, then no wait at all
    other.execute("ROLLBACK")
    other.close()
    time.sleep(0.15)  # the first pause is 0.1 s
    store.update(jid, step=3)
    assert store.get(jid).step == 3
    store.close()


def test_a_job_comes_back_typed_and_its_spec_is_parsed_once_when_asked(store: JobStore) -> None:
    from macgpt.config.job import build_spec
    from macgpt.errors import ConfigError

    spec = build_spec("tiny", {"steps": "30"}, name="typed")
    job = store.create(spec.name, spec.config, {**spec.to_dict(), "hooks": {"notify": True}}, spec.train.steps)
    record = store.get(job)
    assert record is not None and record.state is JobState.QUEUED and record.max_steps == 30
    assert record.spec == spec and record.spec is record.spec  # parsed once
    assert record.hooks == {"notify": True}
    view = record.view()
    assert view["state"] == "queued" and view["pid"] is None and view["limits"] == spec.limits.to_dict()
    odd = store.get(store.create("odd", "tiny", {"config": "tiny"}, 10))  # written by hand, or by another version
    assert odd is not None and odd.hooks == {} and odd.view()["limits"] is None
    with pytest.raises((ConfigError, KeyError)):
        odd.spec  # noqa: B018  (only asking for it parses it)
