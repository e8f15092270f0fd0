"""Reading the home directly while the daemon is down: the job table and event history from the
SQLite file (opened read-only, never written), and the disk use of each job directory."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from macgpt.client.connection import RemoteError
from macgpt.jobfiles import best_checkpoint, no_checkpoint_message
from macgpt.jobrecord import JobRecord
from macgpt.paths import Layout

OFFLINE_NOTE = "(daemon not running: read from {home} directly; states are as the daemon last left them)"
OFFLINE_NOTE_ZH = "（守护进程未运行：直接读取 {home}；状态是守护进程最后留下的）"


class OfflineHome:
    """The job database of a home, read-only. A missing database is an empty queue."""

    def __init__(self, lay: Layout) -> None:
        self.lay = lay
        self.db: sqlite3.Connection | None = None
        if lay.db.exists():
            self.db = sqlite3.connect(f"{lay.db.as_uri()}?mode=ro", uri=True, timeout=5.0)
            self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def rows(self) -> list[JobRecord]:
        if self.db is None:
            return []
        return [JobRecord.from_row(r) for r in self.db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT 1000")]

    def get(self, job_id: int | None) -> JobRecord:
        """One job row; the most recent when ``job_id`` is None; RemoteError(not_found) as the daemon says it."""
        rows = self.rows()
        if not rows and job_id is None:
            raise RemoteError("not_found", "there are no jobs yet; submit one with `macgpt submit tiny`")
        if job_id is None:
            return rows[0]  # there is one: the most recent
        for r in rows:
            if r.id == job_id:
                return r
        raise RemoteError("not_found", f"job {job_id} does not exist")

    def history(self, job_id: int, after: int = 0) -> list[dict[str, Any]]:
        assert self.db is not None  # get() found the job, so there is a database
        rows = self.db.execute("SELECT seq, t, kind, data FROM events WHERE job = ? AND seq > ? ORDER BY seq",
                               (job_id, after))
        return [{"seq": r["seq"], "job": job_id, "t": r["t"], "kind": r["kind"], "data": json.loads(r["data"])}
                for r in rows]

    def status(self, job_id: int | None) -> dict[str, Any]:
        """The shape of the daemon's `status` answer, with no live numbers and ``daemon.running`` false."""
        jobs = [self.get(job_id)] if job_id else self.rows()
        return {"jobs": [j.view() for j in jobs],
                "daemon": {"running": False, "pid": None, "home": str(self.lay.home), "limits": self._limits()}}

    def sample_source(self, job_id: int | None) -> dict[str, Any]:
        """Where `sample --job` reads from with the daemon down, as the daemon's answer says it."""
        job = self.get(job_id)
        path = best_checkpoint(self.lay.job_dir(job.id), job.state)
        if path is None:
            raise RemoteError("not_found", no_checkpoint_message(job.id, job.state))
        return {"source": "checkpoint", "path": str(path), "job": job.id, "state": str(job.state)}

    def _limits(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.lay.home / "limits.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
