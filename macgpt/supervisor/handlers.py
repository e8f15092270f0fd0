"""The daemon's control commands. Each handler's docstring is its spec; arguments arrive
already validated by ``protocol.parse_request``. A handler returns its result, raises
``ProtocolError``, or returns ``DEFERRED`` and answers later through its ``Reply``."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from macgpt import __version__, protocol
from macgpt.config.job import build_spec
from macgpt.config.schema import ConfigError
from macgpt.data.sources import Manifest, changed_files
from macgpt.errors import DataError
from macgpt.fsutil import atomic_write_text
from macgpt.jobfiles import best_checkpoint, no_checkpoint_message
from macgpt.protocol import FINISHED, ErrorCode, JobState, ProtocolError
from macgpt.supervisor import levers
from macgpt.supervisor.notify import check_hooks

if TYPE_CHECKING:
    from macgpt.supervisor.daemon import Daemon

DEFERRED = object()


class Reply:
    """Where the answer to one request goes (possibly later, possibly in pieces)."""

    def __init__(self, daemon: Daemon, identity: bytes, req_id: Any, envelope: list[bytes]) -> None:
        self.daemon, self.identity, self.req_id, self.envelope = daemon, identity, req_id, envelope

    def ok(self, result: Any) -> None:
        self.daemon._send(self.identity, self.envelope, protocol.reply_ok(self.req_id, result))

    def partial(self, result: Any) -> None:
        self.daemon._send(self.identity, self.envelope, protocol.reply_ok(self.req_id, result, more=True))

    def error(self, code: ErrorCode, message: str) -> None:
        self.daemon._send(self.identity, self.envelope, protocol.reply_error(self.req_id, code, message))


Handler = Callable[["Daemon", dict[str, Any], Reply], Any]
HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(f: Handler) -> Handler:
        HANDLERS[name] = f
        return f

    return register


def dispatch(daemon: Daemon, cmd: str, args: dict[str, Any], reply: Reply) -> Any:
    return HANDLERS[cmd](daemon, args, reply)


def _job(daemon: Daemon, job_id: int | None) -> dict[str, Any]:
    if job_id is None:
        job_id = daemon.store.latest_id()
        if job_id is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "there are no jobs yet; submit one with `macgpt submit tiny`")
    job = daemon.store.get(job_id)
    if job is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"job {job_id} does not exist")
    return job


@handler("ping")
def ping(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Liveness: {pong, version, protocol, pid}."""
    return {"pong": True, "version": __version__, "protocol": protocol.PROTOCOL_VERSION, "pid": os.getpid()}


@handler("daemon_info")
def daemon_info(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """The daemon itself: pid, home, socket, uptime, limits, requests served, own CPU and memory."""
    import psutil

    me = psutil.Process()
    cpu = me.cpu_times()
    return {
        "pid": os.getpid(), "version": __version__, "home": str(daemon.lay.home),
        "socket": daemon.lay.control, "events": daemon.lay.events, "log": str(daemon.lay.log_file),
        "uptime": time.time() - daemon.started, "limits": daemon.governance.limits.to_dict(),
        "max_concurrent": daemon.max_concurrent, "jobs_running": sorted(daemon.runners),
        "requests_served": daemon.requests_served, "bad_requests": daemon.bad_requests,
        "rss": me.memory_info().rss, "cpu_seconds": cpu.user + cpu.system,
    }


@handler("submit")
def submit(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Queue a job: {config, overrides?, data?, eval_data?, name?, limits?, manifest?, after?} ->
    {job, name, position}. The client validated the data files; here only a ``stat`` of each checks
    they are unchanged (the daemon's loop never reads training data). Nothing is queued when anything
    is wrong."""
    try:
        own = args.get("limits") or {}
        limits = daemon.governance.base.updated(own)
        spec = build_spec(args["config"], args.get("overrides") or {}, args.get("data") or [],
                          args.get("eval_data") or [], args.get("name") or "", limits, own)
        spec = dataclasses.replace(spec, manifest=checked_manifest(spec, args.get("manifest") or {}))
        hooks = check_hooks(args["hooks"]) if "hooks" in args else None
    except (ConfigError, DataError, KeyError, TypeError, ValueError) as e:
        raise ProtocolError(ErrorCode.INVALID, str(e)) from None
    after = housekeeping.check_after(daemon, args.get("after") or [])
    stored = {**spec.to_dict(), "hooks": hooks} if hooks else spec.to_dict()
    job_id = daemon.store.create(spec.name, spec.config, stored, spec.train.steps)
    daemon.store.set_after(job_id, after)
    daemon._job_event(job_id, "state", {"state": "queued", "reason": None, "config": spec.config})
    position = len(daemon.store.queued())
    return {"job": job_id, "name": spec.name, "config": spec.config, "position": position,
            "job_dir": str(daemon.lay.job_dir(job_id))}


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


def job_view(daemon: Daemon, job: dict[str, Any]) -> dict[str, Any]:
    """A job row as `status` shows it, live numbers merged in when a worker runs."""
    view = {k: job[k] for k in ("id", "name", "config", "state", "reason", "step", "max_steps", "loss",
                                "eval_loss", "checkpoint", "checkpoint_step", "checkpoint_time",
                                "final_model", "error", "warning", "restarts", "created", "started", "finished")}
    view["max_steps"] = job["max_steps"]
    view["checkpoint_age"] = time.time() - job["checkpoint_time"] if job["checkpoint_time"] else None
    view.update(pid=None, threads=None, batch_size=None, micro_batch=None, steps_per_s=None,
                tokens_per_s=None, cpu_percent=None, rss=None, governor=None)
    view["limits"] = json.loads(job["spec"]).get("limits")
    runner = daemon.runners.get(job["id"])
    if runner is not None and runner.worker.alive():
        live = runner.live
        view.update(pid=live.pid, step=max(live.step, job["step"]), loss=live.loss if live.loss is not None else job["loss"],
                    threads=live.threads, batch_size=live.batch_size, micro_batch=live.micro_batch,
                    steps_per_s=live.steps_per_s, tokens_per_s=live.tokens_per_s, rss=live.rss,
                    phase=live.phase, preparing=live.preparing)
        view.update(daemon.governance.view(job["id"], paused=runner.user_paused))
    return view


@handler("status")
def status(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job?} -> {jobs: [...], daemon: {...}}; one job when given."""
    jobs = [_job(daemon, args["job"])] if args.get("job") else daemon.store.jobs()
    return {
        "jobs": [job_view(daemon, j) for j in jobs],
        "daemon": {"pid": os.getpid(), "uptime": time.time() - daemon.started,
                   "limits": daemon.governance.limits.to_dict(), "governor": daemon.governance.summary(),
                   "max_concurrent": daemon.max_concurrent, **daemon.database_view()},
    }


@handler("history")
def history(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job, after?, limit?} -> {events: [{seq, t, kind, data}], state}: stored events after seq."""
    job = _job(daemon, args["job"])
    daemon.bus.flush()
    events = daemon.store.history(job["id"], args.get("after", 0), args.get("limit", 1000))
    return {"events": fit_reply(events), "state": job["state"], "last_seq": daemon.store.last_seq(job["id"])}


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
def pause(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Pause a queued or running job (a running worker stops at its next step boundary)."""
    job = _job(daemon, args["job"])
    runner = daemon.runners.get(job["id"])
    if job["state"] in (JobState.RUNNING, JobState.STARTING) and runner is not None:
        runner.user_paused = True
        runner.request("pause", {"reason": "user"})
    elif job["state"] != JobState.QUEUED:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} is {job['state']}; only a queued or running job can be paused")
    if not daemon._transition(job["id"], JobState.PAUSED, "user"):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} cannot be paused now")
    return {"job": job["id"], "state": "paused"}


@handler("resume")
def resume(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Resume a paused job: its worker continues, or it goes back to the queue."""
    job = _job(daemon, args["job"])
    if job["state"] != JobState.PAUSED:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} is {job['state']}, not paused")
    runner = daemon.runners.get(job["id"])
    if runner is not None and runner.worker.alive():
        runner.user_paused = False
        runner.request("resume")
        daemon._transition(job["id"], JobState.RUNNING, None)
        return {"job": job["id"], "state": "running"}
    daemon._transition(job["id"], JobState.QUEUED, None)
    return {"job": job["id"], "state": "queued"}


@handler("cancel")
def cancel(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Cancel a job; a running worker checkpoints first (its files stay)."""
    job = _job(daemon, args["job"])
    if job["state"] in FINISHED:
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} is already {job['state']}")
    runner = daemon.runners.get(job["id"])
    if runner is not None:
        daemon.restart_at.pop(job["id"], None)
        if runner.worker.alive():
            runner.stop("cancel")
            return {"job": job["id"], "state": "cancelling"}
        daemon.runners.pop(job["id"], None)
    daemon.governance.forget(job["id"])  # between two workers, or evicted for memory: never comes back
    daemon._transition(job["id"], JobState.CANCELLED, "user")
    return {"job": job["id"], "state": "cancelled"}


@handler("checkpoint")
def checkpoint(daemon: Daemon, args: dict[str, Any], reply: Reply) -> Any:
    """Ask a running job to checkpoint now; answered with {step, path} once written."""
    job = _job(daemon, args["job"])
    runner = daemon.runners.get(job["id"])
    if runner is None or not runner.live.connected or daemon.governance.halted(runner):
        raise ProtocolError(ErrorCode.CONFLICT, f"job {job['id']} is {job['state']}: no running worker to checkpoint")

    def done(msg: dict[str, Any]) -> None:
        if msg.get("ok"):
            reply.ok(msg["result"])
        else:
            reply.error(ErrorCode.UNAVAILABLE, str(msg.get("error")))

    if runner.request("checkpoint", {}, done) is None:
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"job {job['id']}'s worker is not reachable right now")
    return DEFERRED


@handler("sample")
def sample(daemon: Daemon, args: dict[str, Any], reply: Reply) -> Any:
    """Generate from the job's live weights (streamed as partial replies), or, when no worker can
    answer, return {source: 'checkpoint', path} for the client to sample from the file."""
    job = _job(daemon, args.get("job"))
    runner = daemon.runners.get(job["id"])
    params = {k: v for k, v in args.items() if k != "job"}
    if (runner is not None and runner.live.connected and runner.live.phase == "training"
            and not daemon.governance.halted(runner) and runner.worker.alive()):
        def done(msg: dict[str, Any]) -> None:
            if msg.get("ok"):
                reply.ok({**msg["result"], "job": job["id"]})
            else:
                reply.error(ErrorCode.INVALID, str(msg.get("error")))

        def chunk(msg: dict[str, Any]) -> None:
            reply.partial({"text": msg.get("text", "")})

        if runner.request("sample", params, done, chunk) is not None:
            return DEFERRED
    path = best_checkpoint(daemon.lay.job_dir(job["id"]), job["state"])
    if path is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, no_checkpoint_message(job["id"], job["state"]))
    return {"source": "checkpoint", "path": str(path), "job": job["id"], "state": job["state"]}


@handler("limits")
def limits(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Show or change the limits: {max_cpu?, max_memory?, on_battery?} -> the limits in force.

    A change applies to the daemon and to every job, overruling what a running job set for itself."""
    try:
        new = daemon.governance.base.updated(args)
    except ConfigError as e:
        raise ProtocolError(ErrorCode.INVALID, str(e)) from None
    changed = [k for k, v in args.items() if v is not None]
    for runner in daemon.runners.values():
        for key in changed:
            runner.own_limits.pop(key, None)
    if new != daemon.governance.base or changed:
        daemon.governance.set_limits(new, daemon.runners.values())
        atomic_write_text(daemon.lay.home / "limits.json", json.dumps(new.to_dict()))
    return {**daemon.governance.limits.to_dict(), "levers": levers.describe(levers.here())}


@handler("shutdown")
def shutdown(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Stop the daemon: running jobs checkpoint and go back to the queue."""
    daemon.stopping = True
    return {"stopping": True, "running": sorted(daemon.runners)}


from macgpt.supervisor import housekeeping  # noqa: E402

HANDLERS.update(housekeeping.HANDLERS)

assert set(HANDLERS) == set(protocol.COMMANDS), "every protocol command needs a handler"
