"""Daemon handlers for housekeeping (issue 13): forget jobs and their files (`macgpt rm`, `prune`),
and put a cancelled or failed job back in the queue to continue from its last checkpoint."""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING, Any

from macgpt.ckptformat import checkpoint_files
from macgpt.jobfiles import disk_usage
from macgpt.log import get
from macgpt.protocol import FINISHED, ErrorCode, JobState, ProtocolError
from macgpt.supervisor.handlers import Reply, _job, handler

if TYPE_CHECKING:
    from macgpt.supervisor.daemon import Daemon

log = get("macgpt.housekeeping")


def removal_refusal(job: dict[str, Any], has_worker: bool) -> str | None:
    """Why a job cannot be removed now, or None. A job whose worker lives is never removed: the
    client stops it first (``rm --force``)."""
    if has_worker or job["state"] in (JobState.RUNNING, JobState.STARTING):
        return (f"job {job['id']} is {job['state']}; cancel it first, or `macgpt rm --force {job['id']}` "
                "(which stops it with a checkpoint, then removes it)")
    return None


@handler("remove")
def remove(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{jobs: [id, ...]} -> {removed: [id, ...], freed: bytes}. All or nothing: when any job does not
    exist or still has a worker, nothing is removed. A queued or paused job without a worker is
    cancelled first. The rows go first (one transaction each), then the directories."""
    jobs = [_job(daemon, j) for j in dict.fromkeys(args["jobs"])]
    for job in jobs:
        runner = daemon.runners.get(job["id"])
        why = removal_refusal(job, runner is not None)
        if why:
            raise ProtocolError(ErrorCode.CONFLICT, why)
    daemon.bus.flush()
    freed = 0
    for job in jobs:
        if job["state"] not in FINISHED:
            daemon._transition(job["id"], JobState.CANCELLED, "removed")
            daemon.bus.flush()
        daemon.store.delete(job["id"])
        daemon.bus._seq.pop(job["id"], None)
        job_dir = daemon.lay.job_dir(job["id"])
        freed += disk_usage(job_dir)
        shutil.rmtree(job_dir, ignore_errors=True)
        log.info("job_removed", job=job["id"], state=job["state"], dir=str(job_dir))
    return {"removed": [j["id"] for j in jobs], "freed": freed}


@handler("requeue")
def requeue(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job} -> {job, state: 'queued', from_step}: a cancelled or failed job goes to the back of the
    queue; its next worker resumes from the newest intact checkpoint in its directory."""
    job = _job(daemon, args["job"])
    if job["state"] not in (JobState.CANCELLED, JobState.FAILED):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} is {job['state']}; only a cancelled or failed "
                            "job can be continued (`macgpt resume` also resumes a paused one)")
    ckpts = checkpoint_files(daemon.lay.job_dir(job["id"]))
    if not daemon._transition(job["id"], JobState.QUEUED, "continued by the user", queue_order=time.time(),
                              error=None, finished=None):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} cannot be continued now")
    return {"job": job["id"], "state": "queued", "from_step": ckpts[0][0] if ckpts else 0}
