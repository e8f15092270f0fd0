"""Supervision decisions applied to live workers: restarts after crashes (and, with the
governor, CPU and memory limits). Owned by the daemon and by the foreground run alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from macgpt.config.limits import Limits
from macgpt.supervisor.restarts import RestartPolicy, next_restart
from macgpt.supervisor.runner import JobRunner

Emit = Callable[[str, dict[str, Any]], None]


class Governance:
    poll_ms = 100

    def __init__(self, limits: Limits, emit: Emit, policy: RestartPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.emit = emit
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.crashes: dict[int, list[float]] = {}
        self.restarts = 0

    def tick(self, runners: list[JobRunner]) -> None:
        """Called every loop turn with the live runners."""

    def may_start(self) -> bool:
        """Whether the machine has room for another worker now."""
        return True

    def released(self, job_id: int) -> None:
        """A worker the governor stopped (to free memory) has exited."""

    def user_paused(self, job_id: int, paused: bool) -> None:
        """The user paused or resumed a job: the governor leaves it alone meanwhile."""

    def set_limits(self, limits: Limits) -> None:
        self.limits = limits
        self.emit("limits", {"limits": limits.to_dict()})

    def view(self, job_id: int) -> dict[str, Any]:
        """The governor's state for one job, for `status`."""
        return {}

    def summary(self) -> dict[str, Any]:
        return {}

    def after_exit(self, runner: JobRunner, ended: str) -> float | None:
        """Seconds until the worker should be started again, or None when it should not."""
        if ended != "crashed":
            return None
        now = self.clock()
        history = self.crashes.setdefault(runner.job_id, [])
        if runner.live.checkpoint is not None:
            history.clear()  # it saved progress since it started: not a crash loop
        history.append(now)
        delay = next_restart(history, now, self.policy)
        last = (runner.live.failure or {}).get("message") or f"exit code {runner.exit_code}"
        if delay is None:
            self.emit("gave_up", {"crashes": len(history), "last_error": last})
            return None
        self.restarts += 1
        self.emit("restarting", {"in_seconds": delay, "crashes": len(history), "last_error": last,
                                 "from_step": (runner.live.checkpoint or {}).get("step")})
        return delay

    def close(self) -> None:
        pass
