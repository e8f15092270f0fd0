"""Is a worker's memory running away? A pure judgement of its non-reclaimable memory over time.

A worker is judged by what the kernel cannot take back (Linux: anonymous pages plus swap of the
process tree; elsewhere its RSS), against a baseline measured once its set-up is over and its
first steps have allocated gradients and optimizer state. A runaway is growth past that baseline
at a rate that would carry the machine over the hard memory limit soon. A large footprint that
stays put is never a runaway, however far it is from any estimate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MB = 2**20


@dataclass(frozen=True)
class MemTuning:
    settle: float = 4.0  # seconds of training before the baseline is fixed (first steps allocate)
    window: float = 4.0  # seconds of samples the growth rate is fitted over
    min_span: float = 1.5  # a rate needs samples spanning at least this long
    horizon: float = 15.0  # a projected crossing of the hard limit within this many seconds is a runaway
    margin_bytes: int = 64 * MB  # growth under max(this, margin_share x baseline) is noise
    margin_share: float = 0.1


@dataclass(frozen=True)
class MemTrack:
    """One worker's memory history since its training began."""

    since: float | None = None  # when training began; None: still setting up
    baseline: int = 0  # the largest non-reclaimable size seen during the settle time
    samples: tuple[tuple[float, int], ...] = ()  # (time, bytes) within the window


def observe(m: MemTrack, t: float, anon: int, training: bool, tuning: MemTuning = MemTuning()) -> MemTrack:
    """Add one reading."""
    if not training:
        return MemTrack()
    since = t if m.since is None else m.since
    baseline = max(m.baseline, anon) if t - since <= tuning.settle else m.baseline
    samples = (*((s, b) for s, b in m.samples if t - s <= tuning.window), (t, anon))
    return dataclasses.replace(m, since=since, baseline=baseline, samples=samples)


def growth_rate(m: MemTrack, tuning: MemTuning = MemTuning()) -> float | None:
    """Bytes per second, a least-squares slope over the window; None with too short a history."""
    if len(m.samples) < 3 or m.samples[-1][0] - m.samples[0][0] < tuning.min_span:
        return None
    n = len(m.samples)
    mt = sum(t for t, _ in m.samples) / n
    mb = sum(b for _, b in m.samples) / n
    var = sum((t - mt) ** 2 for t, _ in m.samples)
    return sum((t - mt) * (b - mb) for t, b in m.samples) / var if var > 0 else None


def runaway(m: MemTrack, mem_percent: float, mem_total: int, hard: float,
            tuning: MemTuning = MemTuning()) -> str | None:
    """Why this worker must be killed now (its growth would cross the hard limit within the
    horizon), or None. Judged only after the settle time."""
    if m.since is None or not m.samples or m.samples[-1][0] - m.since <= tuning.settle:
        return None
    now = m.samples[-1][1]
    grown = now - m.baseline
    if grown <= max(tuning.margin_bytes, tuning.margin_share * m.baseline):
        return None
    rate = growth_rate(m, tuning)
    if rate is None or rate <= 0:
        return None
    headroom = max(0.0, (hard - mem_percent) / 100 * mem_total)
    seconds = headroom / rate
    if seconds > tuning.horizon:
        return None
    return (f"worker memory grew {grown / MB:.0f} MB past its {m.baseline / MB:.0f} MB after set-up, "
            f"at {rate / MB:.0f} MB/s: the hard limit {hard:g}% in {seconds:.0f}s")
