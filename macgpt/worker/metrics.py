"""The worker's side of the metrics file: one ``train`` record per metrics line (with the
process's own CPU share since the last one), one ``eval`` record per evaluation.

A metrics file that cannot be written (full disk) costs a warning, never the training run: the
checkpoint path reports a full disk on its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from macgpt import metricsfile

TRAIN_FIELDS = ("step", "epoch", "loss", "avg_loss", "lr", "tokens_per_s", "steps_per_s", "threads",
                "batch_size", "micro_batch", "rss")
EVAL_FIELDS = ("step", "loss", "perplexity", "tokens")


class MetricsRecorder:
    def __init__(self, job_dir: Path, warn: Callable[[str], None]) -> None:
        self.path = metricsfile.path_in(job_dir)
        self.warn = warn
        self._warned = False
        self.enabled = True  # off for a rank that does not speak for its machine
        self._cpu_mark = (time.process_time(), time.perf_counter())

    def _cpu_percent(self) -> float | None:
        cpu, wall = time.process_time(), time.perf_counter()
        d_cpu, d_wall = cpu - self._cpu_mark[0], wall - self._cpu_mark[1]
        self._cpu_mark = (cpu, wall)
        return round(100.0 * d_cpu / d_wall / (os.cpu_count() or 1), 1) if d_wall > 0 else None

    def _append(self, kind: str, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            metricsfile.append(self.path, kind, fields)
        except OSError as e:
            if not self._warned:
                self._warned = True
                self.warn(f"metrics file {self.path} could not be written: {e.strerror or e}; training goes on")

    def train(self, d: dict[str, Any]) -> None:
        self._append("train", {**{k: d.get(k) for k in TRAIN_FIELDS}, "cpu_percent": self._cpu_percent()})

    def eval(self, d: dict[str, Any]) -> None:
        fields = {k: d.get(k) for k in EVAL_FIELDS}
        fields["eval_loss"] = fields.pop("loss")
        self._append("eval", fields)

    def state(self, state: str, step: int, reason: str | None) -> None:
        """A pause or resume at a step boundary (the plot shades the paused stretch)."""
        self._append("state", {"step": step, "state": state, "message": reason})
