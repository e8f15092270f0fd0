"""The daemon's control commands. Each handler's docstring is its spec; arguments arrive
already validated by ``protocol.parse_request``. A handler returns its result, raises
``ProtocolError``, or returns ``DEFERRED`` and answers later through its ``Reply``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from macgpt import __version__, protocol
from macgpt.ckptformat import checkpoint_files
from macgpt.config.job import build_spec
from macgpt.config.schema import ConfigError
from macgpt.data import BUILTIN_TEST, BUILTIN_TRAIN, builtin_path
from macgpt.data.texts import DataError, load_corpus
from macgpt.fsutil import atomic_write_text
from macgpt.protocol import FINISHED, ErrorCode, JobState, ProtocolError
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
    """Queue a job: {config, overrides?, data?, eval_data?, name?, limits?} -> {job, name, position}.
    The data files are read and validated now; nothing is queued when anything is wrong."""
    try:
        own = args.get("limits") or {}
        limits = daemon.governance.base.updated(own)
        spec = build_spec(args["config"], args.get("overrides") or {}, args.get("data") or [],
                          args.get("eval_data") or [], args.get("name") or "", limits, own)
        load_corpus(list(spec.data) or [builtin_path(BUILTIN_TRAIN)])
        evals = list(spec.eval_data) or ([] if spec.data else [builtin_path(BUILTIN_TEST)])
        if evals:
            load_corpus(evals)
        hooks = check_hooks(args["hooks"]) if "hooks" in args else None
    except (ConfigError, DataError, ValueError) as e:
        raise ProtocolError(ErrorCode.INVALID, str(e)) from None
    stored = {**spec.to_dict(), "hooks": hooks} if hooks else spec.to_dict()
    job_id = daemon.store.create(spec.name, spec.config, stored, spec.train.steps)
    daemon._job_event(job_id, "state", {"state": "queued", "reason": None, "config": spec.config})
    position = len(daemon.store.queued())
    return {"job": job_id, "name": spec.name, "config": spec.config, "position": position,
            "job_dir": str(daemon.lay.job_dir(job_id))}


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
                    phase=live.phase)
        view.update(daemon.governance.view(job["id"]))
    return view


@handler("status")
def status(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job?} -> {jobs: [...], daemon: {...}}; one job when given."""
    jobs = [_job(daemon, args["job"])] if args.get("job") else daemon.store.jobs()
    return {
        "jobs": [job_view(daemon, j) for j in jobs],
        "daemon": {"pid": os.getpid(), "uptime": time.time() - daemon.started,
                   "limits": daemon.governance.limits.to_dict(), "governor": daemon.governance.summary(),
                   "max_concurrent": daemon.max_concurrent},
    }


@handler("history")
def history(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """{job, after?, limit?} -> {events: [{seq, t, kind, data}], state}: stored events after seq."""
    job = _job(daemon, args["job"])
    daemon.bus.flush()
    events = daemon.store.history(job["id"], args.get("after", 0), args.get("limit", 1000))
    return {"events": events, "state": job["state"], "last_seq": daemon.store.last_seq(job["id"])}


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
        daemon.governance.forget(job["id"])  # it was between two workers
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
    path = _best_checkpoint(daemon.lay.job_dir(job["id"]), job)
    if path is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"job {job['id']} ({job['state']}) has no checkpoint yet; try again in a moment")
    return {"source": "checkpoint", "path": str(path), "job": job["id"], "state": job["state"]}


def _best_checkpoint(job_dir: Path, job: dict[str, Any]) -> Path | None:
    final = job_dir / "final_model.pt"
    if job["state"] == JobState.COMPLETED and final.exists():
        return final
    ckpts = checkpoint_files(job_dir)
    if ckpts:
        return ckpts[0][1]
    return final if final.exists() else None


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
    return daemon.governance.limits.to_dict()


@handler("shutdown")
def shutdown(daemon: Daemon, args: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Stop the daemon: running jobs checkpoint and go back to the queue."""
    daemon.stopping = True
    return {"stopping": True, "running": sorted(daemon.runners)}


assert set(HANDLERS) == set(protocol.COMMANDS), "every protocol command needs a handler"
