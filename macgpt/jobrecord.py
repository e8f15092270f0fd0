"""One job as the queue stores it: a typed record read once from a row of the ``jobs`` table, by
the daemon's store and by the client reading a home while the daemon is down."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any

from macgpt.protocol import JobState

if TYPE_CHECKING:
    from macgpt.config.job import JobSpec

# What `status` shows of a stored job, and the live fields only a running worker fills in.
VIEW_FIELDS = ("id", "name", "config", "state", "reason", "step", "max_steps", "loss", "eval_loss", "checkpoint",
               "checkpoint_step", "checkpoint_time", "final_model", "error", "warning", "restarts", "created",
               "started", "finished")
LIVE_FIELDS = ("pid", "threads", "batch_size", "micro_batch", "steps_per_s", "tokens_per_s", "cpu_percent", "rss",
               "governor")


@dataclass(frozen=True)
class JobRecord:
    id: int
    name: str
    config: str
    state: JobState
    reason: str | None
    queue_order: float
    created: float
    updated: float
    started: float | None
    finished: float | None
    step: int
    max_steps: int
    loss: float | None
    eval_loss: float | None
    checkpoint: str | None
    checkpoint_step: int | None
    checkpoint_time: float | None
    final_model: str | None
    error: str | None
    warning: str | None
    restarts: int
    stored: dict[str, Any] = field(repr=False)  # the spec as stored: job.json's fields, and the hooks

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRecord:
        values = {f.name: row[f.name] for f in fields(cls) if f.name not in ("state", "stored")}
        try:
            stored = json.loads(row["spec"] or "{}")
        except ValueError:
            stored = {}
        return cls(**values, state=JobState(row["state"]), stored=stored if isinstance(stored, dict) else {})

    @cached_property
    def spec(self) -> JobSpec:
        """The job's specification, parsed (and so validated) when first asked for; ConfigError,
        KeyError or TypeError when the stored one cannot be read (written by another version)."""
        from macgpt.config.job import JobSpec

        return JobSpec.from_dict(self.stored)

    @property
    def hooks(self) -> dict[str, Any]:
        """``submit --notify`` / ``--on-finish``: {notify?, on_finish?}, empty when none."""
        hooks = self.stored.get("hooks")
        return hooks if isinstance(hooks, dict) else {}

    def view(self) -> dict[str, Any]:
        """The job as `status --json` shows it without a worker (live fields None)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in VIEW_FIELDS}
        out["state"] = str(self.state)
        out["checkpoint_age"] = time.time() - self.checkpoint_time if self.checkpoint_time else None
        out.update(dict.fromkeys(LIVE_FIELDS))
        out["limits"] = self.stored.get("limits")
        return out
