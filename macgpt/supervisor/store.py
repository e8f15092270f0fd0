"""The job queue and event history in SQLite (WAL, busy timeout, explicit transactions).

The daemon is the only writer. Every state change is one guarded write that checks the
transition table in ``protocol``; a refused transition raises ``TransitionError``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from macgpt.jobrecord import JobRecord
from macgpt.protocol import FINISHED, TRANSITIONS, JobState

SCHEMA_VERSION = 2  # 2: job_after (a v1 database gains the table at the first open)
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    queue_order REAL NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL,
    step INTEGER NOT NULL DEFAULT 0,
    max_steps INTEGER NOT NULL,
    loss REAL,
    eval_loss REAL,
    checkpoint TEXT,
    checkpoint_step INTEGER,
    checkpoint_time REAL,
    final_model TEXT,
    error TEXT,
    warning TEXT,
    restarts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    job INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_after (
    job INTEGER NOT NULL,
    after INTEGER NOT NULL,
    PRIMARY KEY (job, after)
) WITHOUT ROWID;
"""
PROGRESS_FIELDS = frozenset({"step", "loss", "eval_loss", "checkpoint", "checkpoint_step", "checkpoint_time",
                             "final_model", "error", "warning", "restarts", "started", "finished", "max_steps"})


class StoreError(Exception):
    """The database cannot be used; the message says why and what to do."""


class TransitionError(Exception):
    pass


class StoreBusy(sqlite3.OperationalError):
    """A write refused without waiting: another program held the write lock a moment ago."""


class JobStore:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self._busy_until = 0.0  # monotonic time before which writes fail at once (see tx)
        self._busy_pause = 0.0
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self.db.execute("PRAGMA synchronous=NORMAL")
            check = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            version = self._version()
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: written by a newer macgpt (schema {version}); upgrade macgpt")
            if version < SCHEMA_VERSION:
                self.db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            with self.tx():  # can we write? (another process holding a write lock fails here, clearly)
                pass
        except sqlite3.OperationalError as e:
            if "locked" in str(e):
                raise StoreError(f"{self.path}: the database is locked by another process ({e}); "
                                 "is another macgptd using this home?") from None
            raise StoreError(f"{self.path}: cannot open the database: {e}") from None
        except sqlite3.DatabaseError as e:
            backup = self.backup_path
            restore = (f"Restore the copy checked at the daemon's last start or stop: `cp {backup} {self.path}` "
                       f"and delete {self.path.name}-wal and -shm if present; or recover"
                       if backup.exists() else "Recover")
            raise StoreError(
                f"{self.path}: the database is damaged ({e}). Nothing was changed. {restore} with "
                f"`sqlite3 {self.path} .recover | sqlite3 recovered.sqlite3` and move the result into "
                f"place, or move the file away to start with an empty queue (job directories stay)."
            ) from None

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    def backup(self) -> Path:
        """A consistent copy of the database beside it, replacing the previous copy only once both
        the live database and the copy pass an integrity check: damage that appears during a run
        is never copied over the last good backup (``StoreError`` says so; the old copy stays)."""
        try:
            live = self.db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            live = str(e)
        if live != "ok":
            raise StoreError(f"{self.path}: integrity check failed ({live}); kept the last good copy "
                             f"{self.backup_path}")
        tmp = self.path.with_name(f".{self.path.name}.bak.tmp")
        tmp.unlink(missing_ok=True)
        with sqlite3.connect(tmp) as copy:
            self.db.backup(copy)
            check = copy.execute("PRAGMA integrity_check").fetchone()[0]
        copy.close()
        if check != "ok":
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{tmp}: the new copy fails its integrity check ({check}); kept {self.backup_path}")
        os.chmod(tmp, 0o600)
        tmp.replace(self.backup_path)
        return self.backup_path

    def set_busy_timeout(self, ms: int) -> None:
        self.db.execute(f"PRAGMA busy_timeout={int(ms)}")

    def _version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction. While another program holds the write lock, a write waits the busy
        timeout once, then writes fail at once for a growing pause (0.1 s doubling to 2 s), so a
        long lock costs the daemon's loop one wait, not one per write; callers keep what failed."""
        now = time.monotonic()
        if now < self._busy_until:
            raise StoreBusy("database is locked by another program; the write is kept and tried again")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                self._busy_pause = min(2.0, max(0.1, self._busy_pause * 2))
                self._busy_until = time.monotonic() + self._busy_pause
            raise
        self._busy_pause = 0.0
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # -- jobs -----------------------------------------------------------------------------------
    def create(self, name: str, config: str, spec: dict[str, Any], max_steps: int) -> int:
        now = time.time()
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO jobs (name, config, spec, state, queue_order, created, updated, max_steps) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, config, json.dumps(spec, ensure_ascii=False), JobState.QUEUED, now, now, now, max_steps),
            )
            return int(cur.lastrowid or 0)

    def get(self, job_id: int) -> JobRecord | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def jobs(self, limit: int = 1000) -> list[JobRecord]:
        rows = self.db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def latest_id(self) -> int | None:
        row = self.db.execute("SELECT MAX(id) FROM jobs").fetchone()
        return row[0]

    def queued(self) -> list[JobRecord]:
        rows = self.db.execute(
            "SELECT * FROM jobs WHERE state = ? ORDER BY queue_order, id", (JobState.QUEUED,)
        ).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def in_states(self, states: Iterable[JobState]) -> list[JobRecord]:
        states = list(states)
        marks = ",".join("?" * len(states))
        rows = self.db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", states).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def transition(self, job_id: int, new: JobState, reason: str | None = None, **fields: Any) -> JobState:
        """Move a job to ``new`` if the transition table allows it; returns the old state."""
        bad = set(fields) - PROGRESS_FIELDS - {"queue_order"}
        if bad:
            raise ValueError(f"unknown job fields {sorted(bad)}")
        with self.tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise TransitionError(f"job {job_id} does not exist")
            old = JobState(row["state"])
            if new != old and new not in TRANSITIONS[old]:
                raise TransitionError(f"job {job_id} is {old}; it cannot become {new}")
            now = time.time()
            if new in FINISHED:
                fields.setdefault("finished", now)
            elif old in FINISHED:  # a retried job is not finished any more
                fields.setdefault("finished", None)
            sets = ", ".join(f"{k} = ?" for k in fields)
            db.execute(
                f"UPDATE jobs SET state = ?, reason = ?, updated = ?{', ' + sets if sets else ''} WHERE id = ?",
                (new, reason, now, *fields.values(), job_id),
            )
            return old

    def update(self, job_id: int, **fields: Any) -> None:
        """Progress fields (step, loss, checkpoint, ...) without a state change."""
        bad = set(fields) - PROGRESS_FIELDS
        if bad:
            raise ValueError(f"unknown job fields {sorted(bad)}")
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as db:
            db.execute(f"UPDATE jobs SET {sets}, updated = ? WHERE id = ?", (*fields.values(), time.time(), job_id))

    # -- events ---------------------------------------------------------------------------------
    def last_seq(self, job_id: int) -> int:
        row = self.db.execute("SELECT MAX(seq) FROM events WHERE job = ?", (job_id,)).fetchone()
        return int(row[0] or 0)

    def append_events(self, events: list[tuple[int, int, float, str, dict[str, Any]]]) -> None:
        """(job, seq, time, kind, data) rows, in one transaction."""
        if not events:
            return
        with self.tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO events (job, seq, t, kind, data) VALUES (?, ?, ?, ?, ?)",
                [(j, s, t, k, json.dumps(d, ensure_ascii=False, default=str)) for j, s, t, k, d in events],
            )

    def history(self, job_id: int, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT seq, t, kind, data FROM events WHERE job = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        ).fetchall()
        return [{"seq": r["seq"], "t": r["t"], "kind": r["kind"], "data": json.loads(r["data"])} for r in rows]

    # -- housekeeping (issue 13) --------------------------------------------------------------------
    def delete(self, job_id: int) -> None:
        """Forget a job: its row and its events, in one transaction (ids are never reused)."""
        with self.tx() as db:
            db.execute("DELETE FROM events WHERE job = ?", (job_id,))
            db.execute("DELETE FROM job_after WHERE job = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def set_after(self, job_id: int, after: Iterable[int]) -> None:
        """The jobs ``job_id`` runs after (`submit --after`)."""
        with self.tx() as db:
            db.executemany("INSERT OR IGNORE INTO job_after (job, after) VALUES (?, ?)", [(job_id, a) for a in after])

    def after(self, job_id: int) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT after FROM job_after WHERE job = ? ORDER BY after", (job_id,))]

    def set_steps(self, job_id: int, spec: dict[str, Any], max_steps: int) -> None:
        """A finished job's stored spec with a new step total (`macgpt extend`)."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET spec = ?, max_steps = ?, updated = ? WHERE id = ?",
                       (json.dumps(spec, ensure_ascii=False), max_steps, time.time(), job_id))
