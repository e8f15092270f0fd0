"""``macgpt train``: one job supervised in the foreground, without the daemon.

The same job supervisor as under the daemon (``lifecycle.py``: priority, governor, restarts), with
events handed to a callback instead of the database; this module only runs its loop and returns
the final verdict. Ctrl+C asks the worker to checkpoint and exit; a second Ctrl+C sends SIGTERM, a
third SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from macgpt.config.job import JobSpec
from macgpt.paths import Layout
from macgpt.protocol import Outcome, StopReason
from macgpt.supervisor.channel import WorkerChannel
from macgpt.supervisor.lifecycle import JobSupervisor, Verdict
from macgpt.supervisor.runner import Live
from macgpt.supervisor.workers import FrozenRegistry

OnEvent = Callable[[str, dict[str, Any]], None]
JOB = 0  # the one job of a foreground run
IDLE_POLL_MS = 250
GOING_ON = frozenset({Outcome.RESTARTING, Outcome.RESTARTED, Outcome.WAITING_FOR_MEMORY})


@dataclass
class TrainResult:
    outcome: Outcome
    live: Live
    restarts: int
    seconds: float
    error: str | None = None  # the verdict's error (a give-up's reason, an invalid job's message)


def run(
    spec: JobSpec,
    job_dir: Path,
    lay: Layout,
    on_event: OnEvent,
    priority: str = "idle",
    argv: list[str] | None = None,
) -> TrainResult:
    t0 = time.monotonic()
    sock_path = lay.runtime / f"fg-{os.getpid()}.sock"
    channel = WorkerChannel(zmq.Context.instance(), f"ipc://{sock_path}")
    frozen = FrozenRegistry(lay.runtime / f"fg-{os.getpid()}-stopped.json")
    frozen.guard()
    sv = JobSupervisor(channel, frozen, spec.limits, lambda _job, kind, data: on_event(kind, data), on_event,
                       cache_dir=lay.tokenizer_cache, argv=argv, priority=priority)
    interrupts: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        interrupts.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        sv.start(JOB, spec, job_dir)
        verdict = _supervise(sv, spec, job_dir, on_event, interrupts)
        return TrainResult(verdict.outcome, verdict.live or Live(), sv.restarts, time.monotonic() - t0, verdict.error)
    finally:
        for runner in sv.runners.values():
            if runner.worker.alive():
                runner.worker.shutdown(grace=30.0)
        sv.close()
        for s, h in old.items():
            signal.signal(s, h)
        channel.close()
        sock_path.unlink(missing_ok=True)
        if frozen.path is not None and not frozen.pids:
            frozen.path.unlink(missing_ok=True)


def _supervise(sv: JobSupervisor, spec: JobSpec, job_dir: Path, on_event: OnEvent, interrupts: list[int]) -> Verdict:
    """The loop: worker messages, Ctrl+C, the supervisor's turn, until a verdict ends the run."""
    poller = zmq.Poller()
    poller.register(sv.channel.sock, zmq.POLLIN)
    handled, last = 0, Live()
    while True:
        if poller.poll(sv.wait_ms(IDLE_POLL_MS)):
            sv.serve_channel()
        if len(interrupts) > handled:
            handled = len(interrupts)
            if not sv.runners:  # waiting for memory: nothing runs, just leave
                return Verdict(JOB, Outcome.INTERRUPTED, live=last)
            if handled == 1:
                on_event("interrupt", {"message": "stopping: saving a checkpoint (Ctrl+C again to force)"})
                sv.stop_all(StopReason.INTERRUPT)
            else:
                sv.signal_all(kill=handled > 2)
        for verdict in sv.tick():
            last = verdict.live or last
            if verdict.outcome not in GOING_ON:
                return verdict
            if verdict.outcome is Outcome.WAITING_FOR_MEMORY:
                on_event("governor", {"state": "memory", "message": "waiting for memory to come back"})
        if JOB in sv.memory_back():
            sv.start(JOB, spec, job_dir)
