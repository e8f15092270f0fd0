"""When to restart a crashed worker: exponential back-off, and give up after N crashes in a window.

Pure: takes the crash history and the time, returns a delay or None (mark the job failed).
Stops the supervisor ordered are not crashes and never reach this policy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    max_crashes: int = 8  # crashes without saved progress within ``window`` seconds before the job fails
    window: float = 600.0
    base_delay: float = 0.5
    max_delay: float = 60.0


def next_restart(crash_times: list[float], now: float, policy: RestartPolicy) -> float | None:
    """Seconds to wait before restarting after the latest crash (already in ``crash_times``),
    or None when the job has crashed too often. The owner clears the history whenever a worker
    saved progress, so only crashes without progress add up."""
    recent = [t for t in crash_times if now - t <= policy.window]
    if len(recent) >= policy.max_crashes:
        return None
    if len(recent) <= 1:
        return 0.0  # a first crash is most likely a one-off: straight back
    return min(policy.max_delay, policy.base_delay * 2 ** (len(recent) - 2))
