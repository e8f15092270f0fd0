"""Daemon handlers for housekeeping (issue 13): forget jobs and their files (`macgpt rm`, `prune`),
put a cancelled or failed job back in the queue to continue from its last checkpoint, and train a
completed one further (`macgpt extend`)."""

from __future__ import annotations

import copy
import shutil
import time
from typing import Any

from macgpt.ckptformat import checkpoint_files
from macgpt.jobfiles import disk_usage
from macgpt.jobrecord import JobRecord
from macgpt.log import get
from macgpt.protocol import FINISHED, ErrorCode, JobState, ProtocolError
from macgpt.supervisor.context import Context, Handler, Reply, find_job, registrar

log = get("macgpt.housekeeping")
HANDLERS: dict[str, Handler] = {}  # added to the daemon's by handlers.py
handler = registrar(HANDLERS)
MAX_TOTAL_STEPS = 10_000_000


def removal_refusal(job: JobRecord, has_worker: bool) -> str | None:
    """Why a job cannot be removed now, or None. A job whose worker lives is never removed: the
    client stops it first (``rm --force``)."""
    if has_worker or job.state in (JobState.RUNNING, JobState.STARTING):
        return (f"job {job.id} is {job.state}; cancel it first, or `macgpt rm --force {job.id}` "
                "(which stops it with a checkpoint, then removes it)")
    return None


@handler("remove")
def remove(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{jobs: [id, ...]} -> {removed: [id, ...], freed: bytes}. All or nothing: when any job does not
    exist or still has a worker, nothing is removed. A queued or paused job without a worker is
    cancelled first. The rows go first (one transaction each), then the directories."""
    jobs = [find_job(ctx, j) for j in dict.fromkeys(args["jobs"])]
    for job in jobs:
        why = removal_refusal(job, ctx.supervisor.runner(job.id) is not None)
        if why:
            raise ProtocolError(ErrorCode.CONFLICT, why)
    records = ctx.records
    records.bus.flush()
    freed = 0
    for job in jobs:
        if job.state not in FINISHED:
            records.transition(job.id, JobState.CANCELLED, "removed")
            records.bus.flush()
        records.forget(job.id)
        job_dir = ctx.lay.job_dir(job.id)
        freed += disk_usage(job_dir)
        shutil.rmtree(job_dir, ignore_errors=True)
        log.info("job_removed", job=job.id, state=str(job.state), dir=str(job_dir))
    return {"removed": [j.id for j in jobs], "freed": freed}


@handler("requeue")
def requeue(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job} -> {job, state: 'queued', from_step}: a cancelled or failed job goes to the back of the
    queue; its next worker resumes from the newest intact checkpoint in its directory."""
    job = find_job(ctx, args["job"])
    if job.state not in (JobState.CANCELLED, JobState.FAILED):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} is {job.state}; only a cancelled or failed "
                            "job can be continued (`macgpt resume` also resumes a paused one)")
    ckpts = checkpoint_files(ctx.lay.job_dir(job.id))
    if not ctx.records.transition(job.id, JobState.QUEUED, "continued by the user", queue_order=time.time(),
                                  error=None, finished=None):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} cannot be continued now")
    return {"job": job.id, "state": "queued", "from_step": ckpts[0][0] if ckpts else 0}


@handler("extend")
def extend(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job, steps} -> {job, state: 'queued', from_step, max_steps}: a completed job trains ``steps``
    more on the same data. Its worker resumes from the final checkpoint; the cosine schedule is
    stretched to the new total, so the learning rate rises from the old floor to where the longer
    cosine is at that step, then decays to the floor at the new end (README, "extend")."""
    job = find_job(ctx, args["job"])
    if job.state != JobState.COMPLETED:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} is {job.state}; only a completed job can be "
                            "extended (`macgpt resume` continues a cancelled or failed one)")
    ckpts = checkpoint_files(ctx.lay.job_dir(job.id))
    if not ckpts:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} has no checkpoint left to continue from")
    total = ckpts[0][0] + args["steps"]
    if total > MAX_TOTAL_STEPS:
        raise ProtocolError(ErrorCode.INVALID, f"extend: {total} steps in all is over the limit of {MAX_TOTAL_STEPS}")
    stored = copy.deepcopy(job.stored)
    stored["train"]["steps"] = total
    ctx.records.store.set_steps(job.id, stored, total)
    if not ctx.records.transition(job.id, JobState.QUEUED, f"extended to {total} steps", queue_order=time.time(),
                                  finished=None, final_model=None):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} cannot be extended now")
    return {"job": job.id, "state": "queued", "from_step": ckpts[0][0], "max_steps": total}
