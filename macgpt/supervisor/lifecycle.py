"""The job supervisor: the one owner of the workers of the jobs being trained.

It holds each job's runner, the restart timers and the enforcer (the governor applied), offers the
commands that act on a job's worker (start, pause, resume, cancel, stop all), and each turn of its
owner's loop ``tick`` reaps the workers that ended and says what that means for their jobs, as
typed ``Verdict``s. Every decision about a worker's end is taken here, in ``_judge``; the daemon
only turns a verdict into a job state (``protocol.OUTCOME_STATES``) and `macgpt train` into an
exit code. It knows nothing of the database, and logs nothing (its owner does: `macgpt train`'s
stdout carries only events).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from macgpt.ckptformat import checkpoint_files
from macgpt.config.limits import Limits
from macgpt.protocol import OUTCOME_STATES, Ended, JobState, Outcome, StopReason
from macgpt.supervisor import launch
from macgpt.supervisor.channel import WorkerChannel
from macgpt.supervisor.enforcer import Enforcer
from macgpt.supervisor.restarts import RestartPolicy, next_restart
from macgpt.supervisor.runner import JobRunner, Live
from macgpt.supervisor.workers import FrozenRegistry

if TYPE_CHECKING:
    from macgpt.config.job import JobSpec

JobEmit = Callable[[int, str, dict[str, Any]], None]  # (job, kind, data): an event of or about a job
Emit = Callable[[str, dict[str, Any]], None]
DRAIN_SECONDS = 0.5  # at most this long reading what an exited worker sent before it went
DRAIN_POLL_MS = 30
INTERRUPTED = "daemon stopped; resumes at the next start"
WAITING_FOR_MEMORY = "memory: waiting for memory to come back"


@dataclass(frozen=True)
class Verdict:
    """What happened to a job's worker, and what it means for the job."""

    job: int
    outcome: Outcome
    reason: str | None = None  # what the job's state says
    error: str | None = None  # kept as the job's error
    delay: float = 0.0  # RESTARTING: seconds until the new worker
    live: Live | None = None  # the ended worker's last numbers (COMPLETED: with its final event)

    @property
    def state(self) -> JobState:
        return OUTCOME_STATES[self.outcome]


class JobSupervisor:
    def __init__(self, channel: WorkerChannel, frozen: FrozenRegistry, limits: Limits, emit: JobEmit,
                 governor_emit: Emit, cache_dir: Path | None = None, argv: list[str] | None = None,
                 priority: str = "idle", policy: RestartPolicy | None = None,
                 enforcer: Enforcer | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.channel = channel
        self.frozen = frozen
        self.emit = emit
        self.cache_dir, self.argv, self.priority = cache_dir, argv, priority
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.enforcer = enforcer or Enforcer(limits, governor_emit, clock=clock)
        self.runners: dict[int, JobRunner] = {}  # read them here; change them through the methods
        self.restarts = 0  # workers started again after a crash or a hang (`macgpt train`'s summary)
        self.stopping: StopReason | None = None  # set by stop_all: nothing restarts any more
        self._restart_at: dict[int, float] = {}
        self._crashes: dict[int, list[float]] = {}  # crash times since the job last saved progress
        self._saved_step: dict[int, int] = {}  # newest checkpoint step on disk at the last crash
        self._cancelled: set[int] = set()

    # -- what runs ----------------------------------------------------------------------------------
    def runner(self, job: int) -> JobRunner | None:
        return self.runners.get(job)

    def jobs(self) -> list[int]:
        """The jobs that hold a slot: a worker runs, or they wait between two workers."""
        return sorted(self.runners)

    def reachable(self, job: int) -> JobRunner | None:
        """The job's runner when its worker can take a request: connected, not held stopped."""
        runner = self.runners.get(job)
        if runner is None or not runner.live.connected or self.enforcer.halted(runner):
            return None
        return runner

    def live_view(self, job: int) -> dict[str, Any] | None:
        """A live worker's numbers and the governor's fields for `status`; None without one."""
        runner = self.runners.get(job)
        if runner is None or not runner.worker.alive():
            return None
        lv = runner.live
        view = {"pid": lv.pid, "step": lv.step, "loss": lv.loss, "threads": lv.threads, "batch_size": lv.batch_size,
                "micro_batch": lv.micro_batch, "steps_per_s": lv.steps_per_s, "tokens_per_s": lv.tokens_per_s,
                "rss": lv.rss, "phase": lv.phase, "preparing": lv.preparing}
        view.update(self.enforcer.view(job, paused=runner.user_paused))
        return view

    def wait_ms(self, idle_ms: int) -> int:
        """How long the owner's loop may sleep: until the next reading while anything is supervised."""
        busy = self.runners or self._restart_at or self.enforcer.evicted
        return self.enforcer.wait_ms() if busy else idle_ms

    def why_wait(self) -> str | None:
        """Why no other worker should start now (memory, CPU budget), or None."""
        return self.enforcer.why_wait()

    def memory_back(self) -> list[int]:
        """The evicted jobs that may start again now that memory stayed low (each said once)."""
        return [job for job in sorted(self.enforcer.evicted) if self.enforcer.memory_back(job)]

    # -- commands -----------------------------------------------------------------------------------
    def start(self, job: int, spec: JobSpec, job_dir: Path) -> bool:
        """Start a worker for ``job``; False (nothing done) while a worker of it still lives."""
        runner = self.runners.get(job)
        if runner is not None and runner.worker.alive():
            return False
        if runner is None:
            runner = JobRunner(job, job_dir, self.channel, lambda kind, data: self.emit(job, kind, data), self.frozen,
                               self.cache_dir, self.priority, self.argv, spec=spec)
            self.runners[job] = runner
        self._restart_at.pop(job, None)
        self._launch(runner)
        return True

    def _launch(self, runner: JobRunner) -> None:
        runner.job_dir.mkdir(parents=True, exist_ok=True)
        if runner.spec is not None:
            runner.spec.save(runner.job_dir / "job.json")
        limits = self.enforcer.limits_for(self._governed())  # those the next reading puts in force
        runner.worker.env = launch.worker_env(runner.spec, limits.max_cpu, os.environ)
        runner.start()

    def pause(self, job: int) -> bool:
        """The user pauses ``job``: its worker waits at its next step boundary (told when it says
        hello if still starting, or when it starts if between two workers). False: no worker."""
        runner = self.runners.get(job)
        if runner is None:
            return False
        runner.user_paused = True
        runner.request("pause", {"reason": "user"})
        return True

    def resume(self, job: int) -> JobState | None:
        """The user resumes ``job``: RUNNING when its worker trains on, STARTING while it sets up or
        waits to restart, None when it has no worker (the job goes back to the queue)."""
        runner = self.runners.get(job)
        if runner is None:
            return None
        if job in self._restart_at:  # a new worker comes at the end of the back-off, unpaused
            runner.user_paused = False
            return JobState.STARTING
        if not runner.worker.alive():
            return None
        runner.user_paused = False
        runner.request("resume")
        return JobState.RUNNING if runner.live.phase == "training" else JobState.STARTING

    def cancel(self, job: int) -> bool:
        """The user cancels ``job``. True: its worker is stopping (it checkpoints first) and a tick
        will say CANCELLED; False: nothing runs, the job is cancelled now."""
        self._restart_at.pop(job, None)
        runner = self.runners.get(job)
        if runner is not None and runner.worker.alive():
            self._cancelled.add(job)
            runner.stop(StopReason.CANCEL)
            return True
        if runner is not None:
            runner.tick()  # an exited worker not yet reaped: answer what waited for it
            self.enforcer.released(runner)
            del self.runners[job]
        self._forget(job)  # between two workers, or evicted for memory: it never comes back
        return False

    def set_limits(self, limits: Limits, overrule: Iterable[str]) -> bool:
        """New limits for the daemon and every job; what a running job set for itself at submit
        gives way for each key in ``overrule``. True when anything changed."""
        keys = list(overrule)
        for runner in self.runners.values():
            for key in keys:
                runner.own_limits.pop(key, None)
        changed = limits != self.enforcer.base or bool(keys)
        if changed:
            self.enforcer.set_limits(limits, self.runners.values())
        return changed

    def stop_all(self, reason: StopReason) -> None:
        """Stop every worker with a checkpoint (the daemon stops, or Ctrl+C). From now on nothing
        restarts and the governor decides nothing; a worker's end is INTERRUPTED unless it
        completed, failed or was cancelled first."""
        self.stopping = reason
        self._restart_at.clear()
        for runner in self.runners.values():
            runner.stop(reason)

    def signal_all(self, kill: bool = False) -> None:
        """Insist (a second or third Ctrl+C): SIGTERM, or SIGKILL, to every worker."""
        for runner in self.runners.values():
            if kill:
                runner.worker.kill()
            else:
                runner.worker.terminate()

    def kill_remaining(self) -> list[Verdict]:
        """The end of a stop: kill the workers that did not exit in time, and judge each."""
        verdicts = []
        for runner in list(self.runners.values()):
            runner.worker.kill()
            runner.worker.wait(5.0)
            verdicts.append(self._ended(runner, runner.tick() or Ended.STOPPED))
        return verdicts

    def close(self) -> None:
        self.enforcer.close()

    # -- the owner's loop -----------------------------------------------------------------------------
    def serve_channel(self) -> None:
        """Hand every waiting worker message to its job's runner."""
        for identity, msg in self.channel.receive():
            job = msg.get("job")
            runner = self.runners.get(job) if isinstance(job, int) else None
            if runner is not None:
                runner.on_event(identity, msg)

    def _drain(self) -> None:
        """Read what an exited worker sent before it went (its socket lingers to deliver)."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and self.channel.sock.poll(DRAIN_POLL_MS, zmq.POLLIN):
            self.serve_channel()

    def tick(self) -> list[Verdict]:
        """Restart what is due, reap the workers that exited (escalating ignored stops), then let
        the governor read and act; returns what happened, in order."""
        verdicts = self._restart_due() if self.stopping is None else []
        for job, runner in list(self.runners.items()):
            if job in self._restart_at:
                continue
            if runner.worker.poll() is not None:
                self._drain()
            ended = runner.tick()
            if ended is not None:
                verdicts.append(self._ended(runner, ended))
        if self.stopping is None:
            self.enforcer.tick(self._governed())
        return verdicts

    def _governed(self) -> list[JobRunner]:
        """The runners the enforcer governs: all but those waiting out a back-off."""
        return [r for j, r in self.runners.items() if j not in self._restart_at]

    def _restart_due(self) -> list[Verdict]:
        now, verdicts = self.clock(), []
        for job, at in list(self._restart_at.items()):
            if now >= at:
                del self._restart_at[job]
                runner = self.runners[job]
                self._launch(runner)
                if not runner.user_paused:  # paused meanwhile: the job stays paused, its worker waits
                    verdicts.append(Verdict(job, Outcome.RESTARTED, "restart"))
        return verdicts

    def _ended(self, runner: JobRunner, ended: Ended) -> Verdict:
        verdict = self._judge(runner, ended)
        if verdict.outcome is Outcome.RESTARTING:
            self._restart_at[runner.job_id] = self.clock() + verdict.delay
        else:
            self.runners.pop(runner.job_id, None)
        return verdict

    # -- what a worker's end means -------------------------------------------------------------------
    def _judge(self, runner: JobRunner, ended: Ended) -> Verdict:
        """The one place that decides. What the worker itself said first (it completed, the job is
        invalid, the disk is full), then the user's cancel, the governor's verdict, a stop of the
        supervisor; then why the governor stopped it; a crash or a hang last."""
        job, why, live = runner.job_id, runner.stop_reason, runner.live
        self.enforcer.released(runner)
        final = self._final(job, ended, live) or self._given_up(job, live)
        if final is not None:
            self._forget(job)
            return final
        if why is StopReason.EVICT:
            self.enforcer.wait_for_memory(job)
            return Verdict(job, Outcome.WAITING_FOR_MEMORY, WAITING_FOR_MEMORY, live=live)
        if why is StopReason.MEMORY_KILL:  # not a crash: the governor restarts it smaller at once
            return Verdict(job, Outcome.RESTARTING, "restarting in 0s (memory-kill)", live=live)
        if ended is Ended.STOPPED and why is not StopReason.HANG:
            self._forget(job)
            return Verdict(job, Outcome.UNEXPECTED, f"the worker stopped unexpectedly ({why or ended})", live=live)
        return self._crashed(runner, why)

    def _final(self, job: int, ended: Ended, live: Live) -> Verdict | None:
        message = (live.failure or {}).get("message")
        if ended is Ended.COMPLETED:
            return Verdict(job, Outcome.COMPLETED, None, live=live)
        if ended is Ended.INVALID:
            return Verdict(job, Outcome.INVALID, message, error=message, live=live)
        if ended is Ended.DISK:
            return Verdict(job, Outcome.DISK_FULL, f"disk: {message}", error=message, live=live)
        if job in self._cancelled:
            return Verdict(job, Outcome.CANCELLED, "user", live=live)
        return None

    def _given_up(self, job: int, live: Live) -> Verdict | None:
        failed = self.enforcer.failure(job)
        if failed is not None:
            return Verdict(job, Outcome.GAVE_UP, failed, error=failed, live=live)
        if self.stopping is not None:
            return Verdict(job, Outcome.INTERRUPTED, INTERRUPTED, live=live)
        return None

    def _crashed(self, runner: JobRunner, why: StopReason | None) -> Verdict:
        """A crash or a hang: back at once the first time, then after a growing back-off; the job
        fails after too many in a row without a new checkpoint on disk."""
        job, now, live = runner.job_id, self.clock(), runner.live
        history = self._crashes.setdefault(job, [])
        newest = next((step for step, _ in checkpoint_files(runner.job_dir)), -1)  # even one whose event was lost
        if newest > self._saved_step.get(job, -1):
            history.clear()  # progress was saved since the last crash: not a crash loop
        self._saved_step[job] = newest
        history.append(now)
        policy = dataclasses.replace(self.policy, max_crashes=self.enforcer.limits.max_crashes)
        delay = next_restart(history, now, policy)
        last = (live.failure or {}).get("message") or (
            "it stopped making progress" if why is StopReason.HANG else f"exit code {runner.exit_code}")
        if delay is None:
            self.emit(job, "gave_up", {"job": job, "crashes": len(history), "last_error": last})
            self._forget(job)
            reason = f"crashed {len(history)} times: {last}"
            return Verdict(job, Outcome.GAVE_UP, reason, error=reason, live=live)
        self.restarts += 1
        self.emit(job, "restarting", {"job": job, "in_seconds": delay, "crashes": len(history), "last_error": last,
                                      "from_step": max(newest, 0)})  # the checkpoint the next worker finds
        how = "(hang)" if why is StopReason.HANG else "after a crash"
        return Verdict(job, Outcome.RESTARTING, f"restarting in {delay:.0f}s {how}", delay=delay, live=live)

    def _forget(self, job: int) -> None:
        """The job's worker will not come back: drop what was kept about it."""
        self._crashes.pop(job, None)
        self._saved_step.pop(job, None)
        self._cancelled.discard(job)
        self.enforcer.forget(job)
