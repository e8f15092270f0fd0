"""Resource limits the governor keeps: total CPU and memory percent, battery policy, watchdogs.

The guide's semantics: ``max_cpu`` is the whole machine's CPU use in percent (default 70),
``max_memory`` the whole machine's memory use in percent (default 60).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from macgpt.config import BATTERY_POLICIES
from macgpt.config.schema import Bound, ConfigError, parse_value

# Each limit's values and its help, written once: the options of `train`, `submit`, `macgptd` and
# `macgpt limits` are made from this table (client/options.py) and say the defaults below.
BOUNDS: dict[str, Bound] = {
    "max_cpu": Bound(float, 1, 100, help="total machine CPU percent to stay under"),
    "max_memory": Bound(float, 1, 100, help="total machine memory percent to stay under"),
    "hard_memory": Bound(float, 0, 100, help="memory percent at which a worker is killed and restarted smaller"),
    "on_battery": Bound(str, choices=BATTERY_POLICIES, help="on battery power: pause, throttle or run"),
    "hang_seconds": Bound(float, 1, 86400, help="seconds without progress before a worker is restarted"),
    "max_crashes": Bound(int, 1, 1000, help="crashes without saved progress before a job fails"),
}
HARD_MEMORY_MARGIN = 15.0  # hard_memory 0 means max_memory + this (at most 100)


def hard_memory_percent(hard_memory: float, max_memory: float) -> float:
    """The memory percent at which a worker is killed: ``hard_memory``, or 0 for max-memory + 15."""
    return hard_memory or min(100.0, max_memory + HARD_MEMORY_MARGIN)


@dataclass(frozen=True)
class Limits:
    max_cpu: float = 70.0
    max_memory: float = 60.0
    hard_memory: float = 0.0
    on_battery: str = "pause"
    hang_seconds: float = 60.0
    max_crashes: int = 8

    @property
    def hard_memory_percent(self) -> float:
        return hard_memory_percent(self.hard_memory, self.max_memory)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Limits:
        if not isinstance(d, dict):
            raise ConfigError(f"limits: expected a mapping, got {type(d).__name__}")
        return cls().updated(d)

    def updated(self, changes: dict[str, Any]) -> Limits:
        """A copy with validated changes (None values are ignored)."""
        parsed = {}
        for key, value in changes.items():
            if value is None:
                continue
            if key not in BOUNDS:
                raise ConfigError(f"unknown limit {key!r}; known: {', '.join(BOUNDS)}")
            parsed[key] = parse_value(key.replace("_", "-"), value, BOUNDS[key])
        new = dataclasses.replace(self, **parsed)
        if new.hard_memory and new.hard_memory <= new.max_memory:
            raise ConfigError(
                f"hard-memory={new.hard_memory:g} must be above max-memory={new.max_memory:g}"
            )
        return new


_BATTERY_ORDER = {name: i for i, name in enumerate(BATTERY_POLICIES)}  # strictest first


def in_force(base: Limits, job_limits: Iterable[dict[str, Any]]) -> Limits:
    """The limits to keep: ``base`` (the daemon's), with each field that a running job set for
    itself at submit replaced by the strictest value any of them asked for."""
    merged: dict[str, Any] = {}
    for own in job_limits:
        for key, value in own.items():
            if value is None or key not in BOUNDS or (key == "hard_memory" and not value):
                continue
            if key not in merged:
                merged[key] = value
            elif key == "on_battery":
                merged[key] = min(merged[key], value, key=lambda v: _BATTERY_ORDER.get(v, 0))
            else:
                merged[key] = min(merged[key], value)
    if not merged:
        return base
    try:
        return base.updated(merged)
    except ConfigError:  # e.g. a job's hard-memory below the daemon's max-memory: keep the job's pair
        return base.updated({**merged, "hard_memory": 0.0})


def default_text(key: str) -> str:
    """A limit's default as the options' help says it."""
    if key == "hard_memory":
        return f"max-memory + {HARD_MEMORY_MARGIN:g}"
    return f"{getattr(Limits(), key):g}" if key != "on_battery" else Limits().on_battery
