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

if TYPE_CHECKING:
    from macgpt.supervisor.daemon import Daemon
    from macgpt.supervisor.handlers import Reply

log = get("macgpt.housekeeping")


def removal_refusal(job: dict[str, Any], has_worker: bool) -> str | None:
    """Why a job cannot be removed now, or None. A job whose worker lives is never removed: the
    client stops it first (``rm --force``)."""
    if has_worker or job["state"] in (JobState.RUNNING, JobState.STARTING):
        return (f"job {job['id']} is {job['state']}; cancel it first, or `macgpt rm --force {job['id']}` "
                "(which stops it with a checkpoint, then removes it)")
    return None


def remove(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{jobs: [id, ...]} -> {removed: [id, ...], freed: bytes}. All or nothing: when any job does not
    exist or still has a worker, nothing is removed. A queued or paused job without a worker is
    cancelled first. The rows go first (one transaction each), then the directories."""
    from macgpt.supervisor.handlers import _job
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


def requeue(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job} -> {job, state: 'queued', from_step}: a cancelled or failed job goes to the back of the
    queue; its next worker resumes from the newest intact checkpoint in its directory."""
    from macgpt.supervisor.handlers import _job
    job = _job(daemon, args["job"])
    if job["state"] not in (JobState.CANCELLED, JobState.FAILED):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} is {job['state']}; only a cancelled or failed "
                            "job can be continued (`macgpt resume` also resumes a paused one)")
    ckpts = checkpoint_files(daemon.lay.job_dir(job["id"]))
    if not daemon._transition(job["id"], JobState.QUEUED, "continued by the user", queue_order=time.time(),
                              error=None, finished=None):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} cannot be continued now")
    return {"job": job["id"], "state": "queued", "from_step": ckpts[0][0] if ckpts else 0}



def extend(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job, steps} -> {job, state: 'queued', from_step, max_steps}: a completed job trains ``steps``
    more on the same data. Its worker resumes from the final checkpoint; the cosine schedule is
    stretched to the new total, so the learning rate rises from the old floor to where the longer
    cosine is at that step, then decays to the floor at the new end (README, "extend")."""
    import json

    from macgpt.supervisor.handlers import _job

    job = _job(daemon, args["job"])
    if job["state"] != JobState.COMPLETED:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} is {job['state']}; only a completed job can be "
                            "extended (`macgpt resume` continues a cancelled or failed one)")
    ckpts = checkpoint_files(daemon.lay.job_dir(job["id"]))
    if not ckpts:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} has no checkpoint left to continue from")
    spec = json.loads(job["spec"])
    total = ckpts[0][0] + args["steps"]
    if total > 10_000_000:
        raise ProtocolError(ErrorCode.INVALID, f"extend: {total} steps in all is over the limit of 10000000")
    spec["train"]["steps"] = total
    daemon.store.set_steps(job["id"], spec, total)
    if not daemon._transition(job["id"], JobState.QUEUED, f"extended to {total} steps", queue_order=time.time(),
                              finished=None, final_model=None):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} cannot be extended now")
    return {"job": job["id"], "state": "queued", "from_step": ckpts[0][0], "max_steps": total}


HANDLERS = {"remove": remove, "requeue": requeue, "extend": extend}  # registered by handlers.py

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


def check_after(daemon: Daemon, after: list[int]) -> list[int]:
    """The ``--after`` jobs of a submit, refused (nothing queued) when one does not exist or has failed."""
    for dep in after:
        job = daemon.store.get(dep)
        if job is None:
            raise ProtocolError(ErrorCode.INVALID, f"--after {dep}: job {dep} does not exist")
        if job["state"] in (JobState.FAILED, JobState.CANCELLED):
            raise ProtocolError(ErrorCode.INVALID, f"--after {dep}: job {dep} is {job['state']}; it will not complete")
    return sorted(set(after))


def ready(daemon: Daemon, queued: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The queued jobs the scheduler may start, in order: those whose --after jobs all completed.
    A job waiting says so in its reason; one whose --after job failed fails with it."""
    out = []
    for job in queued:
        deps = daemon.store.after(job["id"])
        if not deps:
            out.append(job)
            continue
        states = {d: (daemon.store.get(d) or {}).get("state") for d in deps}
        kind, why = after_decision(job["id"], states)
        if kind == "run":
            out.append(job)
        elif kind == "fail":
            daemon._transition(job["id"], JobState.FAILED, why, error=why)
        elif job["reason"] != why:
            daemon._transition(job["id"], JobState.QUEUED, why)
    return out
