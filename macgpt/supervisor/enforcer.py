"""The enforcer: the governor's policy applied to live workers (readings in, decisions out,
effects on processes).

A thin loop around the pure ``governor.decide``: it reads the machine (``Monitor``) about four
times a second, keeps the per-job state in step with what the workers report, and turns each
action into a command over the worker channel, a duty cycle, or a signal. It remembers what the
lifecycle must know when a worker it acted on exits: the jobs it failed, and those it evicted
until memory comes back. Owned by the job supervisor (``lifecycle.py``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from macgpt.config.limits import Limits, in_force
from macgpt.priority import lower
from macgpt.protocol import StopReason
from macgpt.supervisor import governor as g
from macgpt.supervisor.cpuquota import Quotas, open_root
from macgpt.supervisor.dutycycle import DutyCycler
from macgpt.supervisor.monitor import Monitor, Readings, own_cpu_seconds
from macgpt.supervisor.runner import JobRunner

Emit = Callable[[str, dict[str, Any]], None]
READING_INTERVAL = 0.25
PRIORITY_EVERY = 2.0  # seconds between re-applying idle priority to every worker thread and child


class Enforcer:
    def __init__(self, limits: Limits, emit: Emit, tuning: g.Tuning | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base = limits  # the daemon's (or the foreground run's) limits
        self.limits = limits  # those in force: base, tightened by what running jobs set for themselves
        self.emit = emit
        self.tuning = tuning or g.Tuning()
        self.clock = clock
        self.monitor = Monitor(clock)
        root, self.quota_how = open_root()
        self.cycler = DutyCycler(quotas=Quotas(root) if root else None)
        self.state = g.GovState()
        self.last: Readings | None = None
        self.failures: dict[int, str] = {}  # jobs the governor failed, and why
        self.evicted: set[int] = set()  # jobs stopped until memory comes back
        self._incarnation: dict[int, int] = {}  # job -> pid the knobs were last sent to
        self._next = 0.0
        self._next_priority = 0.0
        self._own_cpu = (clock(), own_cpu_seconds())

    # -- the loop -------------------------------------------------------------------------------
    def wait_ms(self) -> int:
        """How long the owner's loop may sleep before the next reading is due."""
        return max(1, min(int(READING_INTERVAL * 1000), int((self._next - self.clock()) * 1000) + 1))

    def tick(self, runners: list[JobRunner]) -> None:
        """Called every loop turn; reads and decides about four times a second."""
        now = self.clock()
        if now < self._next:
            return
        self._next = now + READING_INTERVAL
        live = {r.job_id: r for r in runners if r.worker.alive()}
        self._enforce(runners)
        if now >= self._next_priority:
            self._next_priority = now + PRIORITY_EVERY
            for r in live.values():
                for pid in (r.worker.pid, *self.monitor.descendants(r.worker.pid)):
                    lower(pid)
        self._sync(live)
        readings = self.monitor.read({j: r.worker.pid for j, r in live.items()})
        self.last = readings
        self.state, actions = g.decide(readings, self.limits, self.state, self.tuning)
        # What a note says is done must be done when it is read: levers first, notes after.
        for action in sorted(actions, key=lambda a: isinstance(a, g.Note)):
            self._apply(action, live)

    def _sync(self, live: dict[int, JobRunner]) -> None:
        """Bring the policy's per-job state in step with the workers (new ones, progress, phase).
        A job between two workers (restarting, waiting for memory) keeps its state: memory kills
        and the smaller batch carry over. ``forget`` drops it when the job ends."""
        jobs = {k: v for k, v in self.state.jobs.items() if k not in live}
        for job_id, runner in live.items():
            old = self.state.jobs.get(job_id)
            lv = runner.live
            if old is None:
                cpus = runner.spec_threads or os.cpu_count() or 1
                old = g.JobGov(job=job_id, max_threads=max(cpus, runner.spec_nproc), batch_size=runner.spec_batch,
                               expected_rss=runner.expected_rss, threads=cpus, micro_batch=runner.spec_batch,
                               min_threads=runner.spec_nproc)
            training = lv.phase == "training"
            j = dataclasses.replace(old, training=training, progress=lv.step + lv.setup_marks,
                                    user_paused=runner.user_paused)
            if training and self._incarnation.get(job_id) != runner.worker.pid:
                # a new worker: tell it the knobs in force (a restart after a memory kill starts smaller)
                self._incarnation[job_id] = runner.worker.pid
                j = dataclasses.replace(j, mem_paused=False, duty=1.0, mem=g.MemTrack(), demand=(), useful_threads=None)
                if lv.micro_batch is not None and j.micro_batch != lv.micro_batch:
                    runner.request("set_batch", {"micro_batch": j.micro_batch})
                if lv.threads is not None and j.threads != lv.threads:
                    runner.request("set_threads", {"threads": j.threads})
            jobs[job_id] = j
        self.state = dataclasses.replace(self.state, jobs=jobs)

    def _apply(self, a: g.Action, live: dict[int, JobRunner]) -> None:
        runner = live.get(a.job)
        if runner is None:
            return
        match a:
            case g.SetThreads(threads=n):
                runner.request("set_threads", {"threads": n})
            case g.SetBatch(micro_batch=m):
                runner.request("set_batch", {"micro_batch": m})
            case g.SetDuty(duty=d):
                gov = self.state.jobs.get(a.job)
                self.cycler.set(runner.worker, d, gov.threads if gov else None)
            case g.Pause(reason=why):
                runner.request("pause", {"reason": why})
            case g.Resume():
                runner.request("resume")
            case g.Evict():
                self.cycler.release(runner.worker)
                runner.stop(StopReason.EVICT)
            case g.Kill(kind=kind):
                self.cycler.release(runner.worker)
                runner.kill(StopReason.MEMORY_KILL if kind == "memory" else StopReason.HANG)
            case g.Fail(reason=why):
                self.failures[a.job] = why
                self.cycler.release(runner.worker)
                runner.kill(StopReason.GOVERNOR_FAIL)
            case g.Note(mode=mode, message=message, readings=readings):
                self.emit("governor", {"job": a.job, "state": mode, "message": message, "readings": readings})

    # -- after a worker exits ---------------------------------------------------------------------
    def released(self, runner: JobRunner) -> None:
        """A worker exited: no duty cycle holds it any more."""
        self.cycler.release(runner.worker)

    def failure(self, job: int) -> str | None:
        """Why the governor failed ``job`` (it killed the worker for it), or None."""
        return self.failures.get(job)

    def wait_for_memory(self, job: int) -> None:
        """``job`` was evicted: it may start again once memory stays low (``memory_back``)."""
        self.evicted.add(job)

    def forget(self, job: int) -> None:
        """The job ended for good: drop what the governor kept about it."""
        self.failures.pop(job, None)
        self.evicted.discard(job)
        self.state = dataclasses.replace(self.state, jobs={k: v for k, v in self.state.jobs.items() if k != job})

    # -- questions from the owner -------------------------------------------------------------------
    def why_wait(self) -> str | None:
        """Why no other worker should start now (memory over the limit, no CPU budget), or None."""
        r = self.last
        if r is None:
            return None
        if r.mem_percent >= self.limits.max_memory:
            return f"waiting: memory {r.mem_percent:.0f}% over the limit {self.limits.max_memory:g}%"
        max_cpu, battery = g.effective_max_cpu(r, self.limits)
        other = self.other_cpu()
        if max_cpu + self.tuning.tolerance >= 100.0:
            return None  # everything is granted: a worker at idle priority yields to the others
        if max_cpu - other < self.tuning.stop_below * 100 / r.ncpu:
            return f"waiting: {battery or f'other programs use {other:.0f}% CPU, limit {self.limits.max_cpu:g}%'}"
        return None

    def memory_back(self, job: int) -> bool:
        """An evicted job may come back: memory stayed under the give-back mark for the hold time."""
        if job not in self.evicted:
            return False
        since = self.state.low_memory_since
        if since is not None and self.clock() - since >= self.tuning.hold:
            self.evicted.discard(job)
            return True
        return False

    def halted(self, runner: JobRunner) -> bool:
        """Held stopped by the governor (not merely in the off part of a duty cycle)."""
        return self.cycler.duty(runner.worker) == 0.0

    def set_limits(self, limits: Limits, runners: Iterable[JobRunner] = ()) -> None:
        self.base = limits
        if not self._enforce(runners):
            self.emit("limits", {"limits": self.limits.to_dict()})

    def limits_for(self, runners: Iterable[JobRunner]) -> Limits:
        """The limits ``runners`` put in force: the base, with each field a job set for itself at
        its strictest."""
        return in_force(self.base, [r.own_limits for r in runners])

    def _enforce(self, runners: Iterable[JobRunner]) -> bool:
        """Recompute the limits in force; True (and an event) when they changed."""
        limits = self.limits_for(runners)
        if limits == self.limits:
            return False
        self.limits = limits
        self.emit("limits", {"limits": limits.to_dict()})
        return True

    def view(self, job_id: int, paused: bool = False) -> dict[str, Any]:
        """A running job's governor fields for `status`, consistent with each other: a job that is
        paused or held stopped shows no speed, and its reason says why it is not training."""
        j = self.state.jobs.get(job_id)
        w = self.last.workers.get(job_id) if self.last else None
        out = {"governor": j.message if j else None, "governor_state": j.mode if j else None,
               "duty": j.duty if j else None, "cpu_percent": w.cpu if w else None,
               "memory_bytes": (w.anon if w.anon is not None else w.rss) if w else None,
               "memory_baseline": (j.mem.baseline or None) if j else None}
        if j is None:
            return out
        j = dataclasses.replace(j, user_paused=j.user_paused or paused)  # the user's word counts at once
        if not j.training and not j.user_paused:
            out.update(governor="setting up: governed from the first step", governor_state="setup")
        if j.user_paused:
            out.update(governor="paused by you: not governed until resumed", governor_state="paused", duty=None)
        held = j.user_paused or j.mem_paused or (j.training and j.duty == 0.0)
        if held:
            out.update(steps_per_s=None, tokens_per_s=None)
        if not j.user_paused and (j.mem_paused or j.duty == 0.0) and j.training:
            out["reason"] = j.message
        return out

    def summary(self) -> dict[str, Any]:
        r = self.last
        if r is None:
            return {}
        now = self.clock()
        t0, c0 = self._own_cpu
        self._own_cpu = (now, own_cpu_seconds())
        own = 100.0 * (self._own_cpu[1] - c0) / max(1e-3, now - t0)
        other = self.other_cpu()
        return {"total_cpu": r.total_cpu, "other_cpu": other, "other_cpu_now": r.other_cpu, "ours_cpu": r.ours_cpu,
                "mem_percent": r.mem_percent, "swap_percent": r.swap_percent, "on_battery": r.on_battery,
                "battery_percent": r.battery_percent, "memory_pressure": r.memory_pressure,
                "cpu_pressure": r.cpu_pressure,
                "daemon_cpu_percent_of_core": own,
                "message": f"machine CPU {r.total_cpu:.0f}% (ours {r.ours_cpu:.0f}%; other programs up to "
                           f"{other:.0f}% over the last {self.tuning.hold:g}s), memory {r.mem_percent:.0f}%"}

    def other_cpu(self) -> float:
        """Other programs' CPU as the governor counts it (the highest over the hold time): the one
        figure that status, the governor's lines and the queue's reasons all show."""
        fallback = self.last.other_cpu if self.last else 0.0
        return max((o for _, o in self.state.other), default=fallback)

    def close(self) -> None:
        self.cycler.close()
