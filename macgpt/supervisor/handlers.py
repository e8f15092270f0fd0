"""The daemon's control commands. Each handler's docstring is its spec; arguments arrive
already validated by ``protocol.parse_request``. A handler gets a ``Context`` (the job supervisor,
the job records, the home), returns its result, raises ``ProtocolError``, or returns ``DEFERRED``
and answers later through its ``Reply``. The housekeeping commands are in ``housekeeping.py``."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from macgpt import __version__, protocol
from macgpt.config.job import build_spec
from macgpt.config.schema import ConfigError
from macgpt.data.sources import Manifest, changed_files
from macgpt.errors import DataError
from macgpt.fsutil import atomic_write_text
from macgpt.jobfiles import best_checkpoint, no_checkpoint_message
from macgpt.jobrecord import JobRecord
from macgpt.protocol import FINISHED, ErrorCode, JobState, ProtocolError
from macgpt.supervisor import housekeeping, levers
from macgpt.supervisor.context import DEFERRED, Context, Handler, Reply, find_job, registrar
from macgpt.supervisor.notify import check_hooks
from macgpt.supervisor.scheduler import check_after

_OWN: dict[str, Handler] = {}
handler = registrar(_OWN)


def dispatch(ctx: Context, cmd: str, args: dict[str, Any], reply: Reply) -> Any:
    return HANDLERS[cmd](ctx, args, reply)


@handler("ping")
def ping(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Liveness: {pong, version, protocol, pid}."""
    return {"pong": True, "version": __version__, "protocol": protocol.PROTOCOL_VERSION, "pid": os.getpid()}


@handler("daemon_info")
def daemon_info(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """The daemon itself: pid, home, socket, uptime, limits, requests served, own CPU and memory."""
    import psutil

    me = psutil.Process()
    cpu = me.cpu_times()
    return {
        "pid": os.getpid(), "version": __version__, "home": str(ctx.lay.home),
        "socket": ctx.lay.control, "events": ctx.lay.events, "log": str(ctx.lay.log_file),
        "uptime": time.time() - ctx.started, "limits": ctx.supervisor.enforcer.limits.to_dict(),
        "max_concurrent": ctx.max_concurrent, "jobs_running": ctx.supervisor.jobs(), **ctx.counters(),
        "rss": me.memory_info().rss, "cpu_seconds": cpu.user + cpu.system,
    }


@handler("submit")
def submit(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Queue a job: {config, overrides?, data?, eval_data?, name?, limits?, manifest?, after?, hooks?}
    -> {job, name, position}. The client validated the data files; here only a ``stat`` of each
    checks they are unchanged (the daemon's loop never reads training data). Nothing is queued
    when anything is wrong."""
    try:
        own = args.get("limits") or {}
        limits = ctx.supervisor.enforcer.base.updated(own)
        spec = build_spec(args["config"], args.get("overrides") or {}, args.get("data") or [],
                          args.get("eval_data") or [], args.get("name") or "", limits, own)
        spec = dataclasses.replace(spec, manifest=checked_manifest(spec, args.get("manifest") or {}))
        hooks = check_hooks(args["hooks"]) if "hooks" in args else None
    except (ConfigError, DataError, KeyError, TypeError, ValueError) as e:
        raise ProtocolError(ErrorCode.INVALID, str(e)) from None
    store = ctx.records.store
    after = check_after(store, args.get("after") or [])
    stored = {**spec.to_dict(), "hooks": hooks} if hooks else spec.to_dict()
    job_id = store.create(spec.name, spec.config, stored, spec.train.steps)
    store.set_after(job_id, after)
    ctx.records.event(job_id, "state", {"state": "queued", "reason": None, "config": spec.config})
    return {"job": job_id, "name": spec.name, "config": spec.config, "position": len(store.queued()),
            "job_dir": str(ctx.lay.job_dir(job_id))}


def checked_manifest(spec: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """The client's validated file lists, after cheap checks; DataError when a file changed or
    when data files come without one (the worker validates only the built-in data itself)."""
    if not manifest.get("train"):
        if spec.data or spec.eval_data:
            raise DataError(["data files must be validated by the client first: submit with `macgpt submit`"])
        return {}
    parts = [Manifest.from_dict(manifest["train"])]
    parts += [Manifest.from_dict(manifest["eval"])] if manifest.get("eval") else []
    changed = [line for m in parts for line in changed_files(m)]
    if changed:
        raise DataError(changed)
    return {"train": parts[0].to_dict(), "eval": parts[1].to_dict() if len(parts) > 1 else None}


def job_view(ctx: Context, job: JobRecord) -> dict[str, Any]:
    """A job as `status` shows it, live numbers merged in when a worker runs."""
    view = job.view()
    live = ctx.supervisor.live_view(job.id)
    if live is not None:
        live["step"] = max(live["step"], job.step)
        if live["loss"] is None:
            live["loss"] = job.loss
        view.update(live)
    return view


@handler("status")
def status(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job?} -> {jobs: [...], daemon: {...}}; one job when given."""
    jobs = [find_job(ctx, args["job"])] if args.get("job") else ctx.records.store.jobs()
    return {
        "jobs": [job_view(ctx, j) for j in jobs],
        "daemon": {"pid": os.getpid(), "uptime": time.time() - ctx.started,
                   "limits": ctx.supervisor.enforcer.limits.to_dict(), "governor": ctx.supervisor.enforcer.summary(),
                   "max_concurrent": ctx.max_concurrent, **ctx.records.health()},
    }


@handler("history")
def history(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job, after?, limit?} -> {events: [{seq, t, kind, data}], state}: stored events after seq."""
    job = find_job(ctx, args["job"])
    ctx.records.bus.flush()
    store = ctx.records.store
    events = store.history(job.id, args.get("after", 0), args.get("limit", 1000))
    return {"events": fit_reply(events), "state": str(job.state), "last_seq": store.last_seq(job.id)}


REPLY_BUDGET = protocol.MAX_MESSAGE_BYTES // 2  # a page of history always fits the client's 1 MiB cap


def fit_reply(events: list[dict[str, Any]], budget: int = REPLY_BUDGET) -> list[dict[str, Any]]:
    """The longest prefix of ``events`` whose packed size fits ``budget`` (at least one event); the
    client asks again from the last one it got (the reply's ``last_seq`` says whether more exist)."""
    used = 0
    for i, event in enumerate(events):
        used += len(protocol.pack(event))
        if used > budget and i > 0:
            return events[:i]
    return events


@handler("pause")
def pause(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Pause a queued or running job (a running worker stops at its next step boundary; one still
    starting, or between two workers, as soon as it can)."""
    job = find_job(ctx, args["job"])
    live = job.state in (JobState.RUNNING, JobState.STARTING)
    if not (live and ctx.supervisor.pause(job.id)) and job.state != JobState.QUEUED:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} is {job.state}; only a queued or running job can be paused")
    if not ctx.records.transition(job.id, JobState.PAUSED, "user"):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} cannot be paused now")
    return {"job": job.id, "state": "paused"}


@handler("resume")
def resume(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Resume a paused job: its worker continues, or it goes back to the queue."""
    job = find_job(ctx, args["job"])
    if job.state != JobState.PAUSED:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} is {job.state}, not paused")
    state = ctx.supervisor.resume(job.id) or JobState.QUEUED
    ctx.records.transition(job.id, state, None)
    return {"job": job.id, "state": str(state)}


@handler("cancel")
def cancel(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Cancel a job; a running worker checkpoints first (its files stay)."""
    job = find_job(ctx, args["job"])
    if job.state in FINISHED:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} is already {job.state}")
    if ctx.supervisor.cancel(job.id):
        return {"job": job.id, "state": "cancelling"}
    ctx.records.transition(job.id, JobState.CANCELLED, "user")
    return {"job": job.id, "state": "cancelled"}


@handler("checkpoint")
def checkpoint(ctx: Context, args: dict[str, Any], reply: Reply) -> Any:
    """Ask a running job to checkpoint now; answered with {step, path} once written."""
    job = find_job(ctx, args["job"])
    runner = ctx.supervisor.reachable(job.id)
    if runner is None:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} is {job.state}: no running worker to checkpoint")

    def done(msg: dict[str, Any]) -> None:
        if msg.get("ok"):
            reply.ok(msg["result"])
        else:
            reply.error(ErrorCode.UNAVAILABLE, str(msg.get("error")))

    if runner.request("checkpoint", {}, done) is None:
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"job {job.id}'s worker is not reachable right now")
    return DEFERRED


@handler("sample")
def sample(ctx: Context, args: dict[str, Any], reply: Reply) -> Any:
    """Generate from the job's live weights (streamed as partial replies), or, when no worker can
    answer, return {source: 'checkpoint', path} for the client to sample from the file."""
    job = find_job(ctx, args.get("job"))
    runner = ctx.supervisor.reachable(job.id)
    params = {k: v for k, v in args.items() if k != "job"}
    if runner is not None and runner.live.phase == "training" and runner.worker.alive():
        def done(msg: dict[str, Any]) -> None:
            if msg.get("ok"):
                reply.ok({**msg["result"], "job": job.id})
            else:
                reply.error(ErrorCode.INVALID, str(msg.get("error")))

        def chunk(msg: dict[str, Any]) -> None:
            reply.partial({"text": msg.get("text", "")})

        if runner.request("sample", params, done, chunk) is not None:
            return DEFERRED
    path = best_checkpoint(ctx.lay.job_dir(job.id), job.state)
    if path is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, no_checkpoint_message(job.id, job.state))
    return {"source": "checkpoint", "path": str(path), "job": job.id, "state": str(job.state)}


@handler("limits")
def limits(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Show or change the limits: {max_cpu?, max_memory?, on_battery?} -> the limits in force.

    A change applies to the daemon and to every job, overruling what a running job set for itself."""
    enforcer = ctx.supervisor.enforcer
    try:
        new = enforcer.base.updated(args)
    except ConfigError as e:
        raise ProtocolError(ErrorCode.INVALID, str(e)) from None
    if ctx.supervisor.set_limits(new, [k for k, v in args.items() if v is not None]):
        atomic_write_text(ctx.lay.home / "limits.json", json.dumps(new.to_dict()))
    return {**enforcer.limits.to_dict(), "levers": levers.describe(levers.here())}


@handler("shutdown")
def shutdown(ctx: Context, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Stop the daemon: running jobs checkpoint and go back to the queue."""
    ctx.stop()
    return {"stopping": True, "running": ctx.supervisor.jobs()}


HANDLERS: dict[str, Handler] = {**_OWN, **housekeeping.HANDLERS}
assert set(HANDLERS) == set(protocol.COMMANDS), "every protocol command needs a handler"
