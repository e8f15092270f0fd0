"""A worker process as the supervisor sees it: spawn, signal its process group, reap it.

Workers are spawned (never forked) into their own session, so SIGSTOP/SIGCONT/SIGKILL reach
the whole group, and a Ctrl+C in the user's terminal reaches only the supervisor. A job spread
over ranks is a torchrun agent whose ranks each have a session of their own: every signal then
goes to the group of each process of the tree, so the ranks stop and continue together. Any kill is
preceded by SIGCONT: a stopped process would otherwise never run its SIGTERM handler, and
nothing is ever left frozen. Every stopped pid is recorded on disk (``FrozenRegistry``), so a
supervisor that dies while a worker is stopped lets the next one thaw it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from macgpt.fsutil import atomic_write_text
from macgpt.supervisor import guardian
from macgpt.supervisor.monitor import descendants

GROUPS_EVERY = 1.0  # seconds between looks for a spread job's rank groups


class FrozenRegistry:
    """pids we have SIGSTOPped and not yet continued, persisted as JSON."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.pids: set[int] = set()
        self._lock = threading.Lock()  # the duty-cycle thread records pids too

    def _save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(sorted(self.pids)), durable=False)

    def add(self, pid: int) -> None:
        with self._lock:
            if pid not in self.pids:
                self.pids.add(pid)
                self._save()

    def discard(self, pid: int) -> None:
        with self._lock:
            if pid in self.pids:
                self.pids.discard(pid)
                self._save()

    def recover(self) -> list[int]:
        """Continue every recorded pid still alive (left by a supervisor that died); return them."""
        if self.path is None or not self.path.exists():
            return []
        thawed = guardian.thaw_recorded(self.path)
        self.pids.clear()
        self._save()
        return thawed

    def guard(self) -> None:
        """Start the guardian process that continues our stopped workers if we die."""
        if self.path is not None:
            self._save()
            guardian.start(self.path)


class WorkerProcess:
    def __init__(
        self,
        job_id: int,
        job_dir: Path,
        endpoint: str,
        cache_dir: Path | None,
        frozen: FrozenRegistry,
        priority: str = "idle",
        argv: list[str] | None = None,
        launcher: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.job_id = job_id
        self.job_dir = Path(job_dir)
        self.endpoint = endpoint
        self.cache_dir = cache_dir
        self.frozen = frozen
        self.priority = priority
        self.argv = argv  # a replacement command line (tests start misbehaving workers this way)
        self.launcher = launcher  # torchrun's command for a job of several ranks (launch.torchrun_prefix)
        self.env = env or {}
        self._groups: tuple[int, ...] = ()  # the ranks' process groups (their leaders' pids)
        self._groups_at = -1e9
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False  # SIGSTOPped by us
        self.exempt = False  # being stopped or killed: never SIGSTOPped again
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def identity(self) -> bytes:
        return f"job-{self.job_id}-{self.pid}".encode()

    def start(self) -> None:
        cmd = self.argv or self.launcher or [sys.executable, "-m", "macgpt.worker"]
        cmd = [*cmd, "--job-dir", str(self.job_dir), "--endpoint", self.endpoint,
               "--job", str(self.job_id), "--priority", self.priority]
        if self.cache_dir is not None:
            cmd += ["--cache-dir", str(self.cache_dir)]
        log = open(self.job_dir / "worker.log", "ab")
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        finally:
            log.close()
        self.started_at = time.monotonic()
        self.stopped = self.exempt = False
        self._groups, self._groups_at = (), -1e9

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def leaders(self) -> tuple[int, ...]:
        """The process groups a signal goes to: the worker's, and for a spread job each rank's
        (looked up at most once a second: ranks start once, then stay)."""
        if self.launcher is None or self.argv is not None or self.proc is None:
            return (self.pid,) if self.proc is not None else ()
        now = time.monotonic()
        if now - self._groups_at >= GROUPS_EVERY:
            groups = {self.pid}
            for pid in descendants(self.pid):
                with contextlib.suppress(OSError):
                    groups.add(os.getpgid(pid))
            self._groups, self._groups_at = tuple(sorted(groups)), now
        return self._groups

    def _group(self, sig: int) -> None:
        for leader in self.leaders():
            try:
                os.killpg(leader, sig)
            except ProcessLookupError:
                pass
            except PermissionError:  # the group leader is gone but not reaped: signal the pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leader, sig)

    def record(self) -> None:
        """Note every group we are about to stop in the on-disk registry (the guardian continues them)."""
        for leader in self.leaders():
            self.frozen.add(leader)

    def release(self) -> None:
        """Continue the worker for good: it is about to be stopped or killed."""
        self.exempt = True
        self.thaw()

    def freeze(self) -> None:
        if self.alive() and not self.stopped and not self.exempt:
            self.record()  # recorded before the stop, so a crash here is recoverable
            self._group(signal.SIGSTOP)
            self.stopped = True

    def thaw(self, forget: bool = True) -> None:
        """Continue the worker (if we stopped it) and, unless ``forget`` is False, drop it from the
        registry (a worker that may be stopped again soon stays recorded: no disk write each time)."""
        if self.proc is None:
            return
        if self.stopped:
            self._group(signal.SIGCONT)
            self.stopped = False
        if forget:
            for leader in {self.pid, *self._groups}:
                self.frozen.discard(leader)

    def freeze_for_cycle(self) -> None:
        """SIGSTOP within a duty cycle (the pid is already in the registry)."""
        if not self.stopped and not self.exempt and self.alive():
            self._group(signal.SIGSTOP)
            self.stopped = True

    def thaw_for_cycle(self) -> None:
        if self.stopped:
            self._group(signal.SIGCONT)
            self.stopped = False

    def terminate(self) -> None:
        """SIGTERM (the worker checkpoints and exits); continued first if stopped."""
        if self.alive():
            self.release()
            self._group(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None:
            self.release()
            self._group(signal.SIGKILL)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def shutdown(self, grace: float) -> int | None:
        """SIGTERM, up to ``grace`` seconds to checkpoint and exit, then SIGKILL."""
        self.terminate()
        code = self.wait(grace)
        if code is None:
            self.kill()
            code = self.wait(5.0)
        return code
