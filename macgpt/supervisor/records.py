"""The job table as the daemon changes it: every state change guarded by the transition table and
published on the bus; progress from worker events; the finish hooks.

While the database is locked or failing, state changes are held back in order and written when it
works again (``retry``), and the errors are counted for `status`: the workers go on meanwhile.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from typing import Any

from macgpt import protocol
from macgpt.jobrecord import JobRecord
from macgpt.log import get
from macgpt.paths import Layout
from macgpt.protocol import JobState
from macgpt.supervisor import notify
from macgpt.supervisor.bus import EventBus
from macgpt.supervisor.store import JobStore, TransitionError

log = get("macgpt.records")

Pending = tuple[int, JobState, str | None, dict[str, Any]]


class JobRecords:
    def __init__(self, store: JobStore, bus: EventBus, lay: Layout) -> None:
        self.store = store
        self.bus = bus
        self.lay = lay
        self.pending: list[Pending] = []  # state changes a database error held back, in order
        self.errors = 0
        self.last_error: dict[str, Any] | None = None  # {where, message, time}, shown by `status`
        bus.on_error = lambda e: self.db_error("events", e)

    def get(self, job_id: int) -> JobRecord | None:
        return self.store.get(job_id)

    # -- state changes ----------------------------------------------------------------------------
    def transition(self, job_id: int, state: JobState, reason: str | None, **fields: Any) -> bool:
        """Move the job to ``state`` and publish it; False (logged) when the transition table
        refuses. A database error keeps the change for ``retry``: it still counts as made."""
        try:
            if self.pending:
                raise sqlite3.OperationalError("earlier state changes are still waiting for the database")
            self.store.transition(job_id, state, reason, **fields)
        except TransitionError as e:
            log.error("transition_refused", job=job_id, error=str(e))
            return False
        except sqlite3.Error as e:  # locked or failing: kept, in order, and written when it works again
            self.pending.append((job_id, state, reason, fields))
            self.db_error("transition", e)
        self.bus.emit(job_id, "state", {"state": str(state), "reason": reason})
        log.info("job_state", job=job_id, state=str(state), reason=reason)
        if state in protocol.FINISHED:
            job = self.store.get(job_id)
            if job:
                notify.job_finished(job, self.lay.job_dir(job_id), sys.platform)
        return True

    def retry(self) -> None:
        """Write, in order, the state changes a database error held back."""
        while self.pending:
            job_id, state, reason, fields = self.pending[0]
            try:
                self.store.transition(job_id, state, reason, **fields)
            except TransitionError as e:
                log.error("transition_refused", job=job_id, error=str(e))
            except sqlite3.Error as e:
                self.db_error("retry", e)
                return
            self.pending.pop(0)

    # -- events -----------------------------------------------------------------------------------
    def event(self, job_id: int, kind: str, data: dict[str, Any]) -> None:
        """An event from a job's worker (or about it): store progress, publish, persist."""
        try:
            self._progress(job_id, kind, data)
        except sqlite3.Error as e:  # progress fields are refreshed by later events; the event itself is kept
            self.db_error(kind, e)
        self.bus.emit(job_id, kind, data)

    def _progress(self, job_id: int, kind: str, data: dict[str, Any]) -> None:
        if kind == "started":
            job = self.store.get(job_id)
            if job and job.state == JobState.STARTING:  # a job paused while starting stays paused
                self.transition(job_id, JobState.RUNNING, None)
        elif kind == "metrics":
            self.store.update(job_id, step=data["step"], loss=data["loss"])
        elif kind == "eval":
            self.store.update(job_id, eval_loss=data["loss"])
        elif kind == "checkpoint":
            self.store.update(job_id, checkpoint=data["path"], checkpoint_step=data["step"],
                              checkpoint_time=time.time())
        elif kind in ("failed", "error"):
            self.store.update(job_id, error=str(data.get("message"))[:2000])
            log.error("worker_" + kind, job=job_id, message=data.get("message"))
        elif kind == "warning":
            self.store.update(job_id, warning=str(data.get("message"))[:2000])
            log.warning("worker_warning", job=job_id, message=data.get("message"))

    def forget(self, job_id: int) -> None:
        """Remove the job's row and its events (`macgpt rm`); its numbering starts afresh."""
        self.store.delete(job_id)
        self.bus.forget(job_id)

    # -- database health ----------------------------------------------------------------------------
    def db_error(self, where: str, e: sqlite3.Error) -> None:
        self.errors += 1
        self.last_error = {"where": where, "message": str(e), "time": time.time()}
        if self.errors <= 20 or self.errors % 100 == 0:
            log.error("database_error", where=where, error=str(e), count=self.errors,
                      pending_transitions=len(self.pending), unstored_events=self.bus.unstored)

    def health(self) -> dict[str, Any]:
        """What `status` says about the database: errors since start, the last one, and what still
        waits to be written (state changes, events); all zero/None on a healthy daemon."""
        return {"db_errors": self.errors, "db_last_error": self.last_error,
                "db_pending_changes": len(self.pending), "db_unstored_events": self.bus.unstored}
