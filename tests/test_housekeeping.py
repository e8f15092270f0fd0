"""Daemon-side housekeeping decisions and storage (issue 13): --after, and the schema migration that
keeps an old queue database working. Real SQLite."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from macgpt.jobrecord import JobRecord
from macgpt.protocol import JobState
from macgpt.supervisor import store as store_mod
from macgpt.supervisor.housekeeping import removal_refusal
from macgpt.supervisor.scheduler import after_decision
from macgpt.supervisor.store import JobStore

V1_SCHEMA = store_mod.SCHEMA.split("CREATE TABLE IF NOT EXISTS job_after")[0]


def test_after_decision() -> None:
    assert after_decision(5, {1: "completed", 2: "completed"}) == ("run", None)
    assert after_decision(5, {1: "completed", 2: "running", 3: "queued"}) == ("wait", "after job 2, 3")
    kind, why = after_decision(5, {1: "running", 2: "failed"})
    assert kind == "fail" and "job 2" in why and "failed" in why
    assert after_decision(5, {4: None})[0] == "fail"


def test_removal_refused_while_a_worker_lives(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "q.sqlite3")
    job = store.get(store.create("j", "tiny", {}, 10))
    store.close()
    assert job is not None

    def in_state(state: str) -> JobRecord:
        return dataclasses.replace(job, id=3, state=JobState(state))

    assert removal_refusal(in_state("completed"), has_worker=False) is None
    assert removal_refusal(in_state("queued"), has_worker=False) is None
    assert "rm --force 3" in (removal_refusal(in_state("running"), has_worker=True) or "")
    assert removal_refusal(in_state("paused"), has_worker=True)


def test_a_version_1_database_gains_the_after_table_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "macgpt.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA + "PRAGMA user_version=1;")
    db.execute("INSERT INTO jobs (name, config, spec, state, queue_order, created, updated, max_steps) "
               "VALUES ('old', 'tiny', '{}', 'completed', 1, 1, 1, 200)")
    db.commit()
    db.close()
    store = JobStore(path)
    assert store._version() == store_mod.SCHEMA_VERSION == 2
    assert [j.name for j in store.jobs()] == ["old"]
    new = store.create("next", "tiny", {}, 10)
    store.set_after(new, [1, 1])
    assert store.after(new) == [1]
    store.delete(new)
    assert store.get(new) is None and store.after(new) == [] and store.get(1) is not None
    store.close()
