"""``macgpt plot``: loss curves of one or more jobs, with speed and CPU below and the governor's
throttles and pauses shaded; matplotlib, headless.

``stretches`` (pure) turns governor and pause records into time spans; ``draw`` only draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from macgpt.metricsfile import Metrics

THROTTLED = frozenset({"throttled", "memory"})
STOPPED = frozenset({"stopped", "battery", "hang"})


@dataclass(frozen=True)
class Run:
    label: str
    metrics: Metrics


def stretches(records: Sequence[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """(start time, end time, "throttled" | "paused") spans from governor and pause records; an
    open span ends at the last record. A pause (by the user or the governor) wins over a throttle."""
    events = sorted((r for r in records if r.get("kind") in ("governor", "state")), key=lambda r: r["t"])
    end = max((r["t"] for r in records), default=0.0)
    spans: list[tuple[float, float, str]] = []
    mode, paused, since = "full", False, 0.0

    def current() -> str | None:
        if paused or mode in STOPPED:
            return "paused"
        return "throttled" if mode in THROTTLED else None

    for r in events:
        before = current()
        if r["kind"] == "governor":
            mode = str(r.get("state") or "full")
        else:
            paused = r.get("state") == "paused"
        after = current()
        if after != before:
            if before is not None and r["t"] > since:
                spans.append((since, r["t"], before))
            since = r["t"]
    if current() is not None and end > since:
        spans.append((since, end, current() or ""))
    return spans


def latest_per_step(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step, the latest: a worker restarted from a checkpoint repeats the steps
    after it, and the repeat is what the model kept."""
    return sorted({r["step"]: r for r in records}.values(), key=lambda r: r["step"])


def _step_at(train: list[dict[str, Any]], t: float) -> float:
    """The step a job was at, at time ``t``, interpolated between its train records."""
    import numpy as np

    return float(np.interp(t, [r["t"] for r in train], [r["step"] for r in train]))


def draw(runs: Sequence[Run], out: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_speed, ax_cpu) = plt.subplots(
        3, 1, sharex=True, figsize=(10, 7.5), gridspec_kw={"height_ratios": [3, 1.2, 1.2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]
        train, evals = latest_per_step(run.metrics.of("train")), latest_per_step(run.metrics.of("eval"))
        steps = [r["step"] for r in train]
        ax_loss.plot(steps, [r.get("loss") for r in train], color=color, lw=1.2, label=f"{run.label} train")
        if evals:
            ax_loss.plot([r["step"] for r in evals], [r.get("eval_loss") for r in evals], color=color, ls="--",
                         marker="o", ms=4, label=f"{run.label} eval")
        ax_speed.plot(steps, [(r.get("tokens_per_s") or 0) / 1000 for r in train], color=color, lw=1)
        ax_cpu.plot(steps, [r.get("cpu_percent") for r in train], color=color, lw=1)
        # one job: spans over the whole height; several: a strip per job along the bottom
        band = (0.0, 1.0) if len(runs) == 1 else (0.025 * i, 0.025 * (i + 1))
        if len(train) >= 2:
            for t0, t1, kind in stretches(run.metrics.records):
                by_time = run.metrics.of("train")
                s0, s1 = _step_at(by_time, t0), _step_at(by_time, t1)
                if s1 <= s0:
                    s1 = s0 + max(1.0, 0.004 * (steps[-1] - steps[0]))  # a pause takes no steps: show it anyway
                for ax in (ax_loss, ax_speed, ax_cpu):
                    ax.axvspan(s0, s1, *band, color=color if kind == "throttled" else "0.4",
                               alpha=(0.12 if len(runs) == 1 else 0.5) if kind == "throttled" else 0.3, lw=0, zorder=0,
                               hatch=None if kind == "throttled" else "//")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8, loc="upper right")
    where = "shaded" if len(runs) == 1 else "strips at the bottom, one per job"
    ax_loss.set_title(title or f"training loss ({where}: throttled in the job's colour; hatched grey: paused or stopped)",
                      fontsize=10)
    ax_speed.set_ylabel("K tokens/s")
    ax_cpu.set_ylabel("CPU % (machine)")
    ax_cpu.set_xlabel("step")
    for ax in (ax_loss, ax_speed, ax_cpu):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
