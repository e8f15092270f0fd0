"""Which queued job starts next, and what each waiting job's reason says.

A job starts when a slot is free, the governor sees room (memory, CPU budget) and every job it
runs ``--after`` has completed; one whose ``--after`` job failed fails with it. A waiting job's
reason names what it waits for and its place in the queue, rewritten only when that changes.
"""

from __future__ import annotations

from collections.abc import Callable

from macgpt.jobrecord import JobRecord
from macgpt.protocol import OUTCOME_STATES, ErrorCode, JobState, Outcome, ProtocolError
from macgpt.supervisor.lifecycle import JobSupervisor
from macgpt.supervisor.records import JobRecords
from macgpt.supervisor.store import JobStore

Start = Callable[[JobRecord], None]


def schedule(sv: JobSupervisor, records: JobRecords, max_concurrent: int, start: Start) -> None:
    """One turn of the scheduler: evicted jobs whose memory is back rejoin the queue at its front,
    then queued jobs start while there is room."""
    for job_id in sv.memory_back():
        job = records.get(job_id)
        if job is None or job.state != JobState.PAUSED:
            continue  # cancelled (or otherwise moved on) while it waited: cancel is final
        records.transition(job_id, OUTCOME_STATES[Outcome.MEMORY_BACK], "memory is back",
                           queue_order=job.queue_order - 1e9)
    active, position = len(sv.jobs()), 0
    for job in ready(records, records.store.queued()):
        waiting = sv.why_wait() if active < max_concurrent else None
        if active < max_concurrent and waiting is None:
            start(job)
            active += 1
            continue
        position += 1
        reason = queue_reason(position, active, max_concurrent, waiting)
        if not same_wait(job.reason, reason):
            records.transition(job.id, JobState.QUEUED, reason)


def ready(records: JobRecords, queued: list[JobRecord]) -> list[JobRecord]:
    """The queued jobs the scheduler may start, in order: those whose --after jobs all completed.
    A job waiting says so in its reason; one whose --after job failed fails with it."""
    out = []
    for job in queued:
        deps = records.store.after(job.id)
        if not deps:
            out.append(job)
            continue
        states = {d: (dep.state if (dep := records.get(d)) else None) for d in deps}
        kind, why = after_decision(job.id, states)
        if kind == "run":
            out.append(job)
        elif kind == "fail":
            records.transition(job.id, JobState.FAILED, why, error=why)
        elif job.reason != why:
            records.transition(job.id, JobState.QUEUED, why)
    return out


def after_decision(job_id: int, deps: dict[int, str | None]) -> tuple[str, str | None]:
    """For a queued job and the states of the jobs it runs after (None: removed): ("run", None),
    ("wait", why) or ("fail", why)."""
    for dep, state in sorted(deps.items()):
        if state is None:
            return "fail", f"job {dep}, which it runs after, was removed"
        if state in (JobState.FAILED, JobState.CANCELLED):
            return "fail", f"job {dep}, which it runs after, {state}"
    waiting = [str(d) for d, s in sorted(deps.items()) if s != JobState.COMPLETED]
    if waiting:
        return "wait", f"after job {', '.join(waiting)}"
    return "run", None


def check_after(store: JobStore, after: list[int]) -> list[int]:
    """The ``--after`` jobs of a submit, refused (nothing queued) when one does not exist or has failed."""
    for dep in after:
        job = store.get(dep)
        if job is None:
            raise ProtocolError(ErrorCode.INVALID, f"--after {dep}: job {dep} does not exist")
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            raise ProtocolError(ErrorCode.INVALID, f"--after {dep}: job {dep} is {job.state}; it will not complete")
    return sorted(set(after))


def queue_reason(position: int, running: int, slots: int, waiting: str | None) -> str:
    """Why a queued job is not running yet: what it waits for and where it stands."""
    if waiting:
        return f"{waiting} (position {position} in the queue)"
    if running >= slots:
        return f"waiting for a free slot: {running} of {slots} running (position {position} in the queue)"
    return f"next to start (position {position} in the queue)"


def same_wait(old: str | None, new: str) -> bool:
    """The same kind of wait at the same place in the queue (a wait's figures move every reading:
    they are no new event)."""
    if old is None:
        return False
    return old.split(":")[0] == new.split(":")[0] and old.rsplit("(position", 1)[-1] == new.rsplit("(position", 1)[-1]
