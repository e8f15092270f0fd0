"""The control handlers against a fake job supervisor: a real job store (SQLite in a temporary
directory) and what each command asks of the supervisor, without a daemon, a socket or a worker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from macgpt import protocol
from macgpt.config.limits import Limits
from macgpt.paths import layout
from macgpt.protocol import ErrorCode, JobState, ProtocolError
from macgpt.supervisor import handlers
from macgpt.supervisor.bus import EventBus
from macgpt.supervisor.context import DEFERRED, Context, Reply
from macgpt.supervisor.records import JobRecords
from macgpt.supervisor.store import JobStore


class FakePub:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)


@dataclass
class FakeEnforcer:
    base: Limits = field(default_factory=Limits)
    limits: Limits = field(default_factory=Limits)

    def summary(self) -> dict[str, Any]:
        return {"message": "machine CPU 5%"}


@dataclass
class FakeLive:
    phase: str = "training"


class FakeWorker:
    def __init__(self, alive: bool = True) -> None:
        self.is_alive = alive

    def alive(self) -> bool:
        return self.is_alive


class FakeRunner:
    """What a handler may use of a runner: its live phase, whether its worker lives, requests."""

    def __init__(self, phase: str = "training", alive: bool = True, answers: bool = True) -> None:
        self.live, self.worker, self.answers = FakeLive(phase), FakeWorker(alive), answers
        self.requests: list[tuple[str, dict[str, Any], Any, Any]] = []

    def request(self, cmd: str, args: dict[str, Any] | None = None, on_reply: Any = None, on_chunk: Any = None) -> int | None:
        if not self.answers:
            return None
        self.requests.append((cmd, args or {}, on_reply, on_chunk))
        return len(self.requests)


class FakeSupervisor:
    """Records what the handlers ask; ``workers`` are the jobs with a runner (alive or not)."""

    def __init__(self) -> None:
        self.enforcer = FakeEnforcer()
        self.workers: dict[int, FakeRunner] = {}
        self.calls: list[tuple[str, Any]] = []
        self.resume_to: JobState | None = JobState.RUNNING

    def jobs(self) -> list[int]:
        return sorted(self.workers)

    def runner(self, job: int) -> FakeRunner | None:
        return self.workers.get(job)

    def reachable(self, job: int) -> FakeRunner | None:
        return self.workers.get(job)

    def live_view(self, job: int) -> dict[str, Any] | None:
        if job not in self.workers:
            return None
        return {"pid": 123, "step": 5, "loss": None, "steps_per_s": 2.0, "governor": "full speed"}

    def pause(self, job: int) -> bool:
        self.calls.append(("pause", job))
        return job in self.workers

    def resume(self, job: int) -> JobState | None:
        self.calls.append(("resume", job))
        return self.resume_to if job in self.workers else None

    def cancel(self, job: int) -> bool:
        self.calls.append(("cancel", job))
        return job in self.workers and self.workers[job].worker.alive()

    def set_limits(self, limits: Limits, overrule: list[str]) -> bool:
        self.calls.append(("set_limits", (limits, list(overrule))))
        changed = limits != self.enforcer.base or bool(overrule)
        self.enforcer.base = self.enforcer.limits = limits
        return changed


@pytest.fixture
def ctx(home: Path) -> Context:
    lay = layout(str(home))
    store = JobStore(lay.db)
    stopped: list[bool] = []
    c = Context(FakeSupervisor(), JobRecords(store, EventBus(store, FakePub()), lay), lay,  # type: ignore[arg-type]
                max_concurrent=2, counters=lambda: {"requests_served": 7, "bad_requests": 1},
                stop=lambda: stopped.append(True))
    c.stopped = stopped  # type: ignore[attr-defined]
    yield c
    store.close()


def job_in(ctx: Context, *states: JobState) -> int:
    """A tiny job taken through ``states`` (allowed transitions only)."""
    job = handlers.submit(ctx, {"config": "tiny"}, None)["job"]
    for state in states:
        ctx.records.store.transition(job, state)
    return job


def state_of(ctx: Context, job: int) -> JobState:
    record = ctx.records.get(job)
    assert record is not None
    return record.state


def refused(code: ErrorCode, f: Any, ctx: Context, args: dict[str, Any]) -> str:
    with pytest.raises(ProtocolError) as e:
        f(ctx, args, None)
    assert e.value.code == code, e.value.message
    return e.value.message


def test_pause_holds_a_queued_job_and_tells_a_running_worker(ctx: Context) -> None:
    queued = job_in(ctx)
    assert handlers.pause(ctx, {"job": queued}, None) == {"job": queued, "state": "paused"}
    assert state_of(ctx, queued) == JobState.PAUSED and ctx.records.get(queued).reason == "user"
    running = job_in(ctx, JobState.STARTING, JobState.RUNNING)
    ctx.supervisor.workers[running] = FakeRunner()
    assert handlers.pause(ctx, {"job": running}, None)["state"] == "paused"
    assert ("pause", running) in ctx.supervisor.calls and state_of(ctx, running) == JobState.PAUSED


def test_pause_is_refused_without_a_worker_to_tell_or_once_finished(ctx: Context) -> None:
    orphan = job_in(ctx, JobState.STARTING, JobState.RUNNING)  # running, but no worker here
    assert "only a queued or running job" in refused(ErrorCode.CONFLICT, handlers.pause, ctx, {"job": orphan})
    done = job_in(ctx, JobState.STARTING, JobState.COMPLETED)
    refused(ErrorCode.CONFLICT, handlers.pause, ctx, {"job": done})
    assert state_of(ctx, orphan) == JobState.RUNNING and state_of(ctx, done) == JobState.COMPLETED
    refused(ErrorCode.NOT_FOUND, handlers.pause, ctx, {"job": 999})


def test_resume_continues_a_live_worker_or_requeues(ctx: Context) -> None:
    live = job_in(ctx, JobState.STARTING, JobState.RUNNING, JobState.PAUSED)
    ctx.supervisor.workers[live] = FakeRunner()
    assert handlers.resume(ctx, {"job": live}, None) == {"job": live, "state": "running"}
    assert state_of(ctx, live) == JobState.RUNNING
    setting_up = job_in(ctx, JobState.STARTING, JobState.PAUSED)
    ctx.supervisor.workers[setting_up] = FakeRunner(phase="setup")
    ctx.supervisor.resume_to = JobState.STARTING  # a worker still setting up is not "running" yet
    assert handlers.resume(ctx, {"job": setting_up}, None)["state"] == "starting"
    assert state_of(ctx, setting_up) == JobState.STARTING
    gone = job_in(ctx, JobState.PAUSED)
    assert handlers.resume(ctx, {"job": gone}, None)["state"] == "queued" and state_of(ctx, gone) == JobState.QUEUED
    assert "not paused" in refused(ErrorCode.CONFLICT, handlers.resume, ctx, {"job": gone})


def test_cancel_now_without_a_worker_after_its_checkpoint_with_one(ctx: Context) -> None:
    queued = job_in(ctx)
    assert handlers.cancel(ctx, {"job": queued}, None)["state"] == "cancelled"
    assert state_of(ctx, queued) == JobState.CANCELLED and ctx.records.get(queued).reason == "user"
    running = job_in(ctx, JobState.STARTING, JobState.RUNNING)
    ctx.supervisor.workers[running] = FakeRunner()
    assert handlers.cancel(ctx, {"job": running}, None) == {"job": running, "state": "cancelling"}
    assert state_of(ctx, running) == JobState.RUNNING  # the supervisor's verdict moves it, later
    assert "already cancelled" in refused(ErrorCode.CONFLICT, handlers.cancel, ctx, {"job": queued})
    assert ("cancel", queued) in ctx.supervisor.calls and ("cancel", running) in ctx.supervisor.calls


def test_limits_overrule_what_jobs_set_and_are_saved(ctx: Context) -> None:
    r = handlers.limits(ctx, {"max_cpu": 40.0, "on_battery": None}, None)
    assert r["max_cpu"] == 40.0 and isinstance(r["levers"], list)
    name, (limits, keys) = ctx.supervisor.calls[-1]
    assert name == "set_limits" and limits.max_cpu == 40.0 and keys == ["max_cpu"]
    assert json.loads((ctx.lay.home / "limits.json").read_text())["max_cpu"] == 40.0
    (ctx.lay.home / "limits.json").unlink()
    handlers.limits(ctx, {}, None)  # a look changes nothing and writes nothing
    assert not (ctx.lay.home / "limits.json").exists()
    assert "hard-memory" in refused(ErrorCode.INVALID, handlers.limits, ctx, {"max_memory": 90.0, "hard_memory": 80.0})


def test_checkpoint_is_deferred_to_a_reachable_worker(ctx: Context) -> None:
    job = job_in(ctx, JobState.STARTING, JobState.RUNNING)
    assert "no running worker" in refused(ErrorCode.CONFLICT, handlers.checkpoint, ctx, {"job": job})
    ctx.supervisor.workers[job] = FakeRunner(answers=False)
    refused(ErrorCode.UNAVAILABLE, handlers.checkpoint, ctx, {"job": job})
    runner = ctx.supervisor.workers[job] = FakeRunner()
    sent: list[bytes] = []
    assert handlers.checkpoint(ctx, {"job": job}, Reply(sent.append, 9)) is DEFERRED
    cmd, _args, on_reply, _ = runner.requests[-1]
    assert cmd == "checkpoint" and not sent
    on_reply({"ok": True, "result": {"step": 40, "path": "ckpt-00000040.pt"}})
    on_reply({"ok": False, "error": "disk full"})
    first, second = (protocol.unpack(m) for m in sent)
    assert first == {"id": 9, "ok": True, "result": {"step": 40, "path": "ckpt-00000040.pt"}}
    assert second["error"]["code"] == "unavailable" and second["error"]["message"] == "disk full"


def test_sample_streams_from_a_training_worker_else_points_at_a_checkpoint(ctx: Context) -> None:
    job = job_in(ctx, JobState.STARTING, JobState.RUNNING)
    args = {"job": job, "prompt": "你好", "max_new_tokens": 8}
    refused(ErrorCode.NOT_FOUND, handlers.sample, ctx, args)  # no worker, no file yet
    job_dir = ctx.lay.job_dir(job)
    job_dir.mkdir(parents=True)
    (job_dir / "ckpt-00000010.pt").write_bytes(b"x")
    r = handlers.sample(ctx, args, None)
    assert r["source"] == "checkpoint" and r["path"].endswith("ckpt-00000010.pt") and r["state"] == "running"
    ctx.supervisor.workers[job] = FakeRunner(phase="setup")  # not training yet: the file still
    assert handlers.sample(ctx, args, None)["source"] == "checkpoint"
    runner = ctx.supervisor.workers[job] = FakeRunner()
    sent: list[bytes] = []
    assert handlers.sample(ctx, args, Reply(sent.append, 3)) is DEFERRED
    cmd, params, on_reply, on_chunk = runner.requests[-1]
    assert cmd == "sample" and params == {"prompt": "你好", "max_new_tokens": 8}
    on_chunk({"text": "好"})
    on_reply({"ok": True, "result": {"text": "你好好"}})
    chunk, done = (protocol.unpack(m) for m in sent)
    assert chunk["more"] is True and chunk["result"] == {"text": "好"}
    assert done["result"] == {"text": "你好好", "job": job}


def test_status_merges_a_live_worker_into_the_stored_job(ctx: Context) -> None:
    job = job_in(ctx, JobState.STARTING, JobState.RUNNING)
    ctx.records.store.update(job, step=9, loss=2.5)
    other = job_in(ctx)
    ctx.supervisor.workers[job] = FakeRunner()
    r = handlers.status(ctx, {}, None)
    views = {j["id"]: j for j in r["jobs"]}
    assert views[job]["step"] == 9 and views[job]["loss"] == 2.5  # the stored step is newer, the live loss unknown
    assert views[job]["pid"] == 123 and views[job]["governor"] == "full speed"
    assert views[other]["pid"] is None and views[other]["state"] == "queued"
    assert r["daemon"]["max_concurrent"] == 2 and r["daemon"]["db_errors"] == 0
    protocol.unpack(protocol.pack(r))  # what the wire carries


def test_shutdown_asks_the_daemon_to_stop_and_names_what_runs(ctx: Context) -> None:
    job = job_in(ctx, JobState.STARTING, JobState.RUNNING)
    ctx.supervisor.workers[job] = FakeRunner()
    assert handlers.shutdown(ctx, {}, None) == {"stopping": True, "running": [job]}
    assert ctx.stopped == [True]  # type: ignore[attr-defined]
    info = handlers.daemon_info(ctx, {}, None)
    assert info["jobs_running"] == [job] and info["requests_served"] == 7 and info["max_concurrent"] == 2


def test_every_protocol_command_has_a_handler_and_dispatch_reaches_it(ctx: Context) -> None:
    assert set(handlers.HANDLERS) == set(protocol.COMMANDS)
    assert handlers.dispatch(ctx, "ping", {}, None)["pong"] is True
