"""``macgpt train``: one job supervised in the foreground, without the daemon.

The same worker process and the same supervision as under the daemon (priority, governor,
restarts), with events handed to a callback instead of the database. Ctrl+C asks the worker to
checkpoint and exit; a second Ctrl+C sends SIGTERM, a third SIGKILL.
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
from macgpt.supervisor.channel import WorkerChannel
from macgpt.supervisor.governance import Governance
from macgpt.supervisor.runner import JobRunner, Live
from macgpt.supervisor.workers import FrozenRegistry

OnEvent = Callable[[str, dict[str, Any]], None]


@dataclass
class Outcome:
    result: str  # completed | stopped | invalid | failed
    live: Live
    restarts: int
    seconds: float


def run(
    spec: JobSpec,
    job_dir: Path,
    lay: Layout,
    on_event: OnEvent,
    priority: str = "idle",
    argv: list[str] | None = None,
) -> Outcome:
    t0 = time.monotonic()
    job_dir.mkdir(parents=True, exist_ok=True)
    spec.save(job_dir / "job.json")
    ctx = zmq.Context.instance()
    sock_path = lay.runtime / f"fg-{os.getpid()}.sock"
    channel = WorkerChannel(ctx, f"ipc://{sock_path}")
    frozen = FrozenRegistry(lay.runtime / f"fg-{os.getpid()}-stopped.json")
    frozen.guard()
    runner = JobRunner(0, job_dir, channel, on_event, frozen, lay.tokenizer_cache, priority, argv, spec=spec)
    governance = Governance(spec.limits, on_event)
    interrupts: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        interrupts.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    poller = zmq.Poller()
    poller.register(channel.sock, zmq.POLLIN)
    handled = 0
    restart_at: float | None = None
    waiting_for_memory = False
    try:
        runner.start()
        while True:
            if poller.poll(governance.wait_ms()):
                for ident, msg in channel.receive():
                    runner.on_event(ident, msg)
            if len(interrupts) > handled:
                handled = len(interrupts)
                if restart_at is not None:  # nothing runs: just leave
                    return Outcome("stopped", runner.live, governance.restarts, time.monotonic() - t0)
                if handled == 1:
                    on_event("interrupt", {"message": "stopping: saving a checkpoint (Ctrl+C again to force)"})
                    runner.stop("interrupted")
                elif handled == 2:
                    runner.worker.terminate()
                else:
                    runner.worker.kill()
            if restart_at is not None:
                if time.monotonic() >= restart_at and (not waiting_for_memory or governance.memory_back(runner.job_id)):
                    restart_at = None
                    runner.start()
                else:
                    governance.tick([])  # keep reading the machine while nothing runs
                continue
            governance.tick([runner])
            if runner.worker.poll() is not None:
                _drain(channel, poller, runner)
            ended = runner.tick()  # reaps an exited worker, escalates an ignored stop
            if ended is not None:
                decision = governance.after_exit(runner, ended)
                if decision.kind in ("restart", "wait"):
                    waiting_for_memory = decision.kind == "wait"
                    if waiting_for_memory:
                        on_event("governor", {"state": "memory", "message": "waiting for memory to come back"})
                    restart_at = time.monotonic() + decision.delay
                    continue
                if decision.kind == "fail":
                    runner.live.failure = {"message": decision.reason}
                    return Outcome("failed", runner.live, governance.restarts, time.monotonic() - t0)
                result = "failed" if ended == "crashed" else ended
                return Outcome(result, runner.live, governance.restarts, time.monotonic() - t0)
    finally:
        if runner.worker.alive():
            runner.worker.shutdown(grace=30.0)
        governance.close()
        for s, h in old.items():
            signal.signal(s, h)
        channel.close()
        sock_path.unlink(missing_ok=True)
        if frozen.path is not None and not frozen.pids:
            frozen.path.unlink(missing_ok=True)


def _drain(channel: WorkerChannel, poller: zmq.Poller, runner: JobRunner) -> None:
    """Read what an exited worker sent before it went (its socket lingers to deliver)."""
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline and poller.poll(50):
        for ident, msg in channel.receive():
            runner.on_event(ident, msg)
