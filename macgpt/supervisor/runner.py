"""One job's worker under supervision: start it, track what it reports, send it commands, stop it,
and say how it ended (``protocol.Ended``).

The job supervisor (``lifecycle.py``) calls ``on_event`` for each channel message and ``tick``
regularly; ``tick`` reaps the process and escalates a stop that the worker does not honour
(message, then SIGTERM, then SIGKILL). What the end means for the job is the supervisor's call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from macgpt.config.estimate import RUNTIME_BYTES, estimate
from macgpt.config.job import JobSpec
from macgpt.protocol import WORKER_PROGRESS_EVENTS, Ended, StopReason, WorkerExit
from macgpt.supervisor import launch
from macgpt.supervisor.channel import WorkerChannel
from macgpt.supervisor.workers import FrozenRegistry, WorkerProcess

Emit = Callable[[str, dict[str, Any]], None]
ReplyCallback = Callable[[dict[str, Any]], None]

STOP_MESSAGE_GRACE = 10.0  # seconds for a stop command before SIGTERM
STOP_SIGNAL_GRACE = 20.0  # seconds after SIGTERM before SIGKILL


@dataclass
class Live:
    """What the supervisor knows of the current worker (reset at each start)."""

    pid: int | None = None
    connected: bool = False
    phase: str = "spawned"
    step: int = 0
    max_steps: int = 0
    loss: float | None = None
    avg_loss: float | None = None
    eval_loss: float | None = None
    steps_per_s: float | None = None
    tokens_per_s: float | None = None
    threads: int | None = None
    batch_size: int | None = None
    micro_batch: int | None = None
    rss: int | None = None
    peak_rss: int | None = None
    paused: bool = False
    last_progress: float = 0.0  # monotonic time the step counter last advanced
    last_message: float = 0.0
    checkpoint: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    stopped_event: dict[str, Any] | None = None
    setup_marks: int = 0  # progress of any kind but steps (set-up, preparation, evaluation, sampling)
    preparing: dict[str, Any] | None = None  # the last "progress" event before training started
    warnings: list[str] = field(default_factory=list)


class JobRunner:
    def __init__(
        self,
        job_id: int,
        job_dir: Path,
        channel: WorkerChannel,
        emit: Emit,
        frozen: FrozenRegistry,
        cache_dir: Path | None = None,
        priority: str = "idle",
        argv: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        spec: JobSpec | None = None,
    ) -> None:
        self.job_id = job_id
        self.spec = spec
        self.own_limits = dict(spec.own_limits) if spec else {}  # what this job set at submit
        self.spec_batch = spec.train.batch_size if spec else 1
        self.spec_threads = spec.train.threads if spec else 0  # > 0: pinned by the user, never raised
        self.spec_nproc = spec.train.nproc if spec else 1  # ranks on this machine: one thread each at least
        self.expected_rss = launch.expected_rss(spec, estimate, RUNTIME_BYTES)
        self.user_paused = False
        self.job_dir = Path(job_dir)
        self.channel = channel
        self.emit = emit
        self.clock = clock
        self.worker = WorkerProcess(job_id, job_dir, channel.endpoint, cache_dir, frozen, priority, argv,
                                    *launch.for_spec(spec))
        self.live = Live()
        self.pending: dict[int, tuple[ReplyCallback, ReplyCallback | None]] = {}
        self.stop_reason: StopReason | None = None
        self._stop_at: float | None = None
        self._signalled = 0
        self.exit_code: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.live = Live(last_progress=self.clock(), last_message=self.clock())
        self.stop_reason, self._stop_at, self._signalled, self.exit_code = None, None, 0, None
        self.worker.start()
        self.live.pid = self.worker.pid
        self.emit("spawned", {"pid": self.worker.pid})

    def stop(self, reason: StopReason) -> None:
        """Ask the worker to checkpoint and exit; escalated by ``tick`` if it does not. The first
        reason given is the one that counts."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._stop_at = self.clock()
            self.worker.release()
            # Before training starts there is nothing to checkpoint and nobody reads commands:
            # a signal ends the preparation at once instead of after the message grace.
            if (not self.live.connected or self.live.phase != "training"
                    or self.request("stop", {"reason": str(reason)}) is None):
                self.worker.terminate()
                self._signalled = 1

    def kill(self, reason: StopReason) -> None:
        self.stop_reason = self.stop_reason or reason
        self.worker.kill()

    def tick(self) -> Ended | None:
        """Reap the worker: how it ended once it has exited, else None."""
        code = self.worker.poll()
        if code is None:
            self._escalate()
            return None
        self.exit_code = code
        self.worker.thaw()  # forget a stopped mark and the registry entry: the process is gone
        for callback, _ in self.pending.values():
            callback({"ok": False, "error": "the worker exited before answering"})
        self.pending.clear()
        failure = self.live.failure or {}
        if self.live.final is not None and code == WorkerExit.OK:
            return Ended.COMPLETED
        if code == WorkerExit.JOB_INVALID and failure and not failure.get("retry", True):
            return Ended.INVALID
        if code == WorkerExit.DISK and failure.get("cause") == "disk":
            return Ended.DISK
        if self.stop_reason is not None:
            return Ended.STOPPED
        return Ended.CRASHED

    def _escalate(self) -> None:
        if self._stop_at is None:
            return
        waited = self.clock() - self._stop_at
        if self._signalled == 0 and waited > STOP_MESSAGE_GRACE:
            self.worker.terminate()
            self._signalled = 1
        elif self._signalled == 1 and waited > STOP_MESSAGE_GRACE + STOP_SIGNAL_GRACE:
            self.worker.kill()
            self._signalled = 2

    # -- commands -----------------------------------------------------------------------------
    def request(
        self, cmd: str, args: dict[str, Any] | None = None,
        on_reply: ReplyCallback | None = None, on_chunk: ReplyCallback | None = None,
    ) -> int | None:
        if not self.live.connected or not self.worker.alive():
            return None
        rid = self.channel.send(self.worker.identity, cmd, args)
        if rid is not None:
            self.pending[rid] = (on_reply or (lambda _msg: None), on_chunk)
        return rid

    # -- events -------------------------------------------------------------------------------
    def on_event(self, identity: bytes, msg: dict[str, Any]) -> None:
        if self.worker.proc is None or identity != self.worker.identity:
            return  # a message from a previous incarnation
        live, kind = self.live, msg["kind"]
        now = self.clock()
        live.last_message = now
        if kind in WORKER_PROGRESS_EVENTS:
            live.setup_marks += 1
        if kind == "reply":
            callbacks = self.pending.pop(msg.get("rid"), None)
            if callbacks:
                callbacks[0](msg)
            return
        if kind == "sample_chunk":
            callbacks = self.pending.get(msg.get("rid"))
            if callbacks and callbacks[1]:
                callbacks[1](msg)
            return
        if kind == "hello":
            live.connected = True
            if self.user_paused:  # paused while it was starting: the pause could not be sent then
                self.request("pause", {"reason": "user"})
        step = msg.get("step")
        if isinstance(step, int) and step > live.step:
            live.step = step
            live.last_progress = now
        self._absorb(kind, msg)
        if kind != "heartbeat":
            self.emit(kind, {k: v for k, v in msg.items() if k not in ("kind", "job", "t")})

    def _absorb(self, kind: str, msg: dict[str, Any]) -> None:
        live = self.live
        if kind == "setup":
            live.phase = str(msg.get("phase", "setup"))
        elif kind == "progress" and live.phase != "training":
            live.preparing = {k: msg.get(k) for k in ("phase", "done", "total", "unit", "rate", "eta")}
        elif kind == "started":
            live.phase = "training"
            live.preparing = None
            live.step = msg["step"]
            live.last_progress = self.clock()
            live.max_steps = msg["max_steps"]
            live.threads, live.batch_size, live.micro_batch = msg["threads"], msg["batch_size"], msg["micro_batch"]
        elif kind == "metrics":
            for key in ("loss", "avg_loss", "steps_per_s", "tokens_per_s", "threads", "batch_size",
                        "micro_batch", "rss", "peak_rss", "max_steps"):
                setattr(live, key, msg.get(key))
        elif kind == "eval":
            live.eval_loss = msg.get("loss")
        elif kind == "checkpoint":
            live.checkpoint = {"step": msg["step"], "path": msg["path"], "time": time.time()}
        elif kind == "paused":
            live.paused = True
        elif kind == "resumed":
            live.paused = False
        elif kind == "completed":
            live.final = msg
            live.eval_loss = msg.get("eval_loss", live.eval_loss)
        elif kind == "stopped":
            live.stopped_event = msg
        elif kind == "failed":
            live.failure = msg
        elif kind == "warning":
            live.warnings = [*live.warnings[-4:], str(msg.get("message"))]
